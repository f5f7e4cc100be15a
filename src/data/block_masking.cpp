#include "albef/data/block_masking.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>

#include <cmath>

namespace albef::data {

double RngMaskingDraws::uniform(double a, double b) { return rng_.uniform(a, b); }

int64_t RngMaskingDraws::randint(int64_t a, int64_t b) {
  ALBEF_CHECK(a <= b, "randint(", a, ", ", b, ") has an empty range");
  return a + rng_.below(b - a + 1);
}

BlockMaskingGenerator::BlockMaskingGenerator(BlockMaskingOptions options) : options_(options) {
  ALBEF_CHECK(options_.height > 0 && options_.width > 0, "the patch grid must be positive, got ", options_.height,
              "x", options_.width);
  ALBEF_CHECK(options_.num_masking_patches >= 0 && options_.num_masking_patches <= options_.height * options_.width,
              "num_masking_patches ", options_.num_masking_patches, " does not fit a ", options_.height, "x",
              options_.width, " grid");
  ALBEF_CHECK(options_.min_num_patches >= 1, "min_num_patches must be at least 1, got ", options_.min_num_patches);
  max_num_patches_ = options_.max_num_patches.value_or(options_.num_masking_patches);
  ALBEF_CHECK(max_num_patches_ >= 1, "max_num_patches must be at least 1, got ", max_num_patches_);
  const double max_aspect = options_.max_aspect.value_or(1.0 / options_.min_aspect);
  ALBEF_CHECK(options_.min_aspect > 0 && options_.min_aspect <= max_aspect, "the aspect range [",
              options_.min_aspect, ", ", max_aspect, "] must be positive and ordered");
  log_aspect_min_ = std::log(options_.min_aspect);
  log_aspect_max_ = std::log(max_aspect);
}

int64_t BlockMaskingGenerator::add_block(uint8_t* mask, int64_t max_mask_patches, MaskingDraws& draws) const {
  const int64_t height = options_.height, width = options_.width;
  int64_t delta = 0;
  for (int attempt = 0; attempt < 10 && delta == 0; ++attempt) {
    // The area is drawn even when min_num_patches > max_mask_patches (uniform
    // then runs backwards), as the official code does.
    const double target_area =
        draws.uniform(static_cast<double>(options_.min_num_patches), static_cast<double>(max_mask_patches));
    const double aspect_ratio = std::exp(draws.uniform(log_aspect_min_, log_aspect_max_));
    // Python's round() ties to even, as nearbyint does in the default rounding mode.
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect_ratio)));
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect_ratio)));
    if (w >= width || h >= height) continue;
    const int64_t top = draws.randint(0, height - h);
    const int64_t left = draws.randint(0, width - w);
    int64_t already = 0;
    for (int64_t i = top; i < top + h; ++i)
      for (int64_t j = left; j < left + w; ++j) already += mask[i * width + j];
    const int64_t added = h * w - already;
    if (added <= 0 || added > max_mask_patches) continue;
    for (int64_t i = top; i < top + h; ++i)
      for (int64_t j = left; j < left + w; ++j) mask[i * width + j] = 1;
    delta = added;
  }
  return delta;
}

at::Tensor BlockMaskingGenerator::operator()(MaskingDraws& draws) const {
  at::Tensor mask = at::zeros({options_.height, options_.width}, at::kByte);
  uint8_t* data = mask.data_ptr<uint8_t>();
  int64_t count = 0;
  while (count < options_.num_masking_patches) {
    const int64_t max_mask_patches = std::min(options_.num_masking_patches - count, max_num_patches_);
    const int64_t delta = add_block(data, max_mask_patches, draws);
    if (delta == 0) break;
    count += delta;
  }
  return mask;
}

}  // namespace albef::data
