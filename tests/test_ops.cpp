// ops/: the oneDNN paths against ATen. ops::linear forward and backward;
// ops::attention (inference and training) against the generic multi-head attention.
#include "albef/core/runtime.h"
#include "albef/model/layers.h"
#include "ops/attention.h"
#include "ops/dropout.h"
#include "ops/linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

namespace {

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / (b.abs().max().item<double>() + 1e-12);
}

/// Restores the process-wide switch whatever a test does.
struct AtenOnly {
  explicit AtenOnly(bool value) : before(albef::ops::aten_gemm_only()) { albef::ops::set_aten_gemm_only(value); }
  ~AtenOnly() { albef::ops::set_aten_gemm_only(before); }
  bool before;
};

TEST(Linear, ForwardMatchesAtenForBatchedStridedAndBiaslessInputs) {
  at::manual_seed(0);
  const at::Tensor weight = at::randn({48, 32}), bias = at::randn({48});
  const at::Tensor batched = at::randn({3, 5, 32});
  EXPECT_LT(rel_diff(albef::ops::linear(batched, weight, bias), at::linear(batched, weight, bias)), 1e-5);
  // The [CLS] rows of a sequence: a 2-D view whose row stride is the sequence's.
  const at::Tensor cls = batched.select(1, 0);
  ASSERT_FALSE(cls.is_contiguous());
  EXPECT_LT(rel_diff(albef::ops::linear(cls, weight, bias), at::linear(cls, weight, bias)), 1e-5);
  // A transposed input is neither contiguous nor row-major.
  const at::Tensor transposed = at::randn({32, 7}).t();
  EXPECT_LT(rel_diff(albef::ops::linear(transposed, weight, {}), at::linear(transposed, weight, {})), 1e-5);
  const at::Tensor empty = at::randn({0, 32});
  EXPECT_EQ(albef::ops::linear(empty, weight, bias).sizes(), (std::vector<int64_t>{0, 48}));
  EXPECT_EQ(albef::ops::linear(batched, weight, bias).sizes(), (std::vector<int64_t>{3, 5, 48}));
}

TEST(Linear, GradientsMatchAtenIncludingATiedWeightUsedTwice) {
  at::manual_seed(1);
  auto make = [](std::initializer_list<int64_t> sizes) { return at::randn(sizes).set_requires_grad(true); };
  const at::Tensor x = make({4, 6, 16}), weight = make({24, 16}), bias = make({24});
  const at::Tensor probe = at::randn({4, 6, 24});
  auto grads = [&](bool aten_only) {
    AtenOnly mode(aten_only);
    for (const auto& t : {x, weight, bias}) t.mutable_grad() = at::Tensor();
    // The same weight twice (as BERT's tied decoder) must accumulate both uses.
    const at::Tensor y = albef::ops::linear(x, weight, bias) + albef::ops::linear(x * 2, weight, {});
    (y * probe).sum().backward();
    return std::vector<at::Tensor>{x.grad().clone(), weight.grad().clone(), bias.grad().clone()};
  };
  const auto fast = grads(false), reference = grads(true);
  for (size_t i = 0; i < fast.size(); ++i) EXPECT_LT(rel_diff(fast[i], reference[i]), 1e-5) << "gradient " << i;
}

TEST(Linear, OnlyTheNeededGradientsAreComputed) {
  const at::Tensor x = at::randn({5, 8}).set_requires_grad(true);
  const at::Tensor weight = at::randn({3, 8}), bias = at::randn({3});
  albef::ops::linear(x, weight, bias).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_LT(rel_diff(x.grad(), weight.sum(0).expand({5, 8})), 1e-5);
  EXPECT_FALSE(weight.grad().defined());
}

TEST(Linear, AtenSwitchTakesLibTorchsPath) {
  const at::Tensor x = at::randn({9, 16}), weight = at::randn({4, 16}), bias = at::randn({4});
  AtenOnly mode(true);
  EXPECT_TRUE(albef::ops::linear(x, weight, bias).equal(at::linear(x, weight, bias)));
}

