#include "albef/text/tokenizer.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"

#include <ATen/ATen.h>
#include <utf8proc.h>

#include <algorithm>
#include <limits>
#include <string_view>

// bert-base-uncased's vocabulary (generated from src/text/bert-base-uncased-vocab.txt).
extern const char albef_bert_base_uncased_vocab[];
extern const std::size_t albef_bert_base_uncased_vocab_size;

namespace albef::text {
namespace {

constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();
constexpr size_t kMaxWordChars = 100;  // HF's max_input_chars_per_word
constexpr std::string_view kSpecialTokens[] = {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"};

// ---- UTF-8 -----------------------------------------------------------------

// Decodes `text` into `out`; returns the offset of the first malformed byte,
// or npos. Python would have refused such bytes, so callers reject them.
size_t decode_utf8(std::string_view text, std::vector<char32_t>& out) {
  out.clear();
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const auto size = static_cast<utf8proc_ssize_t>(text.size());
  utf8proc_ssize_t i = 0;
  while (i < size) {
    if (bytes[i] < 0x80) {
      out.push_back(bytes[i++]);
      continue;
    }
    utf8proc_int32_t cp;
    const utf8proc_ssize_t length = utf8proc_iterate(bytes + i, size - i, &cp);
    if (length < 0) return static_cast<size_t>(i);
    out.push_back(static_cast<char32_t>(cp));
    i += length;
  }
  return std::string_view::npos;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
    return;
  }
  utf8proc_uint8_t buffer[4];
  const auto length = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buffer);
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(length));
}

// ---- Character classes (Python's and HF's definitions) ---------------------

utf8proc_category_t category(char32_t cp) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp));
}

// str.isspace(), which is also what re's \s and str.split() use.
bool is_python_space(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// str.lower() of one character. Python uses the full case mapping, which
// differs from utf8proc's simple one only for U+0130 (İ -> i + combining dot).
void append_lower(char32_t c, std::vector<char32_t>& out) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  } else if (c == 0x130) {
    out.push_back('i');
    out.push_back(0x307);
  } else {
    out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
  }
}

