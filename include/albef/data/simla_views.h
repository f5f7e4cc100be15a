#pragma once
/// @file simla_views.h
/// @brief What SIMLA's pretraining dataset makes of one image: the ViT's
/// view, the dVAE tokenizer's view and the masked-patch mask.
///
/// The official `pretrain_dataset` augments the two views independently
/// (dataset/__init__.py: each its own RandomResizedCrop(scale 0.2..1), flip
/// and RandomAugment), so the visual token of a cell describes another part
/// of the image than the ViT patch at the same position, and masked image
/// modelling predicts tokens of pixels the patch never saw. By default the
/// tokenizer's view here is the ViT's augmented view (same crop, flip and
/// RandomAugment ops) resized to the tokenizer's resolution, so token k and
/// patch k cover the same pixels, as in BEiT; `independent_views` keeps the
/// official behaviour.

#include "albef/data/block_masking.h"
#include "albef/vision/augment.h"

#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

namespace albef::data {

/// One sample's three tensors.
struct SimlaViews {
  at::Tensor image;               ///< float32 [3, R, R], normalised: the ViT's view
  at::Tensor image_for_tokenization;  ///< float32 [3, R/2, R/2] in [0.1, 0.9] (map_pixels)
  at::Tensor masks;               ///< uint8 [R/16, R/16], 1 = masked patch
};

struct SimlaViewOptions {
  int image_res = 256;
  /// The official, unaligned views (each augmented on its own).
  bool independent_views = false;
  /// The patch grid is set from image_res (R/16 x R/16); the rest as SIMLA's.
  BlockMaskingOptions masking;
};

/// The three tensors of a sample; const and thread-safe (the randomness
/// comes from each call's Rng).
class SimlaViewTransform {
 public:
  explicit SimlaViewTransform(SimlaViewOptions options);
  SimlaViews operator()(const cv::Mat& rgb, vision::Rng& rng) const;
  const SimlaViewOptions& options() const { return options_; }

 private:
  SimlaViewOptions options_;
  vision::TrainTransform vit_transform_;
  vision::TrainTransform tokenizer_transform_;  // the official independent view, at R/2
  BlockMaskingGenerator masking_;
};

}  // namespace albef::data
