// bf16 inference: the row kernels (rounding, softmax into bf16, LayerNorms
// fused with residual adds), attention head by head on bf16 operands, and
// linear layers on packed bf16 weights, each against float32 on the same
// bf16-rounded values.
#include "albef/core/runtime.h"
#include "albef/model/vit.h"
#include "ops/attention.h"
#include "ops/bf16_rows.h"
#include "ops/linear.h"
#include "ops/linear_int8.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>() /
         (b.to(at::kFloat).abs().max().item<double>() + 1e-12);
}

TEST(Bf16Rows, RoundingEqualsC10sRoundToNearestEven) {
  at::manual_seed(0);
  at::Tensor x = at::randn({1000}) * 100;
  // Ties (the low 16 bits exactly 0x8000) go to the even neighbour, both ways.
  const std::vector<uint32_t> ties = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0x00008000u};
  std::vector<float> values(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
  for (uint32_t bits : ties) values.push_back(*reinterpret_cast<const float*>(&bits));
  values.push_back(0.0f);
  values.push_back(-std::numeric_limits<float>::infinity());
  std::vector<c10::BFloat16> rounded(values.size());
  albef::ops::round_to_bf16(values.data(), static_cast<int64_t>(values.size()), rounded.data());
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(rounded[i].x, c10::BFloat16(values[i]).x) << values[i];
}

TEST(Bf16Rows, SoftmaxMatchesFloat32WithinBf16Rounding) {
  at::manual_seed(1);
  for (const int64_t cols : {5, 16, 30, 257}) {  // full and partial vectors
    const int64_t rows = 7;
    at::Tensor scores = at::randn({rows, cols}) * 4;
    at::Tensor mask = at::zeros({cols});
    mask.slice(0, cols / 2).fill_(-1e9);  // padded keys: probability 0
    const at::Tensor expected = at::softmax(scores + mask, 1);
    at::Tensor scratch = scores.clone();
    at::Tensor probs = at::empty({rows, cols}, at::kBFloat16);
    albef::ops::softmax_to_bf16(scratch.data_ptr<float>(), mask.data_ptr<float>(), rows, cols,
                                probs.data_ptr<c10::BFloat16>());
    EXPECT_LT((probs.to(at::kFloat) - expected).abs().max().item<double>(), 4e-3) << cols << " columns";
    EXPECT_EQ(probs.slice(1, cols / 2).to(at::kFloat).abs().max().item<double>(), 0.0) << cols << " columns";
    at::Tensor unmasked = at::empty({rows, cols}, at::kBFloat16);
    scratch = scores.clone();
    albef::ops::softmax_to_bf16(scratch.data_ptr<float>(), nullptr, rows, cols, unmasked.data_ptr<c10::BFloat16>());
    EXPECT_LT((unmasked.to(at::kFloat) - at::softmax(scores, 1)).abs().max().item<double>(), 4e-3);
  }
}

// A LayerNorm whose scale and shift are not the identity's.
torch::nn::LayerNorm layer_norm_of_width(int64_t width, double eps) {
  torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({width}).eps(eps));
  at::NoGradGuard no_grad;
  norm->weight.uniform_(0.5, 1.5);
  norm->bias.uniform_(-0.5, 0.5);
  return norm;
}

