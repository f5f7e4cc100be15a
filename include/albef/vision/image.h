#pragma once
/// @file image.h
/// @brief Image decoding and the official (torchvision-on-PIL) transforms.
///
/// ALBEF's test transform is `Resize((res, res), BICUBIC)` on a PIL image,
/// `ToTensor`, `Normalize(CLIP mean, CLIP std)`. PIL's bicubic resampling is
/// antialiased (the kernel support widens by the downscale factor) and runs
/// as two separable 8-bit passes (horizontal, then vertical) with 22-bit
/// fixed-point weights and rounding to uint8 between the passes; it is
/// reproduced here exactly, since OpenCV's and LibTorch's bicubic differ.

#include "albef/vision/pixels.h"

#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace albef::vision {

/// Decodes a JPEG/PNG/... file into 8-bit RGB (CV_8UC3, R first), as PIL's
/// `Image.open(path).convert('RGB')` would: EXIF orientation ignored, alpha
/// dropped, grey replicated, 16-bit PNG samples reduced as PIL does (high
/// byte; plain 16-bit grey clipped at 255). Throws albef::Error naming the
/// file when it is missing, empty, truncated (JPEG without EOI, PNG without
/// IEND), corrupt or not an image.
cv::Mat read_rgb(const std::string& path);

/// read_rgb of a file's bytes already in memory (an upload); errors name `name`.
cv::Mat decode_rgb(std::string_view bytes, const std::string& name);

/// {width, height} from a PNG's or JPEG's header, without decoding; nullopt
/// for other formats or a header that does not say. Lets a service refuse an
/// image too large to decode before it allocates the pixels.
std::optional<std::pair<int64_t, int64_t>> image_dimensions(std::string_view bytes);

/// A crop box in input pixel coordinates: [x0, x1) x [y0, y1).
struct Box {
  double x0, y0, x1, y1;
};

/// PIL `Image.resize((out_width, out_height), BICUBIC, box)` on an RGB
/// CV_8UC3 image; `box` defaults to the whole image. Bit-exact with Pillow.
cv::Mat resize_bicubic_pil(const cv::Mat& rgb, int out_width, int out_height);
cv::Mat resize_bicubic_pil(const cv::Mat& rgb, int out_width, int out_height, const Box& box);

/// torchvision `resized_crop(img, top, left, height, width, [out_height,
/// out_width], BICUBIC)` on a PIL image, i.e. PIL `crop((left, top, left +
/// width, top + height)).resize(...)`. Not the same as resizing with a
/// `box`: the box version lets the filter read pixels just outside the box,
/// the crop clamps it to the crop. The crop must lie inside the image.
cv::Mat resized_crop_pil(const cv::Mat& rgb, int top, int left, int height, int width, int out_width,
                         int out_height);

/// torchvision `ToTensor` + `Normalize(kMean, kStd)`: float32 [3, H, W].
at::Tensor to_normalized_tensor(const cv::Mat& rgb);

/// The same image's 8-bit planes, before `ToTensor`: uint8 [3, H, W]
/// (normalize_pixels of it equals to_normalized_tensor).
at::Tensor to_pixel_tensor(const cv::Mat& rgb);

/// The official test transform of one file: float32 [3, res, res].
at::Tensor load_test_image(const std::string& path, int image_res);

/// The official test transform up to its 8-bit pixels, which the image
/// encoder takes as they are: uint8 [3, res, res], a quarter of
/// load_test_image's memory.
at::Tensor load_test_pixels(const std::string& path, int image_res);

/// load_test_pixels of every file, decoded on all cores: uint8 [N, 3, res, res]
/// (normalize_pixels of it: the official test transform of the batch).
at::Tensor load_test_pixels(const std::vector<std::string>& paths, int image_res);

}  // namespace albef::vision
