// torchvision's ToTensor + Normalize on a tensor of bytes.

#include "albef/vision/pixels.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>

namespace albef::vision {

at::Tensor normalize_pixels(const at::Tensor& pixels) {
  ALBEF_CHECK(pixels.scalar_type() == at::kByte, "normalize_pixels takes 8-bit pixels (uint8), got ",
              pixels.scalar_type());
  ALBEF_CHECK(pixels.dim() >= 3 && pixels.size(-3) == 3, "normalize_pixels takes RGB planes [..., 3, H, W], got ",
              pixels.sizes());
  const auto options = at::TensorOptions().dtype(at::kFloat).device(pixels.device());
  const at::Tensor mean = at::tensor({kMean[0], kMean[1], kMean[2]}).to(options).view({3, 1, 1});
  const at::Tensor std = at::tensor({kStd[0], kStd[1], kStd[2]}).to(options).view({3, 1, 1});
  // torchvision's own float32 steps, each rounded as there: `div(255)`, `sub_(mean)`, `div_(std)`.
  return pixels.to(at::kFloat).div_(255).sub_(mean).div_(std);
}

}  // namespace albef::vision
