// The random source, torchvision's RandomResizedCrop sampling and ALBEF's
// train transform built from them, the PIL-exact crop and the ops of
// randaugment.cpp.

#include "albef/vision/augment.h"

#include "albef/core/error.h"
#include "albef/vision/image.h"

#include <opencv2/core.hpp>

#include <cmath>

namespace albef::vision {
namespace {

// splitmix64's output function: a bijective 64-bit mix.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Python's round() of a non-negative double: half to even (the default
// floating-point rounding mode).
int round_half_even(double value) { return static_cast<int>(std::nearbyint(value)); }

constexpr int kCropAttempts = 10;

}  // namespace

Rng Rng::for_sample(uint64_t seed, uint64_t epoch, uint64_t index) {
  return Rng(splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index));
}

double Rng::uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

double Rng::uniform(double low, double high) { return low + (high - low) * uniform(); }

int64_t Rng::below(int64_t n) {
  ALBEF_CHECK(n > 0, "the range must be positive, got ", n);
  const auto range = static_cast<uint64_t>(n);
  // Drop the 2^64 mod n lowest outputs so that every residue is equally likely.
  const uint64_t reject_below = (0 - range) % range;
  uint64_t x;
  do {
    x = engine_();
  } while (x < reject_below);
  return static_cast<int64_t>(x % range);
}

CropBox sample_crop_box(int width, int height, double scale_min, double scale_max, Rng& rng,
                        double ratio_min, double ratio_max) {
  ALBEF_CHECK(width > 0 && height > 0, "bad image size ", width, "x", height);
  ALBEF_CHECK(scale_min > 0 && scale_min <= scale_max, "bad scale range (", scale_min, ", ", scale_max, ")");
  ALBEF_CHECK(ratio_min > 0 && ratio_min <= ratio_max, "bad ratio range (", ratio_min, ", ", ratio_max, ")");
  const double area = static_cast<double>(width) * height;
  const double log_ratio_min = std::log(ratio_min), log_ratio_max = std::log(ratio_max);
  CropBox box;
  for (int attempt = 0; attempt < kCropAttempts; ++attempt) {
    const double target_area = area * rng.uniform(scale_min, scale_max);
    const double ratio = std::exp(rng.uniform(log_ratio_min, log_ratio_max));
    const double w = std::nearbyint(std::sqrt(target_area * ratio));
    const double h = std::nearbyint(std::sqrt(target_area / ratio));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      box.width = static_cast<int>(w);
      box.height = static_cast<int>(h);
      box.top = static_cast<int>(rng.below(height - box.height + 1));
      box.left = static_cast<int>(rng.below(width - box.width + 1));
      return box;
    }
  }
  // Centred fallback: the whole image, cut to the nearest allowed ratio.
  const double in_ratio = static_cast<double>(width) / height;
  box.width = width;
  box.height = height;
  if (in_ratio < ratio_min)
    box.height = round_half_even(width / ratio_min);
  else if (in_ratio > ratio_max)
    box.width = round_half_even(height * ratio_max);
  box.top = (height - box.height) / 2;
  box.left = (width - box.width) / 2;
  return box;
}

TrainTransform::TrainTransform(int image_res, double scale_min)
    : image_res_(image_res), scale_min_(scale_min), augment_(2, 7, albef_augment_ops()) {
  ALBEF_CHECK(image_res_ > 0, "image_res must be positive, got ", image_res_);
  ALBEF_CHECK(scale_min_ > 0 && scale_min_ <= 1, "scale_min must be in (0, 1], got ", scale_min_);
}

TrainDecisions TrainTransform::sample(int width, int height, Rng& rng) const {
  TrainDecisions decisions;
  decisions.crop = sample_crop_box(width, height, scale_min_, 1.0, rng);
  decisions.flip = rng.uniform() < 0.5;
  decisions.augment = augment_.sample(rng);
  return decisions;
}

TrainStages TrainTransform::replay(const cv::Mat& rgb, const TrainDecisions& decisions) const {
  ALBEF_CHECK(rgb.type() == CV_8UC3, "expected an 8-bit 3-channel image, got OpenCV type ", rgb.type());
  const CropBox& crop = decisions.crop;
  TrainStages stages;
  stages.cropped =
      resized_crop_pil(rgb, crop.top, crop.left, crop.height, crop.width, image_res_, image_res_);
  if (decisions.flip)
    cv::flip(stages.cropped, stages.flipped, 1);
  else
    stages.flipped = stages.cropped;
  stages.augmented = augment_.apply(stages.flipped, decisions.augment);
  stages.tensor = to_normalized_tensor(stages.augmented);
  return stages;
}

at::Tensor TrainTransform::operator()(const cv::Mat& rgb, Rng& rng) const {
  return replay(rgb, sample(rgb.cols, rgb.rows, rng)).tensor;
}

}  // namespace albef::vision
