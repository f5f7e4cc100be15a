// The task config (YAML, official keys) and BERT's config_bert.json.
#include "albef/config/config.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const albef::fuzz::InputFile input(data, size);
  albef::fuzz::expect_success_or_albef_error("load_config", [&] { albef::load_config(input.path()); });
  albef::fuzz::expect_success_or_albef_error("BertConfig::from_json_file",
                                            [&] { albef::BertConfig::from_json_file(input.path()); });
  return 0;
}