// The residual sum and LayerNorm of it in one pass, written in bf16 for the
// products: the sum exactly ATen's, the normalised rows ATen's layer_norm
// within its bf16 rounding; in float32, and wherever gradients are needed,
// ATen's own ops.
TEST(Bf16Rows, AddLayerNormIsAtensRoundedForTheProducts) {
  at::manual_seed(4);
  torch::nn::LayerNorm norm = layer_norm_of_width(40, 1e-6);
  const at::Tensor residual = at::randn({2, 9, 40}) * 3 + 1, update = at::randn({2, 9, 40});
  const at::Tensor expected_sum = residual + update, expected = at::layer_norm(expected_sum, {40}, norm->weight,
                                                                                norm->bias, 1e-6);
  {
    at::NoGradGuard no_grad;
    const auto [sum, normed] = albef::ops::add_layer_norm_for_products(residual, update, *norm);
    EXPECT_TRUE(sum.equal(expected_sum));
    EXPECT_EQ(normed.scalar_type(), at::kFloat);  // float32 products: ATen's layer_norm
    EXPECT_TRUE(normed.equal(expected));

    const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
    const auto [bf16_sum, bf16_normed] = albef::ops::add_layer_norm_for_products(residual, update, *norm);
    EXPECT_TRUE(bf16_sum.equal(expected_sum));
    const at::Tensor alone = albef::ops::layer_norm_for_products(residual, *norm);
    if (albef::ops::native_bf16_rows() && albef::dnnl_bf16_gemm_available()) {
      ASSERT_EQ(bf16_normed.scalar_type(), at::kBFloat16);
      ASSERT_EQ(alone.scalar_type(), at::kBFloat16);
    }
    // bf16 keeps 8 significant bits: rounding moves a value by at most 2^-8 of it (plus float32 noise).
    const auto within_rounding = [](const at::Tensor& rounded, const at::Tensor& exact) {
      return ((rounded.to(at::kFloat) - exact).abs() <= exact.abs() / 256 + 1e-5).all().item<bool>();
    };
    EXPECT_TRUE(within_rounding(bf16_normed, expected));
    EXPECT_TRUE(within_rounding(alone, at::layer_norm(residual, {40}, norm->weight, norm->bias, 1e-6)));
    const at::Tensor same = bf16_normed.to(at::kBFloat16).eq(expected.to(at::kBFloat16));
    EXPECT_GT(same.to(at::kFloat).mean().item<double>(), 0.99);  // nearly all exactly ATen's, rounded
  }
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);  // gradients: ATen's ops, float32
  const auto [sum, normed] = albef::ops::add_layer_norm_for_products(residual, update.clone().requires_grad_(), *norm);
  EXPECT_EQ(normed.scalar_type(), at::kFloat);
  EXPECT_TRUE(normed.requires_grad());
}

