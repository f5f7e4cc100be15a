#include "albef/vision/dalle_pixels.h"

#include "albef/core/error.h"
#include "albef/vision/image.h"

#include <ATen/ATen.h>

namespace albef::vision {
namespace {

constexpr double kLogitLaplaceEps = 0.1;  // DALL-E's logit_laplace_eps

}  // namespace

at::Tensor map_pixels(const at::Tensor& x) {
  ALBEF_CHECK(x.scalar_type() == at::kFloat, "expected float32 pixels, got ", x.scalar_type());
  return x.mul(1 - 2 * kLogitLaplaceEps).add(kLogitLaplaceEps);
}

at::Tensor tokenizer_tensor(const cv::Mat& rgb) {
  ALBEF_CHECK(rgb.type() == CV_8UC3, "expected an 8-bit 3-channel image, got OpenCV type ", rgb.type());
  const cv::Mat pixels = rgb.isContinuous() ? rgb : rgb.clone();
  // ToTensor: HWC bytes -> CHW float32 in [0, 1].
  const at::Tensor bytes =
      at::from_blob(const_cast<uint8_t*>(pixels.ptr<uint8_t>()), {pixels.rows, pixels.cols, 3}, at::kByte);
  return map_pixels(bytes.permute({2, 0, 1}).contiguous().to(at::kFloat).div(255));
}

at::Tensor load_tokenizer_image(const std::string& path, int64_t image_res) {
  ALBEF_CHECK(image_res > 0 && image_res % 8 == 0, "image_res must be a positive multiple of 8, got ", image_res);
  return tokenizer_tensor(resize_bicubic_pil(read_rgb(path), static_cast<int>(image_res), static_cast<int>(image_res)));
}

}  // namespace albef::vision
