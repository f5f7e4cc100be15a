// torchvision's ToTensor + Normalize and the official test transform.

#include "albef/vision/image.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>
#include <cstdint>

namespace albef::vision {
namespace {

// Every output value depends only on (channel, byte), so the float32 chain
// of torchvision (`div(255)`, then `sub_(mean)`, then `div_(std)`, each
// rounded to float) is evaluated once per byte value. normalize_pixels runs
// the same steps as tensor ops on a batch (any device); here, one image in a
// loader's worker thread, a plain loop keeps ATen's threads out of it.
using Table = std::array<std::array<float, 256>, 3>;

const Table& normalisation_table() {
  static const Table table = [] {
    Table t{};
    for (int c = 0; c < 3; ++c)
      for (int v = 0; v < 256; ++v) {
        const float x = static_cast<float>(v) / 255.0f;
        t[c][v] = (x - kMean[c]) / kStd[c];
      }
    return t;
  }();
  return table;
}

}  // namespace

at::Tensor to_normalized_tensor(const cv::Mat& rgb) {
  ALBEF_CHECK(rgb.type() == CV_8UC3, "expected an 8-bit 3-channel image, got OpenCV type ", rgb.type());
  const Table& table = normalisation_table();
  const int64_t height = rgb.rows, width = rgb.cols, plane = height * width;
  at::Tensor out = at::empty({3, height, width}, at::kFloat);
  float* r = out.data_ptr<float>();
  float* g = r + plane;
  float* b = g + plane;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* src = rgb.ptr<uint8_t>(static_cast<int>(y));
    const int64_t row = y * width;
    for (int64_t x = 0; x < width; ++x, src += 3) {
      r[row + x] = table[0][src[0]];
      g[row + x] = table[1][src[1]];
      b[row + x] = table[2][src[2]];
    }
  }
  return out;
}

at::Tensor to_pixel_tensor(const cv::Mat& rgb) {
  ALBEF_CHECK(rgb.type() == CV_8UC3, "expected an 8-bit 3-channel image, got OpenCV type ", rgb.type());
  const cv::Mat dense = rgb.isContinuous() ? rgb : rgb.clone();  // a crop's rows are apart
  // Interleaved rows (H, W, 3) to planes (3, H, W).
  return at::from_blob(dense.data, {dense.rows, dense.cols, 3}, at::kByte).permute({2, 0, 1}).contiguous();
}

at::Tensor load_test_image(const std::string& path, int image_res) {
  ALBEF_CHECK(image_res > 0, "image_res must be positive, got ", image_res);
  return to_normalized_tensor(resize_bicubic_pil(read_rgb(path), image_res, image_res));
}

at::Tensor load_test_pixels(const std::string& path, int image_res) {
  ALBEF_CHECK(image_res > 0, "image_res must be positive, got ", image_res);
  return to_pixel_tensor(resize_bicubic_pil(read_rgb(path), image_res, image_res));
}

at::Tensor load_test_pixels(const std::vector<std::string>& paths, int image_res) {
  ALBEF_CHECK(image_res > 0, "image_res must be positive, got ", image_res);
  at::Tensor pixels = at::empty({static_cast<int64_t>(paths.size()), 3, image_res, image_res}, at::kByte);
  // Decoding and resizing dominate small batches; spread them over the cores.
  at::parallel_for(0, static_cast<int64_t>(paths.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) pixels[i].copy_(load_test_pixels(paths[i], image_res));
  });
  return pixels;
}

}  // namespace albef::vision