TEST(Linear, Bf16AutocastMultipliesBf16OperandsIntoFloat32) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({2, 33, 64}).set_requires_grad(true);
  const at::Tensor weight = at::randn({40, 64}).set_requires_grad(true), bias = at::randn({40}).set_requires_grad(true);
  const at::Tensor probe = at::randn({2, 33, 40});
  at::Tensor y;
  {
    albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
    y = albef::ops::linear(x, weight, bias);
    // The product of the bf16-rounded operands, accumulated in float32.
    albef::AutocastOff float32;
    const at::Tensor rounded = at::linear(x.detach().to(at::kBFloat16).to(at::kFloat),
                                          weight.detach().to(at::kBFloat16).to(at::kFloat), bias.detach());
    if (albef::dnnl_bf16_gemm_available()) {
      EXPECT_EQ(y.scalar_type(), at::kFloat);
      EXPECT_LT(rel_diff(y.detach(), rounded), 1e-5);
    }
  }
  (y * probe).sum().backward();
  // Gradients from bf16 operands stay within bf16 rounding of the float32 ones.
  const at::Tensor grad_x = probe.matmul(weight.detach());
  const at::Tensor grad_w = probe.reshape({-1, 40}).t().matmul(x.detach().reshape({-1, 64}));
  EXPECT_LT(rel_diff(x.grad(), grad_x), 2e-2);
  EXPECT_LT(rel_diff(weight.grad(), grad_w), 2e-2);
  // Ours sums the float32 output gradient; autocast's at::linear (the fallback) a bf16 one.
  EXPECT_LT(rel_diff(bias.grad(), probe.sum(at::IntArrayRef{0, 1})),
            albef::dnnl_bf16_gemm_available() ? 1e-5 : 2e-2);
}

TEST(Linear, MatmulNtChecksShapes) {
  EXPECT_LT(rel_diff(albef::ops::matmul_nt(at::ones({2, 3}), at::ones({4, 3})), at::full({2, 4}, 3.0)), 1e-6);
  EXPECT_THROW(albef::ops::matmul_nt(at::ones({2, 3}), at::ones({4, 2})), std::exception);
}

TEST(Linear, LinearGeluFusesTheActivationInInference) {
  at::manual_seed(5);
  torch::nn::Linear layer(48, 96);
  const at::Tensor x = at::randn({3, 19, 48});
  const at::Tensor expected = at::gelu(at::linear(x, layer->weight.detach(), layer->bias.detach()));
  {
    const at::NoGradGuard no_grad;
    EXPECT_LT(rel_diff(albef::ops::linear_gelu(*layer, x), expected), 1e-5);
    EXPECT_LT(rel_diff(albef::ops::linear_gelu(*layer, x.slice(1, 2, 9)), expected.slice(1, 2, 9)), 1e-5);
  }
  // Training: GELU stays an autograd op after the product.
  const at::Tensor y = albef::ops::linear_gelu(*layer, x);
  EXPECT_LT(rel_diff(y.detach(), expected), 1e-5);
  y.sum().backward();
  EXPECT_TRUE(layer->weight.grad().defined());
}

/// The generic path's answer: ops::attention switched off.
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads,
                               const at::Tensor& mask) {
  const AtenOnly aten(true);
  return albef::multi_head_attention(q, k, v, heads, mask);
}

