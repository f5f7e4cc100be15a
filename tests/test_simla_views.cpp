// SIMLA's per-sample views: by default the tokenizer's view shows the same
// pixels as the ViT's (the ViT view averaged over 2x2 cells matches it
// closely), while the official independent views do not; shapes, value
// ranges, masks and reproducibility per Rng stream.

#include "albef/core/error.h"
#include "albef/data/simla_views.h"
#include "albef/vision/image.h"

#include "test_util.h"

#include <ATen/ATen.h>

using albef::data::SimlaViewOptions;
using albef::data::SimlaViews;
using albef::data::SimlaViewTransform;
using albef::testing::data_path;

namespace {

// Mean |difference| between the tokenizer view and the ViT view brought to
// the same scale: pixels in [0, 1], the ViT view averaged over 2x2 cells.
double view_mismatch(const SimlaViews& views) {
  const at::Tensor mean = at::tensor({albef::vision::kMean[0], albef::vision::kMean[1], albef::vision::kMean[2]});
  const at::Tensor std = at::tensor({albef::vision::kStd[0], albef::vision::kStd[1], albef::vision::kStd[2]});
  const at::Tensor vit = views.image * std.view({3, 1, 1}) + mean.view({3, 1, 1});
  const at::Tensor vit_half = at::avg_pool2d(vit.unsqueeze(0), {2, 2}).squeeze(0);
  const at::Tensor tokenizer = (views.image_for_tokenization - 0.1) / 0.8;
  return (vit_half - tokenizer).abs().mean().item<double>();
}

}  // namespace

TEST(SimlaViews, AlignedByDefaultIndependentAsOfficial) {
  const cv::Mat rgb = albef::vision::read_rgb(data_path("images/horse.png"));
  SimlaViewOptions aligned_options;
  aligned_options.image_res = 64;
  aligned_options.masking.num_masking_patches = 5;  // a 4x4 grid, as the tiny SIMLA fixtures
  aligned_options.masking.min_num_patches = 1;
  SimlaViewOptions official_options = aligned_options;
  official_options.independent_views = true;
  const SimlaViewTransform aligned(aligned_options), official(official_options);
  int official_far = 0;
  for (uint64_t sample = 0; sample < 8; ++sample) {
    albef::vision::Rng rng_a = albef::vision::Rng::for_sample(5, 0, sample);
    albef::vision::Rng rng_b = albef::vision::Rng::for_sample(5, 0, sample);
    const SimlaViews a = aligned(rgb, rng_a), b = official(rgb, rng_b);
    // Bicubic resampling twice vs. an exact 2x2 mean: close, not equal.
    EXPECT_LT(view_mismatch(a), 0.03) << "sample " << sample;
    official_far += view_mismatch(b) > 0.05;
  }
  EXPECT_GE(official_far, 6);  // independent crops rarely land on the same pixels
}

TEST(SimlaViews, ShapesRangesAndMasks) {
  SimlaViewOptions options;
  options.image_res = 256;
  const SimlaViewTransform transform(options);
  EXPECT_EQ(transform.options().masking.height, 16);
  const cv::Mat rgb = albef::vision::read_rgb(data_path("images/camera.png"));
  albef::vision::Rng rng = albef::vision::Rng::for_sample(1, 2, 3);
  const SimlaViews views = transform(rgb, rng);
  EXPECT_EQ(views.image.sizes(), (at::IntArrayRef{3, 256, 256}));
  EXPECT_EQ(views.image_for_tokenization.sizes(), (at::IntArrayRef{3, 128, 128}));
  EXPECT_GE(views.image_for_tokenization.min().item<float>(), 0.1f - 1e-6f);
  EXPECT_LE(views.image_for_tokenization.max().item<float>(), 0.9f + 1e-6f);
  EXPECT_EQ(views.masks.sizes(), (at::IntArrayRef{16, 16}));
  const int64_t masked = views.masks.sum().item<int64_t>();
  EXPECT_GE(masked, 16);
  EXPECT_LE(masked, 75);
  EXPECT_THROW(SimlaViewTransform(SimlaViewOptions{72}), albef::Error);
}

TEST(SimlaViews, SameStreamSameViews) {
  SimlaViewOptions options;
  options.image_res = 64;
  options.masking.num_masking_patches = 5;
  options.masking.min_num_patches = 1;
  const SimlaViewTransform transform(options);
  const cv::Mat rgb = albef::vision::read_rgb(data_path("images/horse.png"));
  albef::vision::Rng first = albef::vision::Rng::for_sample(9, 1, 4), second = albef::vision::Rng::for_sample(9, 1, 4);
  const SimlaViews a = transform(rgb, first), b = transform(rgb, second);
  EXPECT_TRUE(at::equal(a.image, b.image));
  EXPECT_TRUE(at::equal(a.image_for_tokenization, b.image_for_tokenization));
  EXPECT_TRUE(at::equal(a.masks, b.masks));
  EXPECT_GE(a.masks.sum().item<int64_t>(), 1);
  EXPECT_LE(a.masks.sum().item<int64_t>(), 5);
}
