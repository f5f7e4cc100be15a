// Inference layers whose bf16 or int8 weights live only in oneDNN's blocked
// layout (ops::pack_for_inference): the same products as the plain layer at
// every row count, the plain matrix recoverable, gradients through them, and
// a model that holds its encoders' weights once.
#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "albef/model/albef.h"
#include "albef/model/vit.h"
#include "albef/tasks/retrieval.h"
#include "ops/linear.h"
#include "ops/linear_int8.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include <string>

namespace {

using albef::testing::data_path;

torch::nn::Linear bf16_layer(int64_t in, int64_t out) {
  torch::nn::Linear layer(in, out);
  at::NoGradGuard no_grad;
  layer->weight.set_requires_grad(false);
  layer->weight.set_data(layer->weight.to(at::kBFloat16));
  return layer;
}

torch::nn::Linear int8_layer(int64_t in, int64_t out) {
  torch::nn::Linear layer(in, out);
  albef::ops::quantize_linear_int8(*layer);
  return layer;
}

// A second layer with the first one's values, so that one can be packed.
torch::nn::Linear copy_of(const torch::nn::Linear& layer) {
  torch::nn::Linear copy(layer->options);
  at::NoGradGuard no_grad;
  copy->weight.set_requires_grad(false);
  copy->weight.set_data(layer->weight.clone());
  copy->bias.set_data(layer->bias.clone());
  for (const auto& item : layer->named_buffers(false)) copy->register_buffer(item.key(), item.value().clone());
  return copy;
}

TEST(PackedWeights, FloatLayersStayPlain) {
  torch::nn::Linear layer(64, 48);
  EXPECT_FALSE(albef::ops::pack_for_inference(*layer));
  EXPECT_FALSE(albef::ops::is_packed(*layer));
  EXPECT_EQ(layer->weight.scalar_type(), at::kFloat);
}

TEST(PackedWeights, Bf16ProductsEqualThePlainLayersAtEveryRowCount) {
  if (!albef::dnnl_bf16_gemm_available()) GTEST_SKIP() << "no oneDNN bf16 kernels on this CPU (AVX-512 needed)";
  at::manual_seed(3);
  torch::nn::Linear plain = bf16_layer(96, 80), packed = copy_of(plain);
  ASSERT_TRUE(albef::ops::pack_for_inference(*packed));
  EXPECT_TRUE(albef::ops::is_packed(*packed));
  EXPECT_EQ(packed->weight.scalar_type(), at::kByte);
  EXPECT_TRUE(albef::ops::plain_weight(*packed).equal(plain->weight));  // the packing loses nothing

  at::NoGradGuard no_grad;
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  for (const int64_t rows : {1, 3, 257, 1500}) {
    const at::Tensor x = at::randn({rows, 96});
    const at::Tensor expected = albef::ops::linear(*plain, x);
    const at::Tensor actual = albef::ops::linear(*packed, x);
    ASSERT_EQ(actual.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::allclose(actual, expected, 1e-5, 1e-5)) << rows << " rows";
    const at::Tensor feeding = albef::ops::linear(*packed, x, albef::ops::Feeds::product);
    EXPECT_EQ(feeding.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::allclose(feeding.to(at::kFloat), expected, 1e-2, 1e-2)) << rows << " rows";
    EXPECT_TRUE(at::allclose(albef::ops::linear_gelu(*packed, x).to(at::kFloat),
                             albef::ops::linear_gelu(*plain, x).to(at::kFloat), 1e-2, 1e-2))
        << rows << " rows";
  }
  const at::Tensor batched = at::randn({2, 7, 96});  // leading dimensions kept
  EXPECT_EQ(albef::ops::linear(*packed, batched).sizes(), (std::vector<int64_t>{2, 7, 80}));
}

TEST(PackedWeights, GradientsFlowThroughAPackedBf16Layer) {
  if (!albef::dnnl_bf16_gemm_available()) GTEST_SKIP() << "no oneDNN bf16 kernels on this CPU (AVX-512 needed)";
  at::manual_seed(4);
  torch::nn::Linear plain = bf16_layer(64, 32), packed = copy_of(plain);
  ASSERT_TRUE(albef::ops::pack_for_inference(*packed));
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  const at::Tensor x = at::randn({5, 64});
  at::Tensor x_plain = x.clone().requires_grad_(), x_packed = x.clone().requires_grad_();
  albef::ops::linear(*plain, x_plain).square().sum().backward();
  albef::ops::linear(*packed, x_packed).square().sum().backward();  // Grad-CAM's path: the plain matrix unpacked
  ASSERT_TRUE(x_packed.grad().defined());
  EXPECT_TRUE(at::allclose(x_packed.grad(), x_plain.grad(), 1e-5, 1e-5));
}

TEST(PackedWeights, Int8ProductsEqualThePlainLayersExactly) {
  at::manual_seed(5);
  torch::nn::Linear plain = int8_layer(128, 96), packed = copy_of(plain);
  if (!albef::ops::pack_for_inference(*packed)) GTEST_SKIP() << "oneDNN's int8 kernel reads plain weights on this CPU";
  EXPECT_TRUE(albef::ops::is_packed(*packed));
  EXPECT_TRUE(albef::ops::plain_weight(*packed).equal(plain->weight));
  EXPECT_TRUE(albef::ops::int8_weight_scales(*packed).equal(albef::ops::int8_weight_scales(*plain)));
  at::NoGradGuard no_grad;
  for (const int64_t rows : {1, 4, 300}) {
    const at::Tensor x = at::randn({rows, 128});
    // Integer sums are exact: the layouts can only change the order, not the result.
    EXPECT_TRUE(albef::ops::linear(*packed, x).equal(albef::ops::linear(*plain, x))) << rows << " rows";
    EXPECT_TRUE(albef::ops::linear_gelu(*packed, x).equal(albef::ops::linear_gelu(*plain, x))) << rows << " rows";
  }
}

TEST(PackedWeights, AnInputOfTheWrongWidthNamesTheLayersWidth) {
  torch::nn::Linear layer = albef::dnnl_bf16_gemm_available() ? bf16_layer(64, 32) : int8_layer(64, 32);
  if (!albef::ops::pack_for_inference(*layer)) GTEST_SKIP() << "nothing packed on this CPU";
  at::NoGradGuard no_grad;
  try {
    albef::ops::linear(*layer, at::randn({3, 48}));
    ADD_FAILURE() << "no error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("64"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("48"), std::string::npos) << e.what();
  }
}

// The patch embedding's stride-p convolution is, in bf16 inference, the product
// [B*P, 3*p*p] x [3*p*p, D]: packed once, its weights are held in bf16 alone and
// encode as the float32 ones rounded on every pass did, with or without gradients.
TEST(PackedWeights, APackedPatchEmbeddingEncodesAsTheConvolutionsWeightsRoundedEachPass) {
  if (!albef::dnnl_bf16_gemm_available()) GTEST_SKIP() << "no oneDNN bf16 kernels on this CPU (AVX-512 needed)";
  at::manual_seed(8);
  albef::PatchEmbed plain(16, 48), packed(16, 48);
  {
    at::NoGradGuard no_grad;
    for (auto* module : {&plain, &packed}) (*module)->eval();
    packed->proj->weight.set_data(plain->proj->weight.clone());
    packed->proj->bias.set_data(plain->proj->bias.clone());
  }
  packed->pack_for_inference();
  EXPECT_EQ(packed->proj->weight.scalar_type(), at::kByte);
  EXPECT_EQ(packed->proj->weight.dim(), 1);
  EXPECT_LT(packed->proj->weight.nbytes(), plain->proj->weight.nbytes());  // bf16 (blocks padded), float32 gone

  const at::Tensor pixels = at::randint(0, 256, {3, 3, 32, 64}, at::kByte);
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  at::Tensor expected;
  {
    at::NoGradGuard no_grad;
    expected = plain->forward(pixels);
    const at::Tensor actual = packed->forward(pixels);
    ASSERT_EQ(actual.sizes(), (std::vector<int64_t>{3, 8, 48}));
    EXPECT_TRUE(at::allclose(actual, expected, 1e-5, 1e-5)) << (actual - expected).abs().max().item<float>();
  }
  // Grad-CAM runs the image encoder with gradients on: the packed product serves it too.
  EXPECT_TRUE(at::allclose(packed->forward(pixels), expected, 1e-5, 1e-5));
  packed->pack_for_inference();  // a second call changes nothing
  EXPECT_TRUE(at::allclose(packed->forward(pixels), expected, 1e-5, 1e-5));
  try {
    packed->forward(at::randint(0, 256, {1, 3, 20, 32}, at::kByte));
    ADD_FAILURE() << "no error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[1, 3, 20, 32]"), std::string::npos) << e.what();
  }
}