// Unicode's Case_Ignorable: these categories plus the Word_Break classes
// MidLetter, MidNumLet and Single_Quote.
bool is_case_ignorable(char32_t c) {
  switch (category(c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
      return true;
    default:
      break;
  }
  switch (c) {
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x55F: case 0x5F4:
    case 0x2018: case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52:
    case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
      return true;
    default:
      return false;
  }
}

// Unicode's Cased (only consulted for characters that are not case-ignorable):
// letters with case, anything with a case mapping, and the few Other_Lowercase
// / Other_Uppercase symbols that have none.
bool is_cased(char32_t c) {
  switch (category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
      return true;
    default:
      break;
  }
  const auto cp = static_cast<utf8proc_int32_t>(c);
  if (utf8proc_tolower(cp) != cp || utf8proc_toupper(cp) != cp) return true;
  return c == 0xAA || c == 0xBA || (c >= 0x1F130 && c <= 0x1F149) ||
         (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

// str.lower() turns Σ into final ς when a cased character precedes it and none
// follows, looking past case-ignorable characters on both sides.
bool is_final_sigma(const std::vector<char32_t>& text, size_t i) {
  size_t before = i;
  while (before > 0 && is_case_ignorable(text[before - 1])) --before;
  if (before == 0 || !is_cased(text[before - 1])) return false;
  size_t after = i + 1;
  while (after < text.size() && is_case_ignorable(text[after])) ++after;
  return after == text.size() || !is_cased(text[after]);
}

bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_punctuation(char32_t c) {
  if (c < 0x80) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  }
  const auto cat = category(c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

// What BasicTokenizer's _clean_text, _tokenize_chinese_chars and
// whitespace_tokenize make of a character.
enum class CharKind { kDrop, kSpace, kCjk, kText };

CharKind classify(char32_t c) {
  if (c < 0x80) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return CharKind::kSpace;
    return c < 0x20 || c == 0x7F ? CharKind::kDrop : CharKind::kText;
  }
  if (c == 0xFFFD) return CharKind::kDrop;
  switch (category(c)) {
    case UTF8PROC_CATEGORY_ZS:  // _is_whitespace
    case UTF8PROC_CATEGORY_ZL:  // U+2028/U+2029 survive _clean_text, but str.split() splits there
    case UTF8PROC_CATEGORY_ZP:
      return CharKind::kSpace;
    case UTF8PROC_CATEGORY_CC:  // _is_control: any C* category, unassigned code points
    case UTF8PROC_CATEGORY_CF:  // included, and before the CJK test (_clean_text runs first)
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
      return CharKind::kDrop;
    default:
      return is_cjk(c) ? CharKind::kCjk : CharKind::kText;
  }
}

bool matches_ascii(const std::vector<char32_t>& text, size_t at, std::string_view ascii) {
  if (text.size() - at < ascii.size()) return false;
  for (size_t k = 0; k < ascii.size(); ++k) {
    if (text[at + k] != static_cast<unsigned char>(ascii[k])) return false;
  }
  return true;
}

bool is_removed_by_pre_caption(char32_t c) {
  switch (c) {
    case ',': case '.': case '\'': case '!': case '?': case '"': case '(': case ')':
    case '*': case '#': case ':': case ';': case '~':
      return true;
    default:
      return false;
  }
}

}  // namespace

// ---- pre_caption -------------------------------------------------------------

namespace {

// The first steps pre_caption and pre_question share: Python's lower(), the
// punctuation `,.'!?"()*#:;~` deleted, '-' and '/' turned into spaces.
void lower_without_punctuation(const std::string& text_in, const char* what, std::vector<char32_t>& kept) {
  thread_local std::vector<char32_t> text, lowered;
  const size_t bad = decode_utf8(text_in, text);
  if (bad != std::string_view::npos) {
    fail(what, " is not valid UTF-8 at byte ", bad, " (after \"", text_in.substr(0, bad), "\")");
  }
  lowered.clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == 0x3A3) {
      lowered.push_back(is_final_sigma(text, i) ? 0x3C2 : 0x3C3);
    } else {
      append_lower(text[i], lowered);
    }
  }
  kept.clear();
  for (const char32_t c : lowered) {
    if (is_removed_by_pre_caption(c)) continue;
    kept.push_back(c == '-' || c == '/' ? ' ' : c);
  }
}

// `text[begin, end)` cut before its max_words-th space (more than max_words
// words have at least that many spaces).
std::string first_words(const std::string& text, size_t begin, size_t end, int max_words) {
  if (max_words == 0) return "";
  int spaces = 0;
  for (size_t k = begin; k < end; ++k) {
    if (text[k] == ' ' && ++spaces == max_words) {
      end = k;
      break;
    }
  }
  return text.substr(begin, end - begin);
}

}  // namespace

std::string pre_caption(const std::string& caption, int max_words) {
  ALBEF_CHECK(max_words >= 0, "max_words must not be negative, got ", max_words);
  thread_local std::vector<char32_t> kept;
  lower_without_punctuation(caption, "caption", kept);

  // '<person>' -> 'person' and whitespace runs -> ' ' in one scan: the
  // replacement touches no whitespace, so the runs are the same either way.
  std::string out;
  out.reserve(kept.size());
  for (size_t i = 0; i < kept.size();) {
    if (kept[i] == '<' && matches_ascii(kept, i, "<person>")) {
      out += "person";
      i += 8;
    } else if (is_python_space(kept[i])) {
      size_t run_end = i + 1;
      while (run_end < kept.size() && is_python_space(kept[run_end])) ++run_end;
      if (run_end - i >= 2) {
        out.push_back(' ');
      } else {
        append_utf8(kept[i], out);
      }
      i = run_end;
    } else {
      append_utf8(kept[i++], out);
    }
  }

  size_t end = out.size();
  while (end > 0 && out[end - 1] == '\n') --end;
  while (end > 0 && out[end - 1] == ' ') --end;
  size_t begin = 0;
  while (begin < end && out[begin] == ' ') ++begin;
  return first_words(out, begin, end, max_words);
}

