// --precision int8: the int8 linear layer against float32, the tiny official
// model's features and scores in int8 against fp32, and what int8 refuses.
#include "albef/api/inference.h"
#include "albef/core/runtime.h"
#include "albef/tasks/grounding.h"
#include "ops/linear.h"
#include "ops/linear_int8.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>

#include <filesystem>

namespace {

using albef::testing::data_path;
using albef::testing::source_path;

double relative_error(const at::Tensor& actual, const at::Tensor& expected) {
  return (actual - expected).norm().item<double>() / expected.norm().item<double>();
}

// The int8 GEMM must not saturate anywhere in the range quantize_weight_int8
// produces (AVX2 without VNNI sums pairs in int16: 8-bit weights overflowed).
TEST(Int8Linear, ProductsAreExactAtTheFullRange) {
  at::manual_seed(0);
  const int levels = albef::ops::int8_weight_levels();
  for (const int64_t rows : {1, 3, 37}) {
    at::Tensor x = at::randint(-127, 128, {rows, 64}).to(at::kFloat);
    x.select(1, 0).fill_(127);  // each row's largest value is 127: its scale is 1, its values stay as they are
    at::Tensor weight = at::randint(-levels, levels + 1, {48, 64}).to(at::kChar);
    weight.select(1, 0).fill_(levels);  // worst case: the largest products line up
    const at::Tensor out = albef::ops::linear_int8(x, weight, at::ones({48}), {}, false);
    EXPECT_TRUE(out.equal(at::mm(x, weight.to(at::kFloat).t()))) << rows << " rows";
  }
}

TEST(Int8Linear, QuantisesEachOutputChannelAndMatchesFloat32) {
  at::manual_seed(0);
  torch::nn::Linear layer(64, 48);
  at::Tensor weight = layer->weight.detach().clone();
  weight[3] *= 100;  // a channel 100x larger keeps its own scale
  weight[5].zero_();
  const at::Tensor bias = layer->bias.detach().clone();
  const auto [values, scales] = albef::ops::quantize_weight_int8(weight);
  ASSERT_EQ(values.scalar_type(), at::kChar);
  EXPECT_NEAR(scales[3].item<double>(), weight[3].abs().max().item<double>() / albef::ops::int8_weight_levels(), 1e-6);
  EXPECT_EQ(scales[5].item<double>(), 1.0);
  EXPECT_LE((values.to(at::kFloat) * scales.unsqueeze(1) - weight).abs().div(scales.unsqueeze(1)).max().item<double>(),
            0.5 + 1e-4);

  // 7-bit weights (CPUs without VNNI) double the rounding error.
  const double tolerance = 0.01 * 127 / albef::ops::int8_weight_levels();
  const at::Tensor input = at::randn({3, 37, 64});  // rows of several scales, a 3-D batch
  const at::Tensor expected = at::linear(input, weight, bias);
  EXPECT_LT(relative_error(albef::ops::linear_int8(input, values, scales, bias, false), expected), tolerance);
  const at::Tensor cls = input.select(1, 0);  // strided rows: the same numbers as their contiguous copy
  EXPECT_TRUE(albef::ops::linear_int8(cls, values, scales, {}, false)
                  .equal(albef::ops::linear_int8(cls.contiguous(), values, scales, {}, false)));
  EXPECT_EQ(albef::ops::linear_int8(at::randn({0, 64}), values, scales, bias, false).sizes(),
            (std::vector<int64_t>{0, 48}));

  // A layer readied for int8: the dispatch every encoder layer goes through.
  {
    at::NoGradGuard no_grad;
    layer->weight.copy_(weight);
  }
  albef::ops::quantize_linear_int8(*layer);
  EXPECT_EQ(layer->weight.scalar_type(), at::kChar);
  EXPECT_TRUE(albef::ops::int8_weight_scales(*layer).equal(scales));
  at::NoGradGuard no_grad;
  const at::Tensor out = albef::ops::linear(*layer, input);
  EXPECT_EQ(out.sizes(), expected.sizes());
  EXPECT_LT(relative_error(out, expected), tolerance);
  EXPECT_LT(relative_error(albef::ops::linear_gelu(*layer, input), at::gelu(expected)), tolerance);
}

// Loading quantises a checkpoint's rows into the layer a block at a time (LazyCheckpoint::read_in_rows):
// each row's scale is its own, so blocks give the whole matrix's values, from bf16 rows too.
TEST(Int8Linear, QuantisingBlocksOfRowsIntoTheLayerEqualsTheWholeMatrix) {
  at::manual_seed(1);
  const at::Tensor weight = at::randn({70, 24});
  for (const at::ScalarType type : {at::kFloat, at::kBFloat16}) {
    const at::Tensor stored = weight.to(type);
    const auto [expected_values, expected_scales] = albef::ops::quantize_weight_int8(stored);
    at::Tensor into_values = at::empty({70, 24}, at::kChar), into_scales = at::empty({70});
    for (int64_t begin = 0; begin < 70; begin += 9)
      albef::ops::quantize_weight_int8_into(stored.slice(0, begin, std::min<int64_t>(70, begin + 9)),
                                            into_values.slice(0, begin, std::min<int64_t>(70, begin + 9)),
                                            into_scales.slice(0, begin, std::min<int64_t>(70, begin + 9)));
    EXPECT_TRUE(into_values.equal(expected_values)) << type;
    EXPECT_TRUE(into_scales.equal(expected_scales)) << type;
  }
  at::Tensor wrong = at::empty({70, 23}, at::kChar), into_scales = at::empty({70});
  try {
    albef::ops::quantize_weight_int8_into(weight, wrong, into_scales);
    FAIL() << "values of another shape were accepted";
  } catch (const std::exception& error) {
    EXPECT_NE(std::string(error.what()).find("[70, 23]"), std::string::npos) << error.what();
  }
}

// The pass after the int8 GEMM (scales, bias, GELU) and its bf16 ends: GELU
// within 1e-6 of ATen's erf form on the same products, bf16 output the float32
// one rounded, bf16 input the same integers as its float32 widening.
TEST(Int8Linear, FinishesWithGeluAndReadsAndWritesBf16) {
  at::manual_seed(2);
  const at::Tensor weight = at::randn({96, 64}) * 0.1, bias = at::randn({96});
  const auto [values, scales] = albef::ops::quantize_weight_int8(weight);
  const at::Tensor input = at::randn({5, 64}) * 4;  // pre-activations out to +-6 and beyond
  const at::Tensor plain = albef::ops::linear_int8(input, values, scales, bias, false);
  ASSERT_GT(plain.abs().max().item<double>(), 4.0);
  const at::Tensor activated = albef::ops::linear_int8(input, values, scales, bias, true);
  EXPECT_LT((activated - at::gelu(plain)).abs().max().item<double>(), 1e-6);

  const at::Tensor rounded = albef::ops::linear_int8(input, values, scales, bias, true, at::kBFloat16);
  EXPECT_EQ(rounded.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(rounded.equal(activated.to(at::kBFloat16)));

  const at::Tensor bf16_input = input.to(at::kBFloat16);
  EXPECT_TRUE(albef::ops::linear_int8(bf16_input, values, scales, bias, false)
                  .equal(albef::ops::linear_int8(bf16_input.to(at::kFloat), values, scales, bias, false)));
}

// A feed-forward block of two int8 layers hands GELU's output to the second
// quantised as it is computed: the same integers as quantising the float32
// output afterwards, so the same numbers; under bf16 autocast it skips the
// bf16 rounding the separate layers take, and stays as near to float32.
TEST(Int8Linear, FeedForwardQuantisesGeluOutputOnTheWay) {
  at::manual_seed(3);
  torch::nn::Linear first(64, 96), second(96, 40);
  const at::Tensor input = at::randn({2, 7, 64});
  at::NoGradGuard no_grad;
  const at::Tensor expected = second->forward(at::gelu(first->forward(input)));
  albef::ops::quantize_linear_int8(*first);
  albef::ops::quantize_linear_int8(*second);
  const at::Tensor fused = albef::ops::feed_forward(*first, *second, input);
  EXPECT_EQ(fused.sizes(), expected.sizes());
  EXPECT_TRUE(fused.equal(albef::ops::linear(*second, albef::ops::linear_gelu(*first, input))));

  const auto [hidden_values, hidden_scales] =
      albef::ops::linear_int8_rows(input, first->weight, albef::ops::int8_weight_scales(*first), first->bias, true);
  EXPECT_EQ(hidden_values.sizes(), (std::vector<int64_t>{14, 96}));
  EXPECT_EQ(hidden_values.scalar_type(), at::kChar);
  EXPECT_EQ(hidden_scales.sizes(), (std::vector<int64_t>{14}));

  const double tolerance = 0.02 * 127 / albef::ops::int8_weight_levels();
  EXPECT_LT(relative_error(fused, expected), tolerance);
  const albef::PrecisionGuard int8(albef::Precision::Int8, at::kCPU);
  EXPECT_TRUE(albef::ops::feed_forward(*first, *second, input).equal(fused));
  EXPECT_LT(relative_error(albef::ops::linear(*second, albef::ops::linear_gelu(*first, input)), expected), tolerance);
}

// Outputs in bf16 or int8 rows are finished a block of rows at a time (about
// 2 MB of float32 products: 512 rows of 1,024 outputs), the last block
// shorter: the same numbers as the float32 output of one product, rounded or
// quantised.
TEST(Int8Linear, LargeBatchesAreFinishedInBlocksAsAWhole) {
  at::manual_seed(4);
  torch::nn::Linear first(64, 1024), second(1024, 40);
  const at::Tensor input = at::randn({1100, 64});  // blocks of 512, 512 and 76 rows
  at::NoGradGuard no_grad;
  albef::ops::quantize_linear_int8(*first);
  albef::ops::quantize_linear_int8(*second);
  const at::Tensor scales = albef::ops::int8_weight_scales(*first);
  const at::Tensor whole = albef::ops::linear_int8(input, first->weight, scales, first->bias, true);
  EXPECT_TRUE(albef::ops::linear_int8(input, first->weight, scales, first->bias, true, at::kBFloat16)
                  .equal(whole.to(at::kBFloat16)));
  EXPECT_TRUE(albef::ops::feed_forward(*first, *second, input).equal(albef::ops::linear(*second, whole)));
}

// Loading quantises a layer a few rows at a time: the values and scales are
// those of the whole matrix at once.
TEST(Int8Linear, QuantisesInChunksAsAWhole) {
  at::manual_seed(1);
  const at::Tensor weight = at::randn({150, 40}) * at::rand({150, 1}) * 10;
  const auto [values, scales] = albef::ops::quantize_weight_int8(weight);
  const int levels = albef::ops::int8_weight_levels();
  const at::Tensor expected_scales = weight.abs().amax(1) / static_cast<float>(levels);
  EXPECT_TRUE(scales.equal(expected_scales));
  EXPECT_TRUE(values.equal(at::round(weight / expected_scales.unsqueeze(1)).clamp(-levels, levels).to(at::kChar)));
}

TEST(Int8Linear, RefusesGradients) {
  const auto [values, scales] = albef::ops::quantize_weight_int8(at::randn({8, 16}));
  const at::Tensor input = at::randn({2, 16}).requires_grad_();
  try {
    albef::ops::linear_int8(input, values, scales, {}, false);
    ADD_FAILURE() << "no error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("load it with --precision fp32 or bf16"), std::string::npos) << e.what();
  }
}

albef::InferenceOptions tiny(albef::Precision precision) {
  albef::InferenceOptions options;
  options.config_path = data_path("tiny/Pretrain.yaml");
  options.checkpoint_path = data_path("tiny/albef_pretrain_tiny.pth");
  options.threads = 1;
  options.precision = precision;
  return options;
}

std::vector<std::string> bundled_images() {
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(source_path("data/coco-by/images")))
    paths.push_back(entry.path().string());
  std::sort(paths.begin(), paths.end());
  return paths;
}

TEST(Int8Model, FeaturesAndScoresFollowFloat32) {
  albef::AlbefInference fp32(tiny(albef::Precision::Fp32)), int8(tiny(albef::Precision::Int8));
  // The encoders' linear weights are int8 now; projections and the ITM head stay float32.
  int quantised = 0;
  for (const auto& item : int8.model()->named_parameters()) {
    const std::string& name = item.key();
    if (item.value().scalar_type() != at::kChar && item.value().scalar_type() != at::kByte) continue;  // or packed
    ++quantised;
    EXPECT_TRUE(name.rfind("visual_encoder.", 0) == 0 || name.rfind("text_encoder.", 0) == 0) << name;
  }
  EXPECT_GT(quantised, 20);
  const std::vector<std::string> images = bundled_images();
  const std::vector<std::string> captions = {"a family is sitting down at a table to have cake",
                                             "Horses standing and laying down in the grass on a hill.",
                                             "a stop sign on a street corner", "A man riding a wave on a surfboard."};
  const at::Tensor image_cosine = (fp32.image_features(images) * int8.image_features(images)).sum(1);
  const at::Tensor text_cosine = (fp32.text_features(captions) * int8.text_features(captions)).sum(1);
  EXPECT_GE(image_cosine.min().item<double>(), 0.995) << image_cosine;
  EXPECT_GE(text_cosine.min().item<double>(), 0.995) << text_cosine;
  const std::vector<std::string> pair_images(images.begin(), images.begin() + 4);
  const auto expected = fp32.score_pairs(pair_images, captions), actual = int8.score_pairs(pair_images, captions);
  for (size_t i = 0; i < captions.size(); ++i) {
    EXPECT_NEAR(actual[i].itc, expected[i].itc, 0.01) << i;
    EXPECT_NEAR(actual[i].itm_match, expected[i].itm_match, 0.02) << i;
  }
}

TEST(Int8Model, GradcamAndTrainingSayWhatTheyNeed) {
  albef::AlbefInference int8(tiny(albef::Precision::Int8));
  const albef::text::BatchEncoding encoding = int8.tokenize({"a cake"});
  try {
    albef::GradcamOptions options;
    options.block_num = 3;
    albef::compute_gradcam(int8.model(), int8.load_images({bundled_images()[0]}), encoding.input_ids,
                           encoding.attention_mask, options);
    ADD_FAILURE() << "no error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("int8 model cannot be differentiated"), std::string::npos) << e.what();
  }
  std::string output;
  const std::string dir = albef::testing::make_temp_dir("int8_train");
  EXPECT_NE(albef::testing::run_command(std::string(ALBEF_CLI) + " retrieval --precision int8 --config " +
                                            source_path("configs/demo_retrieval.yaml") + " --checkpoint " +
                                            data_path("tiny/albef_pretrain_tiny.pth") + " --output_dir " + dir,
                                        &output),
            0);
  EXPECT_NE(output.find("--precision int8 is for inference"), std::string::npos) << output;
  // Inference commands take it.
  ASSERT_EQ(albef::testing::run_command(std::string(ALBEF_CLI) + " embed --precision int8 --threads 1 --config " +
                                            data_path("tiny/Pretrain.yaml") + " --checkpoint " +
                                            data_path("tiny/albef_pretrain_tiny.pth") + " --text 'a cake' --out " +
                                            dir + "/feats",
                                        &output),
            0)
      << output;
}

}  // namespace
