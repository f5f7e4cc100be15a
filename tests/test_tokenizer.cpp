// pre_caption and BertTokenizer against the official pipeline's outputs, and
// hand-derived cases: each expectation below follows HF 4.8's algorithm step
// by step, with ids looked up by token string in bert-base-uncased's vocab.

#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "albef/text/tokenizer.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace albef::text {
namespace {

using ::albef::testing::data_path;
using ::albef::testing::make_temp_dir;
using ::albef::testing::source_path;
using Ids = std::vector<int64_t>;

const BertTokenizer& tokenizer() {
  static const BertTokenizer instance(albef::text::kBundledVocabulary);
  return instance;
}

nlohmann::json tiny_inputs() {
  std::ifstream in(data_path("tiny/inputs.json"));
  return nlohmann::json::parse(in);
}

// Word-piece ids of `text` (encode without [CLS] and without truncation).
Ids pieces(const std::string& text, const BertTokenizer& tok = tokenizer()) {
  const Ids ids = tok.encode(text, 0);
  EXPECT_EQ(ids.front(), tok.cls_id());
  return Ids(ids.begin() + 1, ids.end());
}

Ids ids_of(const std::vector<std::string>& tokens) {
  Ids ids;
  for (const auto& token : tokens) {
    const int64_t id = tokenizer().token_to_id(token);
    EXPECT_NE(id, tokenizer().unk_id()) << token << " is not in the vocabulary";
    ids.push_back(id);
  }
  return ids;
}

std::string write_vocab(const std::string& dir, const std::string& contents) {
  const std::string path = make_temp_dir(dir) + "/vocab.txt";
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

std::string error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// ---- Official outputs ----------------------------------------------------------

TEST(PreCaption, MatchesOfficialCaptions) {
  const auto inputs = tiny_inputs();
  const auto& raw = inputs.at("raw_captions");
  const auto& expected = inputs.at("captions");
  ASSERT_EQ(raw.size(), expected.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    EXPECT_EQ(pre_caption(raw[i].get<std::string>(), 30), expected[i].get<std::string>()) << i;
  }
}

TEST(BertTokenizer, MatchesOfficialWordPieces) {
  const auto inputs = tiny_inputs();
  const auto& captions = inputs.at("captions");
  const auto& expected = inputs.at("wordpiece_ids_npm");
  ASSERT_EQ(captions.size(), expected.size());
  for (size_t i = 0; i < captions.size(); ++i) {
    const std::string caption = captions[i].get<std::string>();
    EXPECT_EQ(pieces(caption), expected[i].get<Ids>()) << caption;
    Ids from_tokens;
    for (const auto& token : tokenizer().tokenize(caption)) from_tokens.push_back(tokenizer().token_to_id(token));
    EXPECT_EQ(from_tokens, expected[i].get<Ids>()) << caption;
  }
}

TEST(BertTokenizer, MatchesOfficialBatch) {
  const auto captions = tiny_inputs().at("captions").get<std::vector<std::string>>();
  const BatchEncoding batch = tokenizer().encode_batch(captions, 25, Padding::Longest);
  const at::Tensor ids = io::read_npy(data_path("tiny/npy/inputs__input_ids.npy"));
  const at::Tensor mask = io::read_npy(data_path("tiny/npy/inputs__attention_mask.npy"));
  ASSERT_EQ(ids.sizes(), (at::IntArrayRef{4, 15}));
  EXPECT_EQ(batch.input_ids.scalar_type(), at::kLong);
  EXPECT_EQ(batch.attention_mask.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(batch.input_ids, ids)) << batch.input_ids << "\nvs\n" << ids;
  EXPECT_TRUE(at::equal(batch.attention_mask, mask)) << batch.attention_mask << "\nvs\n" << mask;
}

// ---- Vocabulary ---------------------------------------------------------------

TEST(BertTokenizer, SpecialTokenIds) {
  const auto& tok = tokenizer();
  EXPECT_EQ(tok.vocab_size(), 30522);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.unk_id(), 100);
  EXPECT_EQ(tok.cls_id(), 101);
  EXPECT_EQ(tok.sep_id(), 102);
  EXPECT_EQ(tok.mask_id(), 103);
  EXPECT_EQ(tok.id_to_token(7592), "hello");
  EXPECT_EQ(tok.token_to_id("hello"), 7592);
  EXPECT_EQ(tok.token_to_id("no-such-token"), 100);
  EXPECT_THROW(tok.id_to_token(30522), Error);
}

TEST(BertTokenizer, SmallVocabWithCrLfLines) {
  // Line numbers are ids; "\r\n" ends a line like "\n".
  const std::string path = write_vocab("crlf_vocab", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello\r\n##s");
  const BertTokenizer tok(path);
  EXPECT_EQ(tok.vocab_size(), 7);
  EXPECT_EQ(tok.mask_id(), 4);
  // "hellos": "hellos" is missing, "hello" matches, then "##s".
  EXPECT_EQ(tok.encode("Hellos hello", 0), (Ids{2, 5, 6, 5}));
  // "helloz": "##z" never matches, so the whole word is [UNK].
  EXPECT_EQ(tok.encode("helloz", 0), (Ids{2, 1}));
}

TEST(BertTokenizer, VocabWithoutClsNamesFileAndToken) {
  const std::string path = write_vocab("no_cls_vocab", "[PAD]\n[UNK]\n[SEP]\n[MASK]\nhello\n");
  const std::string message = error_of([&] { BertTokenizer tok(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("[CLS]"), std::string::npos) << message;
}

TEST(BertTokenizer, MissingVocabFileNamesIt) {
  const std::string path = make_temp_dir("missing_vocab") + "/nope.txt";
  const std::string message = error_of([&] { BertTokenizer tok(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
}

// ---- BasicTokenizer + WordPiece, hand-derived -------------------------------------

TEST(BertTokenizer, StripsAccents) {
  // lower() then NFD without Mn: cafe, creme, brulee. "creme": creme/crem/cre
  // are missing, "cr" matches, then "##eme". "brulee": "br", "##ule", "##e".
  EXPECT_EQ(tokenizer().tokenize("Café Crème Brûlée"),
            (std::vector<std::string>{"cafe", "cr", "##eme", "br", "##ule", "##e"}));
  EXPECT_EQ(pieces("Café Crème Brûlée"), (Ids{7668, 13675, 21382, 7987, 9307, 2063}));
  // İ lowers to "i" + U+0307, and the dot is stripped.
  EXPECT_EQ(pieces("İstanbul"), ids_of({"istanbul"}));
  // The Angstrom sign lowers to å, whose NFD is "a" + ring.
  EXPECT_EQ(pieces("\u212B"), ids_of({"a"}));
  // Canonical decomposition only: the ligature ﬁ stays whole.
  EXPECT_EQ(pieces("\uFB01"), ids_of({"\uFB01"}));
  // Hangul syllables decompose into jamo: "한" -> ᄒ ᅡ ᆫ, none of the longer
  // jamo strings being in the vocabulary.
  EXPECT_EQ(pieces("한"), ids_of({"\u1112", "##\u1161", "##\u11AB"}));
}

TEST(BertTokenizer, SplitsCjkCharacters) {
  // Each ideograph is a word; 爱 is not in the vocabulary.
  EXPECT_EQ(tokenizer().tokenize("我爱北京"), (std::vector<std::string>{"我", "[UNK]", "北", "京"}));
  EXPECT_EQ(pieces("我爱北京"), (Ids{1855, 100, 1781, 1755}));
  EXPECT_EQ(pieces("a北dog"), ids_of({"a", "北", "dog"}));
}

TEST(BertTokenizer, SplitsPunctuation) {
  EXPECT_EQ(pieces("hello,world!"), (Ids{7592, 1010, 2088, 999}));
  EXPECT_EQ(pieces("Don't"), (Ids{2123, 1005, 1056}));
  EXPECT_EQ(pieces("a.b-c/d"), ids_of({"a", ".", "b", "-", "c", "/", "d"}));
  EXPECT_EQ(pieces("...?"), ids_of({".", ".", ".", "?"}));
  // Non-ASCII punctuation (category P*) splits too: « and ».
  EXPECT_EQ(pieces("\u00ABdog\u00BB"), ids_of({"\u00AB", "dog", "\u00BB"}));
}

TEST(BertTokenizer, LongWordsAndUnknownCharacters) {
  // 101 characters: [UNK] without trying word pieces; the next word is intact.
  EXPECT_EQ(pieces(std::string(101, 'a') + " dog"), (Ids{100, 3899}));
  // 100 characters are word-pieced: "aaa", then 48 x "##aa" and "##a".
  Ids expected = ids_of({"aaa"});
  expected.insert(expected.end(), 48, tokenizer().token_to_id("##aa"));
  expected.push_back(tokenizer().token_to_id("##a"));
  EXPECT_EQ(pieces(std::string(100, 'a')), expected);
  // A character outside the vocabulary makes its whole word [UNK], not just
  // the piece: "snow" would match, "##☃" does not.
  EXPECT_EQ(pieces("☃"), (Ids{100}));
  EXPECT_EQ(pieces("snow☃man dog"), (Ids{100, 3899}));
}

TEST(BertTokenizer, EmptyAndWhitespaceOnly) {
  for (const std::string text : {"", " ", "   \t\n ", "\u3000\u00A0", "\x01\x02"}) {
    EXPECT_EQ(tokenizer().encode(text, 25), (Ids{101})) << text;
    EXPECT_TRUE(tokenizer().tokenize(text).empty()) << text;
  }
  const BatchEncoding batch = tokenizer().encode_batch({"", "a"}, 25, Padding::Longest);
  EXPECT_TRUE(at::equal(batch.input_ids, at::tensor({101, 0, 101, 1037}, at::kLong).view({2, 2})));
  EXPECT_TRUE(at::equal(batch.attention_mask, at::tensor({1, 0, 1, 1}, at::kLong).view({2, 2})));
}

TEST(BertTokenizer, ControlAndWhitespaceCharacters) {
  // Control (C*) characters vanish without splitting the word: BEL, NUL,
  // U+FFFD, the zero-width space (Cf), DEL.
  EXPECT_EQ(pieces(std::string("d\x07o\0g", 5)), ids_of({"dog"}));
  EXPECT_EQ(pieces("do\uFFFDg d\u200Bog d\x7Fog"), ids_of({"dog", "dog", "dog"}));
  // \t \n \r and Zs characters separate words; so do U+2028/U+2029.
  EXPECT_EQ(pieces("the\tdog\r\nthe\u00A0dog\u2028the\u3000dog"),
            ids_of({"the", "dog", "the", "dog", "the", "dog"}));
}

TEST(BertTokenizer, SpecialTokensInText) {
  EXPECT_EQ(pieces("[MASK]"), (Ids{103}));
  EXPECT_EQ(pieces("a [MASK] dog"), (Ids{1037, 103, 3899}));
  EXPECT_EQ(pieces("dog[MASK][SEP]dog"), (Ids{3899, 103, 102, 3899}));
  EXPECT_EQ(tokenizer().tokenize("a [MASK] dog"), (std::vector<std::string>{"a", "[MASK]", "dog"}));
  // Matched as written: lower-case or broken forms are plain punctuation + word.
  EXPECT_EQ(pieces("[mask]"), ids_of({"[", "mask", "]"}));
  EXPECT_EQ(pieces("[Mask"), ids_of({"[", "mask"}));
  // Special tokens are found before control characters are dropped.
  EXPECT_EQ(pieces(std::string("[MA\0SK]", 7)), ids_of({"[", "mask", "]"}));
}

TEST(BertTokenizer, CasedModeKeepsCaseAndAccents) {
  const BertTokenizer cased(albef::text::kBundledVocabulary, false);
  // "Dog" is not in the uncased vocabulary and "D" neither: [UNK].
  EXPECT_EQ(pieces("Dog dog", cased), (Ids{100, 3899}));
  // "é" is kept: "caf" matches but "##é" is not in this vocabulary, so the
  // whole word is [UNK] (the uncased tokenizer gives "cafe").
  EXPECT_EQ(pieces("café", cased), (Ids{100}));
  EXPECT_EQ(pieces("café"), ids_of({"cafe"}));
  // Without lower-casing, a [MASK] that forms once NUL is dropped stays whole.
  EXPECT_EQ(pieces(std::string("[MA\0SK]", 7), cased), (Ids{103}));
}

TEST(BertTokenizer, RejectsInvalidUtf8) {
  EXPECT_THROW(tokenizer().encode("bad \xC3 byte", 25), Error);
  EXPECT_THROW(pre_caption("bad \xFF byte", 30), Error);
}

// ---- encode / encode_batch ------------------------------------------------------

TEST(BertTokenizer, TruncatesToMaxLength) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "a ";
  const Ids ids = tokenizer().encode(text, 25);
  ASSERT_EQ(ids.size(), 25u);  // [CLS] + 24 word pieces, no [SEP]
  EXPECT_EQ(ids.front(), 101);
  EXPECT_EQ(Ids(ids.begin() + 1, ids.end()), Ids(24, 1037));
  EXPECT_EQ(tokenizer().encode(text, 0).size(), 41u);
  EXPECT_EQ(tokenizer().encode(text, 1), (Ids{101}));
  // A word split into pieces is cut between its pieces.
  EXPECT_EQ(tokenizer().encode("Café Crème", 3), (Ids{101, 7668, 13675}));
}

TEST(BertTokenizer, PadsToMaxLength) {
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "dog ";
  const BatchEncoding batch = tokenizer().encode_batch({"A dog.", long_text}, 30, Padding::MaxLength);
  ASSERT_EQ(batch.input_ids.sizes(), (at::IntArrayRef{2, 30}));
  ASSERT_EQ(batch.attention_mask.sizes(), (at::IntArrayRef{2, 30}));
  std::vector<int64_t> row0(30, 0), mask0(30, 0), row1(30, 3899), mask1(30, 1);
  row0[0] = 101, row0[1] = 1037, row0[2] = 3899, row0[3] = 1012;
  std::fill_n(mask0.begin(), 4, 1);
  row1[0] = 101;
  const auto as_tensor = [](std::vector<int64_t> a, std::vector<int64_t> b) {
    a.insert(a.end(), b.begin(), b.end());
    return at::tensor(a, at::kLong).view({2, 30});
  };
  EXPECT_TRUE(at::equal(batch.input_ids, as_tensor(row0, row1))) << batch.input_ids;
  EXPECT_TRUE(at::equal(batch.attention_mask, as_tensor(mask0, mask1))) << batch.attention_mask;

  // Padding to the longest: the long text is cut at 25, which sets the width.
  const BatchEncoding longest = tokenizer().encode_batch({"A dog.", long_text}, 25, Padding::Longest);
  EXPECT_EQ(longest.input_ids.sizes(), (at::IntArrayRef{2, 25}));
  EXPECT_EQ(longest.attention_mask.sum().item<int64_t>(), 4 + 25);
  EXPECT_THROW(tokenizer().encode_batch({"a"}, 0, Padding::MaxLength), Error);
}

// ---- pre_caption ------------------------------------------------------------------

TEST(PreCaption, KeepsFirstMaxWords) {
  EXPECT_EQ(pre_caption("one two three four", 2), "one two");
  EXPECT_EQ(pre_caption("one two three four", 4), "one two three four");
  EXPECT_EQ(pre_caption("one two three four", 0), "");
  // Words are counted after cleaning: the removed "-" leaves spaces that merge.
  EXPECT_EQ(pre_caption("one - two three", 2), "one two");
  std::string forty;
  for (int i = 0; i < 40; ++i) forty += "w" + std::to_string(i) + " ";
  const std::string kept = pre_caption(forty, 30);
  EXPECT_EQ(kept.substr(kept.rfind(' ') + 1), "w29");
}

TEST(PreCaption, DeletesAndReplacesCharacters) {
  EXPECT_EQ(pre_caption("Hello, World!", 30), "hello world");
  EXPECT_EQ(pre_caption("it's (very) \"good\"; ok: yes~ #1 *star*?", 30), "its very good ok yes 1 star");
  EXPECT_EQ(pre_caption("well-known/top", 30), "well known top");
  EXPECT_EQ(pre_caption("<PERSON> waves at <person>.", 30), "person waves at person");
  // The replacement comes after deletions and after "-" became a space.
  EXPECT_EQ(pre_caption("<per.son> <per-son>", 30), "person <per son>");
  EXPECT_EQ(pre_caption("a<person>b", 30), "apersonb");
  // Other punctuation stays for the tokenizer.
  EXPECT_EQ(pre_caption("a&b [x] <y> {z} @w", 30), "a&b [x] <y> {z} @w");
}

TEST(PreCaption, CollapsesWhitespaceAndStrips) {
  EXPECT_EQ(pre_caption("a   dog", 30), "a dog");
  EXPECT_EQ(pre_caption("a \t\n dog", 30), "a dog");
  EXPECT_EQ(pre_caption("  a dog  ", 30), "a dog");
  EXPECT_EQ(pre_caption("a dog.\n", 30), "a dog");
  EXPECT_EQ(pre_caption("a dog\n\n", 30), "a dog");
  EXPECT_EQ(pre_caption("", 30), "");
  EXPECT_EQ(pre_caption(" . ", 30), "");
  // A single whitespace character other than ' ' is kept as it is, and only
  // '\n' is stripped at the end, only ' ' at both ends.
  EXPECT_EQ(pre_caption("a\tdog", 30), "a\tdog");
  EXPECT_EQ(pre_caption("\na dog\t", 30), "\na dog\t");
  EXPECT_EQ(pre_caption("a dog\u3000", 30), "a dog\u3000");
  // Runs of Unicode whitespace (\s) collapse too.
  EXPECT_EQ(pre_caption("a\u00A0\u2003dog", 30), "a dog");
}

TEST(PreCaption, LowerCasesUnicodeAsPython) {
  EXPECT_EQ(pre_caption("Café CRÈME", 30), "café crème");
  // İ has a two-character lower case.
  EXPECT_EQ(pre_caption("İ", 30), "i\u0307");
  // Σ becomes final ς after a cased letter when no cased letter follows.
  EXPECT_EQ(pre_caption("ΟΔΟΣ ΣΑ Σ", 30), "οδος σα σ");
  // Case-ignorable characters (here ') are looked past, then deleted.
  EXPECT_EQ(pre_caption("ΑΣ'", 30), "ας");
  EXPECT_EQ(pre_caption("ΑΣ'Α", 30), "ασα");
}

}  // namespace
}  // namespace albef::text