std::string pre_question(const std::string& question, int max_words) {
  ALBEF_CHECK(max_words >= 0, "max_words must not be negative, got ", max_words);
  thread_local std::vector<char32_t> kept;
  lower_without_punctuation(question, "question", kept);
  std::string out;
  out.reserve(kept.size());
  for (const char32_t c : kept) append_utf8(c, out);
  size_t end = out.size();
  while (end > 0 && out[end - 1] == ' ') --end;  // rstrip(' ') only: no collapsing, no leading strip
  return first_words(out, 0, end, max_words);
}

// ---- BertTokenizer -----------------------------------------------------------

struct BertTokenizer::Scratch {
  std::vector<char32_t> text;      // the decoded input
  std::vector<char32_t> word;      // the current whitespace-delimited word
  std::vector<char32_t> lowered;   // word after lower()
  std::vector<char32_t> stripped;  // word after NFD without Mn
  std::vector<utf8proc_int32_t> decomposed;
  std::string utf8;                // UTF-8 of a word being normalized or looked up
  std::vector<size_t> offsets;     // byte offset of each character of `utf8`
  std::string key;                 // candidate word piece
};

BertTokenizer::BertTokenizer(const std::string& vocab_path, bool lower_case)
    : lower_case_(lower_case) {
  const std::string text = vocab_path == kBundledVocabulary
                               ? std::string(albef_bert_base_uncased_vocab, albef_bert_base_uncased_vocab_size)
                               : read_file(vocab_path);
  {
    std::vector<char32_t> unused;
    const size_t bad = decode_utf8(text, unused);
    if (bad != std::string_view::npos) fail(vocab_path, ": not valid UTF-8 (byte ", bad, ")");
  }
  // Lines end at \n, \r\n or \r, as Python's text-mode readlines() splits them.
  for (size_t pos = 0; pos < text.size();) {
    const size_t eol = text.find_first_of("\r\n", pos);
    if (eol == std::string::npos) {
      vocab_.push_back(text.substr(pos));
      break;
    }
    vocab_.push_back(text.substr(pos, eol - pos));
    pos = eol + (text.compare(eol, 2, "\r\n") == 0 ? 2 : 1);
  }
  ids_.reserve(vocab_.size());
  for (size_t i = 0; i < vocab_.size(); ++i) {
    ids_[vocab_[i]] = static_cast<int64_t>(i);  // a repeated token keeps its last line, as HF's dict
    max_token_bytes_ = std::max(max_token_bytes_, vocab_[i].size());
  }
  const auto require = [&](const char* token) {
    const auto it = ids_.find(token);
    if (it == ids_.end()) fail(vocab_path, ": vocabulary has no ", token, " token");
    return it->second;
  };
  pad_id_ = require("[PAD]");
  unk_id_ = require("[UNK]");
  cls_id_ = require("[CLS]");
  sep_id_ = require("[SEP]");
  mask_id_ = require("[MASK]");
}

int64_t BertTokenizer::token_to_id(const std::string& token) const {
  const auto it = ids_.find(token);
  return it == ids_.end() ? unk_id_ : it->second;
}

const std::string& BertTokenizer::id_to_token(int64_t id) const {
  ALBEF_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary of ",
              vocab_size());
  return vocab_[static_cast<size_t>(id)];
}

std::vector<std::string> BertTokenizer::tokenize(const std::string& text) const {
  std::vector<int64_t> ids;
  append_ids(text, ids, kNoLimit);
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int64_t id : ids) tokens.push_back(vocab_[static_cast<size_t>(id)]);
  return tokens;
}

