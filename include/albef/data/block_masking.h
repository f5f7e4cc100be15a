#pragma once
/// @file block_masking.h
/// @brief BEiT's block-wise masking of image patches, as SIMLA's
/// `masking_generator.py` MaskingGenerator draws it for masked image
/// modelling.
///
/// A mask is grown block by block until `num_masking_patches` patches are
/// masked: each block draws an area ~ U(min_num_patches, remaining) and a
/// log aspect ratio ~ U(log min_aspect, log max_aspect), takes
/// h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)), and, when
/// h < height and w < width (strictly), a top-left corner uniformly; the
/// block counts only if it masks between 1 and `remaining` new patches. Ten
/// attempts in a row that mask nothing end the mask early, so a mask may hold
/// fewer patches than asked (74 of 75 happens on 16x16).

#include "albef/vision/augment.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace albef::data {

/// The random draws of the generator, in the official order (Python's
/// `random.uniform` and `random.randint`), so a test can replay recorded ones.
class MaskingDraws {
 public:
  virtual ~MaskingDraws() = default;
  /// `random.uniform(a, b)`: a + (b - a) * U[0, 1); a > b is allowed, as in Python.
  virtual double uniform(double a, double b) = 0;
  /// `random.randint(a, b)`: an integer in [a, b], both ends included; a <= b.
  virtual int64_t randint(int64_t a, int64_t b) = 0;
};

/// albef's own draws, from the train transform's random source (not Python's
/// stream: the same seed gives other masks than the official code, with the
/// same distribution).
class RngMaskingDraws : public MaskingDraws {
 public:
  explicit RngMaskingDraws(vision::Rng& rng) : rng_(rng) {}
  double uniform(double a, double b) override;
  int64_t randint(int64_t a, int64_t b) override;

 private:
  vision::Rng& rng_;
};

/// MaskingGenerator's arguments; the defaults are SIMLA's for a 256-pixel
/// image (dataset/caption_dataset.py: window res/16, 75 patches, at least 16
/// per block).
struct BlockMaskingOptions {
  int64_t height = 16;
  int64_t width = 16;
  int64_t num_masking_patches = 75;
  int64_t min_num_patches = 16;
  std::optional<int64_t> max_num_patches;  ///< per block; num_masking_patches when unset
  double min_aspect = 0.3;
  std::optional<double> max_aspect;  ///< 1 / min_aspect when unset
};

/// MaskingGenerator: stateless, so one instance serves every loader thread.
class BlockMaskingGenerator {
 public:
  /// Checks the options (positive sizes and counts, 0 < min_aspect <= max_aspect).
  explicit BlockMaskingGenerator(BlockMaskingOptions options);

  /// One mask: uint8 [height, width], 1 = masked, row-major as the ViT's
  /// patches.
  at::Tensor operator()(MaskingDraws& draws) const;

  const BlockMaskingOptions& options() const { return options_; }

 private:
  // One `_mask` call: up to ten block attempts; returns the patches it masked.
  int64_t add_block(uint8_t* mask, int64_t max_mask_patches, MaskingDraws& draws) const;

  BlockMaskingOptions options_;
  int64_t max_num_patches_;
  double log_aspect_min_, log_aspect_max_;
};

}  // namespace albef::data
