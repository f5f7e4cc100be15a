// bf16 and int8 inference models are built in their precision from the
// start (no float32 copy of the encoders' linear weights at any point) and
// compute exactly what the float32-loaded model readied for them computes.
#include "albef/api/inference.h"
#include "albef/model/albef.h"
#include "albef/model/bert.h"
#include "albef/tasks/retrieval.h"
#include "ops/linear_int8.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <thread>

namespace {

using albef::testing::data_path;
using albef::testing::source_path;

TEST(PrecisionLoading, Bf16ModelBuiltInBf16EqualsTheFloat32LoadedOne) {
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  const std::string checkpoint = data_path("tiny/albef_pretrain_tiny.pth");
  albef::ModelOptions options = albef::retrieval_model_options(false);
  albef::AlbefModel direct = albef::load_inference_model(config, options, checkpoint, at::kCPU, albef::Precision::Bf16);
  albef::AlbefModel converted(config, options);
  albef::load_checkpoint(converted, checkpoint);
  albef::prepare_for_inference(converted, albef::Precision::Bf16);
  const auto expected = converted->named_parameters(), actual = direct->named_parameters();
  ASSERT_EQ(actual.size(), expected.size());
  int bf16 = 0;
  for (const auto& item : expected) {
    const at::Tensor& mine = actual[item.key()];
    EXPECT_EQ(mine.scalar_type(), item.value().scalar_type()) << item.key();
    EXPECT_TRUE(mine.equal(item.value())) << item.key();
    bf16 += mine.scalar_type() == at::kBFloat16 || mine.scalar_type() == at::kByte;  // kByte: packed (AVX-512)
  }
  EXPECT_GT(bf16, 20);
  for (const auto& item : converted->named_buffers()) EXPECT_TRUE(direct->named_buffers()[item.key()].equal(item.value()));

  const at::Tensor images = at::rand({2, 3, 32, 32});
  const at::Tensor ids = at::tensor({101, 1037, 3899, 2006, 1037, 10682}, at::kLong).unsqueeze(0);
  const at::Tensor mask = at::ones_like(ids);
  at::NoGradGuard no_grad;
  const albef::PrecisionGuard guard(albef::Precision::Bf16, at::kCPU);
  EXPECT_TRUE(direct->image_feature(direct->encode_image(images)).equal(converted->image_feature(converted->encode_image(images))));
  EXPECT_TRUE(direct->text_feature(direct->encode_text(ids, mask)).equal(converted->text_feature(converted->encode_text(ids, mask))));
  EXPECT_EQ(at::get_default_dtype(), caffe2::TypeMeta::Make<float>());  // put back
}

TEST(PrecisionLoading, Int8ModelBuiltInInt8EqualsTheFloat32LoadedOne) {
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  const std::string checkpoint = data_path("tiny/albef_pretrain_tiny.pth");
  albef::ModelOptions options = albef::retrieval_model_options(false);
  albef::AlbefModel direct = albef::load_inference_model(config, options, checkpoint, at::kCPU, albef::Precision::Int8);
  options.momentum_encoders = false;
  albef::AlbefModel converted(config, options);
  albef::load_checkpoint(converted, checkpoint);
  albef::prepare_for_inference(converted, albef::Precision::Int8);
  const auto expected = converted->named_parameters(), actual = direct->named_parameters();
  ASSERT_EQ(actual.size(), expected.size());
  int int8 = 0;
  for (const auto& item : expected) {
    const at::Tensor& mine = actual[item.key()];
    EXPECT_EQ(mine.scalar_type(), item.value().scalar_type()) << item.key();
    EXPECT_TRUE(mine.equal(item.value())) << item.key();
    int8 += mine.scalar_type() == at::kChar || mine.scalar_type() == at::kByte;  // kByte: packed (VNNI)
  }
  EXPECT_GT(int8, 20);
  const auto expected_buffers = converted->named_buffers(), actual_buffers = direct->named_buffers();
  ASSERT_EQ(actual_buffers.size(), expected_buffers.size());
  for (const auto& item : expected_buffers) EXPECT_TRUE(actual_buffers[item.key()].equal(item.value())) << item.key();

  const at::Tensor images = at::rand({2, 3, 32, 32});
  const at::Tensor ids = at::tensor({101, 1037, 3899, 2006, 1037, 10682}, at::kLong).unsqueeze(0);
  const at::Tensor mask = at::ones_like(ids);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(direct->image_feature(direct->encode_image(images)).equal(converted->image_feature(converted->encode_image(images))));
  EXPECT_TRUE(direct->text_feature(direct->encode_text(ids, mask)).equal(converted->text_feature(converted->encode_text(ids, mask))));
}

// A bf16 model is built under a bf16 default dtype; its embedding tables are made in float32 from the
// start (made in bf16 and widened, the word table would exist twice while the model loads), and
// initialised as torch::nn::Embedding initialises its own.
TEST(PrecisionLoading, EmbeddingTablesAreMadeInFloat32AsEmbeddingWouldInitialiseThem) {
  albef::BertConfig config;
  config.vocab_size = 40;
  config.hidden_size = 8;
  config.max_position_embeddings = 16;
  config.pad_token_id = 3;
  at::manual_seed(5);
  const albef::BertEmbeddings own(config);
  at::manual_seed(5);
  const torch::nn::Embedding reference(torch::nn::EmbeddingOptions(40, 8).padding_idx(3));
  EXPECT_TRUE(own->word_embeddings->weight.equal(reference->weight));
  EXPECT_TRUE(own->word_embeddings->weight[3].eq(0).all().item<bool>());

  at::set_default_dtype(caffe2::TypeMeta::Make<at::BFloat16>());
  const albef::BertEmbeddings under_bf16(config);
  at::set_default_dtype(caffe2::TypeMeta::Make<float>());
  for (const auto* table : {&under_bf16->word_embeddings, &under_bf16->position_embeddings,
                            &under_bf16->token_type_embeddings})
    EXPECT_EQ((*table)->weight.scalar_type(), at::kFloat);
  EXPECT_EQ(under_bf16->LayerNorm->weight.scalar_type(), at::kBFloat16);  // the rest follows the default
}

TEST(PrecisionLoading, Int8ConstructionLeavesOtherThreadsAndLaterLayersFloat32) {
  {
    const albef::ops::Int8Construction int8;
    EXPECT_EQ(albef::ops::encoder_linear(8, 4)->weight.scalar_type(), at::kChar);
    std::thread([] { EXPECT_EQ(albef::ops::encoder_linear(8, 4)->weight.scalar_type(), at::kFloat); }).join();
  }
  EXPECT_EQ(albef::ops::encoder_linear(8, 4)->weight.scalar_type(), at::kFloat);
}

}  // namespace