std::vector<int64_t> BertTokenizer::encode(const std::string& text, int max_length) const {
  const size_t limit = max_length > 0 ? static_cast<size_t>(max_length) : kNoLimit;
  std::vector<int64_t> ids{cls_id_};
  append_ids(text, ids, limit);
  if (ids.size() > limit) ids.resize(limit);
  return ids;
}

BatchEncoding BertTokenizer::encode_batch(const std::vector<std::string>& texts, int max_length,
                                          Padding padding) const {
  ALBEF_CHECK(padding != Padding::MaxLength || max_length > 0,
              "padding to max_length needs max_length > 0, got ", max_length);
  std::vector<std::vector<int64_t>> encoded;
  encoded.reserve(texts.size());
  size_t longest = 0;
  for (const auto& text : texts) {
    encoded.push_back(encode(text, max_length));
    longest = std::max(longest, encoded.back().size());
  }
  const auto batch = static_cast<int64_t>(texts.size());
  const auto length =
      padding == Padding::MaxLength ? static_cast<int64_t>(max_length) : static_cast<int64_t>(longest);
  BatchEncoding out{at::full({batch, length}, pad_id_, at::kLong), at::zeros({batch, length}, at::kLong)};
  int64_t* ids = out.input_ids.data_ptr<int64_t>();
  int64_t* mask = out.attention_mask.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& row = encoded[static_cast<size_t>(b)];
    std::copy(row.begin(), row.end(), ids + b * length);
    std::fill_n(mask + b * length, row.size(), 1);
  }
  return out;
}

void BertTokenizer::append_ids(const std::string& text, std::vector<int64_t>& ids,
                               size_t limit) const {
  thread_local Scratch s;
  const size_t bad = decode_utf8(text, s.text);
  if (bad != std::string_view::npos) {
    fail("text is not valid UTF-8 at byte ", bad, " (after \"", text.substr(0, bad), "\")");
  }

  // PreTrainedTokenizer.tokenize: special tokens written in the text (matched
  // as written, before lower-casing) are cut out and kept whole. It also strips
  // the whitespace beside them, which BasicTokenizer would drop anyway.
  const char32_t* data = s.text.data();
  size_t piece_begin = 0;
  for (size_t i = 0; i < s.text.size() && ids.size() < limit; ++i) {
    if (data[i] != '[') continue;
    for (const std::string_view token : kSpecialTokens) {
      if (!matches_ascii(s.text, i, token)) continue;
      append_piece_ids(data + piece_begin, data + i, s, ids, limit);
      if (ids.size() < limit) ids.push_back(token_to_id(std::string(token)));
      i += token.size() - 1;
      piece_begin = i + 1;
      break;
    }
  }
  if (ids.size() < limit) append_piece_ids(data + piece_begin, data + s.text.size(), s, ids, limit);
}

void BertTokenizer::append_piece_ids(const char32_t* begin, const char32_t* end, Scratch& s,
                                     std::vector<int64_t>& ids, size_t limit) const {
  s.word.clear();
  for (const char32_t* p = begin; p != end && ids.size() < limit; ++p) {
    switch (classify(*p)) {
      case CharKind::kDrop:
        break;
      case CharKind::kSpace:
        append_word_ids(s, ids);
        break;
      case CharKind::kCjk:  // a word of its own
        append_word_ids(s, ids);
        s.word.push_back(*p);
        append_word_ids(s, ids);
        break;
      case CharKind::kText:
        s.word.push_back(*p);
        break;
    }
  }
  if (ids.size() < limit) append_word_ids(s, ids);
}