// BERT's post-LN output: the float32 rows ATen's (within float32 noise)
// and, where products read bf16, the same rows rounded, from the same pass.
TEST(Bf16Rows, LayerNormOfSumGivesTheResidualStreamAndItsBf16Copy) {
  at::manual_seed(5);
  torch::nn::LayerNorm norm = layer_norm_of_width(24, 1e-12);
  at::NoGradGuard no_grad;
  const at::Tensor residual = at::randn({3, 5, 24}) * 2, update = at::randn({3, 5, 24});
  const at::Tensor expected = at::layer_norm(residual + update, {24}, norm->weight, norm->bias, 1e-12);
  const auto [plain, plain_for_products] = albef::ops::layer_norm_of_sum(residual, update, *norm);
  EXPECT_TRUE(plain.equal(expected));  // float32 products: ATen's ops
  EXPECT_TRUE(plain_for_products.equal(plain));

  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  const auto [normed, for_products] = albef::ops::layer_norm_of_sum(residual, update, *norm);
  EXPECT_LT((normed - expected).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(for_products.scalar_type(), albef::dnnl_bf16_gemm_available() ? at::kBFloat16 : at::kFloat);
  EXPECT_TRUE(for_products.equal(normed.to(for_products.scalar_type())));
}

// A product moved in by its only holder takes the residual sum in place (one
// activation fewer in a pass): the same values as a new tensor, in float32
// and bf16; an update someone else still holds, or one under autograd, is
// left as it was.
TEST(Bf16Rows, AMovedInUpdateTakesTheSumInPlace) {
  at::manual_seed(7);
  torch::nn::LayerNorm norm = layer_norm_of_width(32, 1e-6);
  const at::Tensor residual = at::randn({2, 7, 32}) * 2, update = at::randn({2, 7, 32});
  for (const albef::Precision precision : {albef::Precision::Fp32, albef::Precision::Bf16}) {
    SCOPED_TRACE(precision == albef::Precision::Fp32 ? "fp32" : "bf16");
    at::NoGradGuard no_grad;
    const albef::PrecisionGuard guard(precision, at::kCPU);
    const auto [expected_sum, expected_normed] = albef::ops::add_layer_norm_for_products(residual, update, *norm);
    const auto [expected_rows, expected_for_products] = albef::ops::layer_norm_of_sum(residual, update, *norm);

    at::Tensor moved = update.clone();
    const void* storage = moved.data_ptr();
    const auto [sum, normed] = albef::ops::add_layer_norm_for_products(residual, std::move(moved), *norm);
    EXPECT_EQ(sum.data_ptr(), storage);
    EXPECT_TRUE(sum.equal(expected_sum));
    EXPECT_TRUE(normed.equal(expected_normed));

    moved = update.clone();
    storage = moved.data_ptr();
    const auto [rows, for_products] = albef::ops::layer_norm_of_sum(residual, std::move(moved), *norm);
    // The fused bf16 pass normalises the sum where it lies; float32 takes ATen's layer_norm of it.
    if (precision == albef::Precision::Bf16 && albef::ops::native_bf16_rows() && albef::dnnl_bf16_gemm_available())
      EXPECT_EQ(rows.data_ptr(), storage);
    EXPECT_TRUE(rows.equal(expected_rows));
    EXPECT_TRUE(for_products.equal(expected_for_products));

    moved = update.clone();
    storage = moved.data_ptr();
    const at::Tensor added = albef::ops::add_into(std::move(moved), residual);
    EXPECT_EQ(added.data_ptr(), storage);
    EXPECT_TRUE(added.equal(residual + update));

    const at::Tensor held = update.clone();
    const auto [apart, apart_normed] = albef::ops::add_layer_norm_for_products(residual, held, *norm);
    EXPECT_NE(apart.data_ptr(), held.data_ptr());
    EXPECT_TRUE(held.equal(update));
    EXPECT_TRUE(apart.equal(expected_sum));
  }
  at::Tensor recorded = update.clone();  // moved in, but gradients are recorded: a new tensor
  const void* storage = recorded.data_ptr();
  const at::Tensor sum = albef::ops::add_into(std::move(recorded), residual.clone().requires_grad_());
  EXPECT_NE(sum.data_ptr(), storage);
  EXPECT_TRUE(sum.requires_grad());
}

// Whether a product in `precision` takes the residual sum in place: not bf16
// without oneDNN's bf16 GEMM (AVX2), whose products are autocast's bf16
// tensors, summed into a new float32 one.
bool sums_in_place(albef::Precision precision) {
  return precision != albef::Precision::Bf16 || albef::dnnl_bf16_gemm_available();
}

// A linear layer readied for inference in `precision`, as prepare_for_inference
// leaves an encoder's: int8 quantised or bf16, then packed where it gains.
torch::nn::Linear inference_layer(int64_t in, int64_t out, albef::Precision precision) {
  torch::nn::Linear layer(in, out);
  at::NoGradGuard no_grad;
  if (precision == albef::Precision::Int8) albef::ops::quantize_linear_int8(*layer);
  if (precision == albef::Precision::Bf16) layer->weight.set_data(layer->weight.to(at::kBFloat16));
  albef::ops::pack_for_inference(*layer);
  return layer;
}

// A layer's product over batched rows [B, T, K], moved into the residual sum,
// takes the sum in place in every precision: no view keeps it (its base
// would, outside inference mode), so a pass holds one activation fewer
// (sums_in_place).
TEST(Bf16Rows, AProductOfBatchedRowsMovedInTakesTheSumInPlace) {
  at::manual_seed(9);
  const at::Tensor x = at::randn({2, 7, 32}), residual = at::randn({2, 7, 48});
  for (const albef::Precision precision :
       {albef::Precision::Fp32, albef::Precision::Bf16, albef::Precision::Int8}) {
    SCOPED_TRACE(static_cast<int>(precision));
    const torch::nn::Linear layer = inference_layer(32, 48, precision);
    at::NoGradGuard no_grad;
    const albef::PrecisionGuard guard(precision, at::kCPU);
    const at::Tensor expected = residual + albef::ops::linear(*layer, x);

    at::Tensor product = albef::ops::linear(*layer, x);
    ASSERT_EQ(product.sizes(), (std::vector<int64_t>{2, 7, 48}));
    const void* storage = product.data_ptr();
    const at::Tensor sum = albef::ops::add_into(std::move(product), residual);
    if (sums_in_place(precision)) EXPECT_EQ(sum.data_ptr(), storage);
    EXPECT_TRUE(sum.equal(expected));

    const at::Tensor held = albef::ops::linear(*layer, x);  // still read by its caller: a new tensor
    const at::Tensor apart = albef::ops::add_into(held, residual);
    EXPECT_NE(apart.data_ptr(), held.data_ptr());
    EXPECT_TRUE(apart.equal(expected));
  }
}

// A feed-forward block's output added to the residual stream moved in: the
// sum is written over the stream (by the second product itself where its
// bf16 weights are packed), with the values of residual + feed_forward and
// of add_layer_norm_for_products, in every precision (sums_in_place).
TEST(Bf16Rows, TheFeedForwardAddsIntoTheResidualStreamMovedIn) {
  at::manual_seed(10);
  const at::Tensor x = at::randn({2, 7, 48}), residual = at::randn({2, 7, 48});
  for (const albef::Precision precision :
       {albef::Precision::Fp32, albef::Precision::Bf16, albef::Precision::Int8}) {
    SCOPED_TRACE(static_cast<int>(precision));
    const torch::nn::Linear first = inference_layer(48, 96, precision), second = inference_layer(96, 48, precision);
    torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({48}).eps(1e-6));
    norm->eval();
    at::NoGradGuard no_grad;
    norm->weight.uniform_(0.5, 1.5);
    norm->bias.uniform_(-0.5, 0.5);
    const albef::PrecisionGuard guard(precision, at::kCPU);
    const at::Tensor update = albef::ops::feed_forward(*first, *second, x);
    const auto [expected_sum, expected_normed] = albef::ops::add_layer_norm_for_products(residual, update, *norm);

    at::Tensor stream = residual.clone();
    const void* storage = stream.data_ptr();
    const auto [sum, normed] = albef::ops::feed_forward_added(*first, *second, x, std::move(stream), norm.get());
    if (sums_in_place(precision)) EXPECT_EQ(sum.data_ptr(), storage);
    EXPECT_TRUE(sum.equal(expected_sum));
    EXPECT_TRUE(normed.equal(expected_normed));

    stream = residual.clone();
    storage = stream.data_ptr();
    const auto [last, none] = albef::ops::feed_forward_added(*first, *second, x, std::move(stream), nullptr);
    if (sums_in_place(precision)) EXPECT_EQ(last.data_ptr(), storage);
    EXPECT_TRUE(last.equal(expected_sum));
    EXPECT_FALSE(none.defined());

    const at::Tensor held = residual.clone();  // still read by its caller: not written over
    const auto [apart, apart_normed] = albef::ops::feed_forward_added(*first, *second, x, held, norm.get());
    EXPECT_NE(apart.data_ptr(), held.data_ptr());
    EXPECT_TRUE(held.equal(residual));
    EXPECT_TRUE(apart.equal(expected_sum));
  }
}