TEST(Attention, HeadByHeadMatchesTheGenericPath) {
  if (!albef::ops::dnnl_gemm_available()) GTEST_SKIP() << "built without oneDNN";
  at::manual_seed(4);
  const at::NoGradGuard no_grad;
  // ViT: q, k and v are column chunks of one fused projection (rows 3C apart).
  const at::Tensor qkv = at::randn({2, 17, 3 * 32});
  const auto parts = qkv.chunk(3, -1);
  ASSERT_TRUE(albef::ops::attention_applies(parts[0], parts[1], parts[2], {}));
  EXPECT_LT(rel_diff(albef::ops::attention(parts[0], parts[1], parts[2], 4, {}),
                     reference_attention(parts[0], parts[1], parts[2], 4, {})),
            1e-5);
  EXPECT_LT(rel_diff(albef::multi_head_attention(parts[0], parts[1], parts[2], 4),
                     reference_attention(parts[0], parts[1], parts[2], 4, {})),
            1e-5);
  // BERT: a padding mask [B, 1, 1, Lk]; cross-attention to one image's keys shared by every caption.
  const at::Tensor text = at::randn({3, 7, 32}), image = at::randn({1, 11, 32}), image_v = at::randn({1, 11, 32});
  at::Tensor mask = at::zeros({3, 1, 1, 7});
  mask.index_put_({1, at::indexing::Slice(), at::indexing::Slice(), at::indexing::Slice(4, at::indexing::None)},
                  -10000.0);
  EXPECT_LT(rel_diff(albef::ops::attention(text, text, text, 4, mask), reference_attention(text, text, text, 4, mask)),
            1e-5);
  EXPECT_LT(rel_diff(albef::ops::attention(text, image, image_v, 4, {}),
                     reference_attention(text, image, image_v, 4, {})),
            1e-5);
}

/// Gradients of sum(out * weights) with respect to `leaves`.
std::vector<at::Tensor> gradients_of(const at::Tensor& out, const std::vector<at::Tensor>& leaves) {
  at::manual_seed(11);
  const at::Tensor weights = at::randn(out.sizes());
  return torch::autograd::grad({(out * weights).sum()}, leaves);
}

TEST(Attention, TrainingGradientsMatchTheGenericPath) {
  if (!albef::ops::dnnl_gemm_available()) GTEST_SKIP() << "built without oneDNN";
  at::manual_seed(5);
  // ViT: q, k and v are column chunks of one projection; the gradient reaches the projection's output.
  const at::Tensor qkv = at::randn({2, 17, 3 * 32}).set_requires_grad(true);
  auto vit = [&](bool generic) {
    const AtenOnly aten(generic);
    const auto parts = qkv.chunk(3, -1);
    EXPECT_EQ(albef::ops::attention_applies(parts[0], parts[1], parts[2], {}), !generic);
    return albef::multi_head_attention(parts[0], parts[1], parts[2], 4);
  };
  const at::Tensor ours = vit(false), generic = vit(true);
  EXPECT_LT(rel_diff(ours, generic), 1e-5);
  EXPECT_LT(rel_diff(gradients_of(ours, {qkv})[0], gradients_of(generic, {qkv})[0]), 1e-5);

  // BERT: a padding mask; cross-attention from 7 text tokens to 11 image tokens.
  const at::Tensor text = at::randn({3, 7, 32}).set_requires_grad(true);
  const at::Tensor image_k = at::randn({3, 11, 32}).set_requires_grad(true);
  const at::Tensor image_v = at::randn({3, 11, 32}).set_requires_grad(true);
  at::Tensor mask = at::zeros({3, 1, 1, 7});
  mask.index_put_({1, at::indexing::Slice(), at::indexing::Slice(), at::indexing::Slice(4, at::indexing::None)},
                  -10000.0);
  const at::Tensor self_ours = albef::ops::attention(text, text, text, 4, mask);
  const at::Tensor self_generic = reference_attention(text, text, text, 4, mask);
  EXPECT_LT(rel_diff(self_ours, self_generic), 1e-5);
  EXPECT_LT(rel_diff(gradients_of(self_ours, {text})[0], gradients_of(self_generic, {text})[0]), 1e-5);
  const at::Tensor cross_ours = albef::ops::attention(text, image_k, image_v, 4, {});
  const at::Tensor cross_generic = reference_attention(text, image_k, image_v, 4, {});
  EXPECT_LT(rel_diff(cross_ours, cross_generic), 1e-5);
  const auto ours_grads = gradients_of(cross_ours, {text, image_k, image_v});
  const auto generic_grads = gradients_of(cross_generic, {text, image_k, image_v});
  for (size_t i = 0; i < ours_grads.size(); ++i) EXPECT_LT(rel_diff(ours_grads[i], generic_grads[i]), 1e-5) << i;
}

