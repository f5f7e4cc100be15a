#pragma once
/// @file tokenizer.h
/// @brief ALBEF's text front end: the official caption cleaning and the BERT
/// WordPiece tokenizer, called as the official scripts call HuggingFace's.
///
/// ALBEF's own BertTokenizer builds a single sequence as `[CLS] X` with no
/// trailing `[SEP]`; truncation keeps `max_length - 1` word pieces.

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace albef::text {

/// The official `pre_caption`: lower-case; delete the characters
/// `,.'!?"()*#:;~`; `-` and `/` become spaces; `<person>` becomes `person`;
/// runs of two or more whitespace characters become one space; strip a
/// trailing newline and leading/trailing spaces; keep the first `max_words`
/// space-separated words.
std::string pre_caption(const std::string& caption, int max_words = 30);

/// The official `pre_question` (VQA): lower-case; delete `,.'!?"()*#:;~`;
/// `-` and `/` become spaces; strip trailing spaces only (runs of spaces
/// stay, and count as empty words); keep the first `max_words` words of
/// the text split on single spaces (30 in training, 50 at test).
std::string pre_question(const std::string& question, int max_words = 30);

/// How a batch is padded, as HuggingFace's `padding=` argument.
enum class Padding {
  Longest,    ///< to the longest sequence of the batch (`padding='longest'`)
  MaxLength,  ///< to `max_length` (`padding='max_length'`)
};

/// Token ids and attention mask of a batch, both int64 [batch, length];
/// padding is on the right with id 0 ([PAD]) and mask 0.
struct BatchEncoding {
  at::Tensor input_ids;
  at::Tensor attention_mask;
};

/// What a vocabulary path holds to mean bert-base-uncased's vocabulary, which
/// is compiled into albef: every official config uses it, and none names a
/// file for it (the official scripts download it by name).
inline constexpr char kBundledVocabulary[] = "bert-base-uncased (bundled with albef)";

/// BERT WordPiece tokenizer (HuggingFace 4.8 `BertTokenizer` semantics:
/// clean text, split CJK characters, lower-case, strip accents, split on
/// punctuation, greedy longest-match word pieces, words over 100 characters
/// become [UNK]; special tokens such as "[MASK]" written in the text are kept
/// whole).
class BertTokenizer {
 public:
  /// Loads a vocabulary file (one token per line, id = line number), or the
  /// bundled one when `vocab_path` is kBundledVocabulary. Throws albef::Error
  /// naming the file when it is missing or lacks [PAD], [UNK], [CLS], [SEP]
  /// or [MASK].
  explicit BertTokenizer(const std::string& vocab_path, bool lower_case = true);

  /// Word pieces of `text`, without special tokens added.
  std::vector<std::string> tokenize(const std::string& text) const;
  /// Ids of `text`: [CLS] followed by the word-piece ids, truncated to
  /// `max_length` ids in all (no truncation when max_length <= 0).
  std::vector<int64_t> encode(const std::string& text, int max_length) const;
  /// Encodes and pads a batch.
  BatchEncoding encode_batch(const std::vector<std::string>& texts, int max_length,
                             Padding padding) const;

  int64_t token_to_id(const std::string& token) const;  ///< [UNK]'s id when unknown
  const std::string& id_to_token(int64_t id) const;
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  int64_t pad_id() const { return pad_id_; }
  int64_t unk_id() const { return unk_id_; }
  int64_t cls_id() const { return cls_id_; }
  int64_t sep_id() const { return sep_id_; }
  int64_t mask_id() const { return mask_id_; }

 private:
  struct Scratch;  // per-thread work buffers (tokenizer.cpp)

  // Appends the ids of `text` (word pieces and special tokens written in it),
  // stopping early once `ids` holds `limit` ids.
  void append_ids(const std::string& text, std::vector<int64_t>& ids, size_t limit) const;
  // BasicTokenizer on text between special tokens, then WordPiece.
  void append_piece_ids(const char32_t* begin, const char32_t* end, Scratch& s,
                        std::vector<int64_t>& ids, size_t limit) const;
  // The whitespace-delimited word in s.word (emptied): case, accents,
  // punctuation, WordPiece.
  void append_word_ids(Scratch& s, std::vector<int64_t>& ids) const;
  void append_wordpiece_ids(const char32_t* begin, const char32_t* end, Scratch& s,
                            std::vector<int64_t>& ids) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  bool lower_case_;
  size_t max_token_bytes_ = 0;  // longer candidates cannot be in the vocabulary
  int64_t pad_id_ = 0, unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, mask_id_ = 0;
};

}  // namespace albef::text