// ViT blocks in a row hand the next block its norm1 from the last residual
// add (one pass over the rows): the same as each block on its own.
TEST(Bf16Rows, VitBlocksInARowEqualEachBlockOnItsOwn) {
  at::manual_seed(6);
  albef::VisionConfig config;
  config.embed_dim = 48;
  config.depth = 3;
  config.num_heads = 4;
  albef::VisionTransformer vit(config, /*image_res=*/32);
  vit->eval();
  at::NoGradGuard no_grad;
  for (auto& parameter : vit->parameters()) parameter.uniform_(-0.3, 0.3);
  const at::Tensor tokens = at::randn({2, 5, 48});
  for (const auto precision : {albef::Precision::Fp32, albef::Precision::Bf16}) {
    const albef::PrecisionGuard guard(precision, at::kCPU);
    at::Tensor one_by_one = tokens;
    for (const auto& block : *vit->blocks) one_by_one = block->as<albef::VitBlock>()->forward(one_by_one);
    EXPECT_TRUE(vit->forward_blocks(tokens, 0, config.depth).equal(one_by_one));
    EXPECT_TRUE(vit->forward_blocks(tokens, 1, 1).equal(tokens));
  }
}

// The patch embedding (a convolution of stride = kernel) runs in bf16
// inference as the product it is: the convolution of the same bf16 values.
TEST(Bf16Linear, PatchEmbeddingIsTheConvolutionAsAProduct) {
  if (!albef::dnnl_bf16_gemm_available()) GTEST_SKIP() << "this CPU has no native bf16 GEMM";
  at::manual_seed(7);
  albef::PatchEmbed embed(/*patch_size=*/4, /*embed_dim=*/24);
  embed->eval();
  at::NoGradGuard no_grad;
  const at::Tensor image = at::randn({2, 3, 8, 12});
  auto rounded = [](const at::Tensor& t) { return t.to(at::kBFloat16).to(at::kFloat); };
  const at::Tensor expected =
      at::conv2d(rounded(image), rounded(embed->proj->weight), embed->proj->bias, {4, 4}).flatten(2).transpose(1, 2);
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  const at::Tensor out = embed->forward(image);
  EXPECT_EQ(out.sizes(), expected.sizes());
  EXPECT_LT(rel_diff(out, expected), 1e-5);
}

