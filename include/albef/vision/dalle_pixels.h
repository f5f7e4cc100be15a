#pragma once
/// @file dalle_pixels.h
/// @brief The image as DALL-E's dVAE reads it (SIMLA's visual tokenizer):
/// pixels in [0, 1] mapped to [0.1, 0.9].

#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <string>

namespace albef::vision {

/// DALL-E's `map_pixels`: x * 0.8 + 0.1 (pixels in [0, 1] to [0.1, 0.9]).
at::Tensor map_pixels(const at::Tensor& x);

/// ToTensor + map_pixels of an RGB CV_8UC3 image: float32 [3, H, W] in
/// [0.1, 0.9], what the dVAE reads.
at::Tensor tokenizer_tensor(const cv::Mat& rgb);

/// The tokenizer's view of an image file: PIL bicubic resize to res x res,
/// ToTensor, map_pixels: float32 [3, res, res] (SIMLA's tokenizer input
/// without its random crop, flip and RandAugment).
at::Tensor load_tokenizer_image(const std::string& path, int64_t image_res);

}  // namespace albef::vision
