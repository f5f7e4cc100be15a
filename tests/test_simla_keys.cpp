// SIMLA (codezakh/SIMLA): its configs, its official checkpoint and its model's passes
// (the state_dict manifests are checked in test_state_dict_keys.cpp).
#include <gtest/gtest.h>

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "albef/model/albef.h"
#include "tasks/pretrain/simla_model.h"

#include "test_util.h"

#include <fstream>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::source_path;

namespace {

std::string error_of(const std::string& path) {
  try {
    albef::load_config(path);
  } catch (const albef::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(SimlaKeys, OfficialCheckpointLoadsExactly) {
  // The fixture's checkpoint (seed 0, no step): float16-stored vocabulary tables
  // and momentum entries sharing their online tensors' storage.
  const albef::Config config = albef::load_config(data_path("simla/Pretrain_tiny.yaml"));
  albef::AlbefModel model(config, albef::simla_model_options());
  const std::string path = data_path("simla/simla_pretrain_tiny.pth");
  const albef::LoadReport report = albef::load_checkpoint(model, path, /*strict=*/true);
  EXPECT_TRUE(report.missing_keys.empty()) << report.missing_keys.front();
  EXPECT_TRUE(report.unexpected_keys.empty()) << report.unexpected_keys.front() << " and "
                                              << report.unexpected_keys.size() - 1 << " more";
  const albef::io::StateDict stored = albef::io::state_dict_from(albef::io::read_torch_file(path), path);
  const auto state = albef::state_dict(*model);
  ASSERT_EQ(stored.size(), state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    const auto& [name, tensor] = state[i];
    EXPECT_EQ(stored[i].first, name);
    EXPECT_TRUE(at::equal(stored[i].second.to(tensor.scalar_type()), tensor)) << name;
  }
  // The vocabulary-sized tables held float16 values: they load unchanged into float32.
  const at::Tensor words = model->text_bert()->embeddings->word_embeddings->weight;
  EXPECT_EQ(words.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(words, words.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(model->text_bert()->embeddings->token_type_embeddings.is_empty());
}

TEST(SimlaModel, SingleStreamPassesMatchOfficial) {
  // The official checkpoint's forward pieces on the fixture batch (dropout 0): the
  // text mode (every layer, no cross-attention), the masked ViT, and the MIM pass
  // of the image tokens through the text BERT, cross-attending to the text embeddings.
  const albef::Config config = albef::load_config(data_path("simla/Pretrain_tiny.yaml"));
  albef::AlbefModel model(config, albef::simla_model_options());
  albef::load_checkpoint(model, data_path("simla/simla_pretrain_tiny.pth"), /*strict=*/true);
  model->eval();
  at::NoGradGuard no_grad;
  auto npy = [](const std::string& name) { return albef::io::read_npy(data_path("simla/npy/" + name + ".npy")); };
  const at::Tensor ids = npy("inputs__input_ids"), mask = npy("inputs__attention_mask");
  auto expect_close = [](const at::Tensor& got, const at::Tensor& want, const char* what) {
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-5) << what;
  };
  albef::BertModel& bert = model->text_bert();
  expect_close(bert->forward_text(ids, mask), npy("text_embeds"), "text_embeds");
  const at::Tensor image_tokens =
      model->visual_encoder->forward(npy("inputs__image"), npy("masked_visual_token_pos").to(at::kBool));
  expect_close(image_tokens, npy("post_mask_image_embeds_before_bert"), "post_mask_image_embeds_before_bert");
  const at::Tensor text_states = bert->embeddings->forward(ids);
  expect_close(text_states, npy("mim_text_states"), "mim_text_states");
  albef::FusionImages states(text_states, /*keep_key_values=*/false, mask);
  expect_close(bert->forward_inputs_embeds(image_tokens, states), npy("mim_hidden"), "mim_hidden");
}

TEST(SimlaConfig, OfficialPretrainValues) {
  const albef::Config config = albef::load_config(source_path("configs/Pretrain_SIMLA.yaml"));
  EXPECT_EQ(config.pretrain_mode, "simla");
  EXPECT_EQ(config.batch_size, 64);
  EXPECT_EQ(config.queue_size, 65536);
  EXPECT_DOUBLE_EQ(config.mlm_probability, 0.15);
  EXPECT_DOUBLE_EQ(config.alpha, 0.4);
  EXPECT_EQ(config.image_tokenizer_path, "dall-e-tokenizer-weights");
  // shared_bert.json: no fusion_layer, cross-attention in every layer.
  EXPECT_TRUE(config.bert.single_stream);
  EXPECT_EQ(config.bert.fusion_layer, 0);
  EXPECT_EQ(config.bert.num_hidden_layers, 12);
  EXPECT_FALSE(albef::load_config(source_path("configs/Pretrain.yaml")).bert.single_stream);
}

TEST(SimlaConfig, ModeNeedsTheSingleStreamBert) {
  const std::string dir = make_temp_dir("simla_config");
  const std::string path = dir + "/simla.yaml";
  std::ofstream(path) << "bert_config: '" << source_path("configs/config_bert.json")
                      << "'\npretrain_mode: simla\nimage_tokenizer_path: null\n";
  const std::string error = error_of(path);
  for (const std::string needle : {"simla.yaml", "single-stream", "config_bert.json"})
    EXPECT_NE(error.find(needle), std::string::npos) << error;
}