TEST(Bf16Attention, AppliesToInferenceOnlyUnderBf16Autocast) {
  const at::Tensor x = at::randn({2, 5, 8});
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  const bool native = albef::dnnl_bf16_gemm_available();
  EXPECT_EQ(albef::ops::attention_applies(x, x, x, {}), native);
  EXPECT_EQ(albef::ops::attention_applies(x.to(at::kBFloat16), x.to(at::kBFloat16), x, {}), native);
  EXPECT_FALSE(albef::ops::attention_applies(x.clone().set_requires_grad(true), x, x, {}));  // training
  EXPECT_FALSE(albef::ops::attention_applies(x, x, x, {}, 0.1));                            // dropout
}

TEST(Bf16Attention, MatchesFloat32OnTheSameBf16Values) {
  if (!albef::dnnl_bf16_gemm_available()) GTEST_SKIP() << "this CPU has no native bf16 GEMM";
  at::manual_seed(2);
  const int64_t heads = 4;
  // ViT self-attention (q, k, v column chunks of one [B, L, 3C] projection), a padded text's, and one
  // image's keys shared by every caption (re-ranking).
  const at::Tensor qkv = at::randn({3, 21, 96}).to(at::kBFloat16);
  const auto parts = qkv.chunk(3, -1);
  const at::Tensor padding = at::zeros({3, 1, 1, 21}).index_fill_(3, at::arange(15, 21), -10000.0);
  const at::Tensor shared = at::randn({1, 33, 32}).to(at::kBFloat16);
  // ViT's 257 tokens in heads of 64 (the kernel's 6-row tiles and 16-key vectors both end part-filled),
  // and heads of 40 (a part-filled vector of output columns).
  const at::Tensor image = at::randn({2, 257, 256}).to(at::kBFloat16);
  const at::Tensor odd_width = at::randn({2, 19, 160}).to(at::kBFloat16);
  struct Case {
    at::Tensor q, k, v, mask;
  };
  for (const Case& c : {Case{parts[0], parts[1], parts[2], {}}, Case{parts[0], parts[1], parts[2], padding},
                        Case{parts[0], shared, shared, {}}, Case{image, image * 0.5, image, {}},
                        Case{odd_width, odd_width, odd_width * 2, {}}}) {
    const at::Tensor expected =
        albef::ops::attention(c.q.to(at::kFloat), c.k.to(at::kFloat), c.v.to(at::kFloat), heads, c.mask);
    at::Tensor out;
    {
      const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
      ASSERT_TRUE(albef::ops::attention_applies(c.q, c.k, c.v, c.mask));
      out = albef::ops::attention(c.q, c.k, c.v, heads, c.mask);
    }
    EXPECT_EQ(out.scalar_type(), at::kBFloat16);
    EXPECT_EQ(out.sizes(), expected.sizes());
    EXPECT_LT(rel_diff(out, expected), 1.5e-2);
  }
}

TEST(Bf16Linear, PackedWeightsFollowWritesInPlace) {
  if (!albef::dnnl_bf16_gemm_available()) GTEST_SKIP() << "this CPU has no native bf16 GEMM";
  at::manual_seed(3);
  torch::nn::Linear layer(64, 48);
  layer->to(at::kBFloat16);
  const at::NoGradGuard no_grad;
  const at::Tensor x = at::randn({10, 64});
  auto reference = [&] {
    return at::linear(x.to(at::kBFloat16).to(at::kFloat), layer->weight.to(at::kFloat), layer->bias.to(at::kFloat));
  };
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  const at::Tensor first = albef::ops::linear(*layer, x);
  EXPECT_EQ(first.scalar_type(), at::kFloat);
  EXPECT_LT(rel_diff(first, reference()), 1e-2);
  const at::Tensor product = albef::ops::linear(*layer, x, albef::ops::Feeds::product);
  EXPECT_EQ(product.scalar_type(), at::kBFloat16);  // read by the next product: rounded once, here
  EXPECT_LT(rel_diff(product, first), 1e-2);
  // New weights written into the same storage (a checkpoint loaded into a live model) are packed again.
  layer->weight.copy_(at::randn({48, 64}));
  EXPECT_LT(rel_diff(albef::ops::linear(*layer, x), reference()), 1e-2);
  const at::Tensor gelu = albef::ops::linear_gelu(*layer, x);
  EXPECT_EQ(gelu.scalar_type(), at::kBFloat16);
  EXPECT_LT(rel_diff(gelu, at::gelu(reference())), 1e-2);
}

}  // namespace
