// albef tokenize: what the model receives for a caption, one JSON per line.

#include "cli/common.h"

#include "albef/config/config.h"
#include "albef/text/tokenizer.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct TokenizeFlags {
  std::string config;
  std::string text_encoder;
  int max_length = 30;
  int max_words = 30;
  bool no_clean = false;
  bool pad = false;
  std::vector<std::string> texts;
};

void run_tokenize(const TokenizeFlags& flags) {
  const Config config = load_config(flags.config, flags.text_encoder);
  const text::BertTokenizer tokenizer(config.vocab);
  for (const std::string& raw : flags.texts) {
    const std::string caption = flags.no_clean ? raw : text::pre_caption(raw, flags.max_words);
    const text::BatchEncoding encoding = tokenizer.encode_batch(
        {caption}, flags.max_length, flags.pad ? text::Padding::MaxLength : text::Padding::Longest);
    const at::Tensor ids = encoding.input_ids[0].contiguous();
    const at::Tensor mask = encoding.attention_mask[0].contiguous();
    std::vector<int64_t> id_list(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    std::vector<int64_t> mask_list(mask.data_ptr<int64_t>(), mask.data_ptr<int64_t>() + mask.numel());
    std::vector<std::string> tokens;
    for (int64_t id : id_list) tokens.push_back(tokenizer.id_to_token(id));
    const nlohmann::json line = {{"text", raw},
                                 {"caption", caption},
                                 {"tokens", tokens},
                                 {"input_ids", id_list},
                                 {"attention_mask", mask_list}};
    std::cout << line.dump() << "\n";
  }
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto flags = std::make_shared<TokenizeFlags>();
  CLI::App* command =
      app.add_subcommand("tokenize", "Print the cleaned caption, input_ids and attention_mask of each text");
  command->add_option("--config", flags->config, "Task config YAML (names the vocabulary)")->required();
  tasks::add_text_encoder_flag(*command, flags->text_encoder);
  command->add_option("--max_length,--max-length", flags->max_length,
                      "Tokens including [CLS] (30 as retrieval; pretraining uses 25)")
      ->check(CLI::PositiveNumber);
  command->add_option("--max_words,--max-words", flags->max_words, "pre_caption's word limit")
      ->check(CLI::PositiveNumber);
  command->add_flag("--no-clean", flags->no_clean, "Skip pre_caption (tokenize the text as given)");
  command->add_flag("--pad", flags->pad, "Pad to --max_length, as the official retrieval evaluation");
  command->add_option("texts", flags->texts, "Texts to tokenize")->required();
  command->callback([flags] { run_tokenize(*flags); });
}

}  // namespace albef::cli