void BertTokenizer::append_word_ids(Scratch& s, std::vector<int64_t>& ids) const {
  if (s.word.empty()) return;
  const std::vector<char32_t>* chars = &s.word;
  if (lower_case_) {
    const bool ascii = std::all_of(s.word.begin(), s.word.end(), [](char32_t c) { return c < 0x80; });
    if (ascii) {
      for (char32_t& c : s.word) c = (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
    } else {
      // lower() then NFD, dropping the nonspacing marks (accents).
      s.lowered.clear();
      for (const char32_t c : s.word) append_lower(c, s.lowered);
      s.utf8.clear();
      for (const char32_t c : s.lowered) append_utf8(c, s.utf8);
      const auto options = static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
      const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(s.utf8.data());
      const auto size = static_cast<utf8proc_ssize_t>(s.utf8.size());
      s.decomposed.resize(s.lowered.size() * 4);
      utf8proc_ssize_t count;
      while ((count = utf8proc_decompose(bytes, size, s.decomposed.data(),
                                         static_cast<utf8proc_ssize_t>(s.decomposed.size()), options)) >
             static_cast<utf8proc_ssize_t>(s.decomposed.size())) {
        s.decomposed.resize(static_cast<size_t>(count));
      }
      ALBEF_CHECK(count >= 0, "utf8proc_decompose failed: ", utf8proc_errmsg(count));
      s.stripped.clear();
      for (utf8proc_ssize_t k = 0; k < count; ++k) {
        const auto c = static_cast<char32_t>(s.decomposed[static_cast<size_t>(k)]);
        if (category(c) != UTF8PROC_CATEGORY_MN) s.stripped.push_back(c);
      }
      chars = &s.stripped;
    }
  } else {
    // Cased mode: BasicTokenizer's never_split keeps a special token that only
    // formed once control characters were dropped (with lower-casing it cannot).
    for (const std::string_view token : kSpecialTokens) {
      if (s.word.size() == token.size() && matches_ascii(s.word, 0, token)) {
        ids.push_back(token_to_id(std::string(token)));
        s.word.clear();
        return;
      }
    }
  }

  // Each punctuation character is a word of its own.
  const char32_t* word = chars->data();
  const size_t size = chars->size();
  size_t run = 0;
  for (size_t k = 0; k < size; ++k) {
    if (!is_punctuation(word[k])) continue;
    if (run < k) append_wordpiece_ids(word + run, word + k, s, ids);
    append_wordpiece_ids(word + k, word + k + 1, s, ids);
    run = k + 1;
  }
  if (run < size) append_wordpiece_ids(word + run, word + size, s, ids);
  s.word.clear();
}

void BertTokenizer::append_wordpiece_ids(const char32_t* begin, const char32_t* end, Scratch& s,
                                         std::vector<int64_t>& ids) const {
  const auto count = static_cast<size_t>(end - begin);
  if (count > kMaxWordChars) {
    ids.push_back(unk_id_);
    return;
  }
  s.utf8.clear();
  s.offsets.clear();
  for (const char32_t* p = begin; p != end; ++p) {
    s.offsets.push_back(s.utf8.size());
    append_utf8(*p, s.utf8);
  }
  s.offsets.push_back(s.utf8.size());

  // Greedy longest match first; a piece after the first is looked up as "##piece".
  const size_t first_piece = ids.size();
  for (size_t start = 0; start < count;) {
    s.key.assign(start > 0 ? "##" : "");
    const size_t prefix = s.key.size();
    s.key.append(s.utf8, s.offsets[start], std::string::npos);
    int64_t id = -1;
    size_t stop = count;
    for (; stop > start; --stop) {
      const size_t length = prefix + s.offsets[stop] - s.offsets[start];
      if (length > max_token_bytes_) continue;
      s.key.resize(length);
      const auto it = ids_.find(s.key);
      if (it != ids_.end()) {
        id = it->second;
        break;
      }
    }
    if (id < 0) {  // one unmatched position makes the whole word [UNK]
      ids.resize(first_piece);
      ids.push_back(unk_id_);
      return;
    }
    ids.push_back(id);
    start = stop;
  }
}

}  // namespace albef::text
