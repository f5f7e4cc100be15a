#pragma once
/// @file pixels.h
/// @brief Images as 8-bit pixels and the official normalisation, without
/// OpenCV: what the image encoder needs to take a batch held as bytes.
///
/// The test transform's resize ends in 8-bit pixels (PIL resamples bytes);
/// only `ToTensor` + `Normalize` make floats of them. A batch held as those
/// bytes takes a quarter of the memory of its float32 form, and the image
/// encoder normalises it a pass of images at a time (PatchEmbed): the same
/// float32 values, bit for bit.

#include <ATen/core/Tensor.h>

namespace albef::vision {

/// The normalisation ALBEF uses (CLIP's statistics).
constexpr float kMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
constexpr float kStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/// torchvision `ToTensor` + `Normalize(kMean, kStd)` of 8-bit RGB planes:
/// uint8 [..., 3, H, W] -> float32 of the same shape, on the same device.
at::Tensor normalize_pixels(const at::Tensor& pixels);

}  // namespace albef::vision