TEST(Attention, DropoutKeepsTheMaskItDrawsForTheBackwardPass) {
  if (!albef::ops::dnnl_gemm_available()) GTEST_SKIP() << "built without oneDNN";
  const int64_t batch = 2, heads = 2, q_len = 5, k_len = 9, width = 16, head_dim = width / heads;
  const double p = 0.3;
  at::manual_seed(6);
  const at::Tensor q = at::randn({batch, q_len, width}).set_requires_grad(true);
  const at::Tensor k = at::randn({batch, k_len, width}).set_requires_grad(true);
  const at::Tensor v = at::randn({batch, k_len, width}).set_requires_grad(true);
  at::manual_seed(7);
  const at::Tensor ours = albef::ops::attention(q, k, v, heads, {}, p);
  // The documented draw, redrawn: one keep mask over [B, heads, Lq, Lk].
  at::manual_seed(7);
  const at::Tensor keep = albef::ops::draw_keep_mask({batch, heads, q_len, k_len}, 1.0 - p);
  EXPECT_GT(keep.logical_not().sum().item<int64_t>(), 0);
  auto split = [&](const at::Tensor& x) { return x.view({batch, -1, heads, head_dim}).transpose(1, 2); };
  const at::Tensor probs = at::softmax(at::matmul(split(q), split(k).transpose(-1, -2)) / std::sqrt(head_dim), -1);
  const at::Tensor expected =
      at::matmul(probs * keep.to(at::kFloat) / (1.0 - p), split(v)).transpose(1, 2).reshape({batch, q_len, width});
  EXPECT_LT(rel_diff(ours, expected), 1e-5);
  const auto ours_grads = gradients_of(ours, {q, k, v}), expected_grads = gradients_of(expected, {q, k, v});
  for (size_t i = 0; i < ours_grads.size(); ++i) EXPECT_LT(rel_diff(ours_grads[i], expected_grads[i]), 1e-5) << i;
  // Without gradients (the momentum encoders run in training mode under no_grad) the same draw applies.
  const at::NoGradGuard no_grad;
  at::manual_seed(7);
  EXPECT_LT(rel_diff(albef::ops::attention(q, k, v, heads, {}, p), expected), 1e-5);
}

TEST(Attention, LeavesAutocastAndUnsupportedShapesToTheGenericPath) {
  const at::Tensor x = at::randn({2, 5, 8});
  EXPECT_FALSE(albef::ops::attention_applies(x.to(at::kDouble), x, x, {}));
  EXPECT_FALSE(albef::ops::attention_applies(x.transpose(1, 2), x, x, {}));  // columns apart
  EXPECT_FALSE(albef::ops::attention_applies(x, x, x, at::zeros({2, 1, 5, 5})));  // a per-query mask
  EXPECT_FALSE(albef::ops::attention_applies(x, x, x, at::zeros({2, 1, 1, 5}).set_requires_grad(true)));
  // One image's keys shared by every caption: inference only.
  const at::Tensor shared = at::randn({1, 5, 8});
  EXPECT_EQ(albef::ops::attention_applies(x, shared, shared, {}), albef::ops::dnnl_gemm_available());
  EXPECT_FALSE(albef::ops::attention_applies(x.clone().set_requires_grad(true), shared, shared, {}));
  {  // bf16 autocast: inference where the CPU has a bf16 GEMM (test_bf16_inference.cpp), never training
    albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
    EXPECT_EQ(albef::ops::attention_applies(x, x, x, {}), albef::dnnl_bf16_gemm_available());
    EXPECT_FALSE(albef::ops::attention_applies(x.clone().set_requires_grad(true), x, x, {}));
  }
  EXPECT_THROW(albef::ops::attention(x.to(at::kDouble), x, x, 2, {}), std::exception);
  if (albef::ops::dnnl_gemm_available()) EXPECT_THROW(albef::ops::attention(x, x, x, 2, {}, 1.0), std::exception);
}

}  // namespace
