// Caption and question cleaning and the WordPiece tokenizer on any bytes
// (captions come from users' annotation files and HTTP requests).
#include "albef/text/tokenizer.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const albef::text::BertTokenizer tokenizer(albef::text::kBundledVocabulary);
  const std::string text(albef::fuzz::as_text(data, size));
  albef::fuzz::expect_success_or_albef_error("tokenizer", [&] {
    albef::text::pre_caption(text, 30);
    albef::text::pre_question(text, 30);
    tokenizer.encode(text, 40);
    tokenizer.encode_batch({text, "a cat"}, 30, albef::text::Padding::Longest);
  });
  return 0;
}