// An inference model keeps its encoders' layers and contrastive projections
// packed, and nothing else: the bytes it holds for them are the packed ones,
// not the plain matrix beside them.
TEST(PackedWeights, InferenceModelsHoldTheirEncodersOnceInThePackedLayout) {
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  const std::string checkpoint = data_path("tiny/albef_pretrain_tiny.pth");
  for (const albef::Precision precision : {albef::Precision::Bf16, albef::Precision::Int8}) {
    albef::AlbefModel model = albef::load_inference_model(config, albef::retrieval_model_options(false), checkpoint,
                                                          at::kCPU, precision);
    int packed = 0;
    for (const auto& item : model->named_modules("", false)) {
      const auto* linear = item.value()->as<torch::nn::Linear>();
      if (linear == nullptr || !albef::ops::is_packed(*linear)) continue;
      ++packed;
      const std::string& name = item.key();
      EXPECT_TRUE(name.rfind("visual_encoder.", 0) == 0 || name.rfind("text_encoder.", 0) == 0 ||
                  name == "vision_proj" || name == "text_proj")
          << name;
    }
    const bool packs = precision == albef::Precision::Bf16 ? albef::dnnl_bf16_gemm_available() : packed > 0;
    if (packs) EXPECT_GT(packed, 20) << static_cast<int>(precision);
    // bf16 projections too (no packed copy at first use); int8 keeps them float32, read as stored.
    if (packs && precision == albef::Precision::Bf16) {
      EXPECT_TRUE(albef::ops::is_packed(*model->vision_proj));
      EXPECT_TRUE(albef::ops::is_packed(*model->text_proj));
    }
    // Both precisions read the patches in bf16 where the CPU has the kernels.
    const at::Tensor& patch_weights = model->visual_encoder->patch_embed->proj->weight;
    EXPECT_EQ(patch_weights.scalar_type(), albef::dnnl_bf16_gemm_available() ? at::kByte : at::kFloat);
  }
}

}  // namespace
