// Pillow 9.4's `ImagingResample` (libImaging/Resample.c) for 8-bit RGB and
// the BICUBIC filter, reproduced to the bit: the same double-precision
// kernel weights, the same rounding to 22-bit fixed point, the same integer
// accumulation and clipping, and the same pass structure (horizontal pass
// over only the rows the vertical pass needs, rounding to uint8 between).

#include "albef/vision/image.h"

#include "albef/core/error.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace albef::vision {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

// Keys' cubic with a = -0.5, support 2 (Pillow's bicubic_filter).
double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Pillow's clip8: the accumulator is shifted down and clamped; any negative
// accumulator gives 0.
uint8_t clip8(int32_t acc) {
  if (acc < 0) return 0;
  const int32_t value = acc >> kPrecisionBits;
  return value > 255 ? 255 : static_cast<uint8_t>(value);
}

// Fixed-point weights for one axis: output pixel i reads `count[i]` input
// pixels from `first[i]` with weights `weights[i * ksize ...]`.
struct AxisKernel {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

// precompute_coeffs + normalize_coeffs_8bpc. The box edges are floats, as in
// Pillow's C API, so the scale is computed from a float difference.
AxisKernel precompute(int in_size, float in0, float in1, int out_size) {
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  AxisKernel kernel;
  kernel.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  kernel.first.resize(out_size);
  kernel.count.resize(out_size);
  kernel.weights.assign(static_cast<size_t>(out_size) * kernel.ksize, 0);
  std::vector<double> w(kernel.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double sum = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = bicubic((x + xmin - center + 0.5) * ss);
      sum += w[x];
    }
    int32_t* k = &kernel.weights[static_cast<size_t>(xx) * kernel.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double normalised = sum != 0.0 ? w[x] / sum : w[x];
      k[x] = normalised < 0 ? static_cast<int32_t>(-0.5 + normalised * (1 << kPrecisionBits))
                            : static_cast<int32_t>(0.5 + normalised * (1 << kPrecisionBits));
    }
    kernel.first[xx] = xmin;
    kernel.count[xx] = xmax;
  }
  return kernel;
}

// Output row r is computed from input row r + row_offset.
void horizontal_pass(const cv::Mat& in, int row_offset, const AxisKernel& kernel, cv::Mat& out) {
  const int out_width = out.cols;
  for (int y = 0; y < out.rows; ++y) {
    const uint8_t* src = in.ptr<uint8_t>(y + row_offset);
    uint8_t* dst = out.ptr<uint8_t>(y);
    for (int xx = 0; xx < out_width; ++xx) {
      const int32_t* k = &kernel.weights[static_cast<size_t>(xx) * kernel.ksize];
      const uint8_t* p = src + 3 * kernel.first[xx];
      int32_t s0 = kHalf, s1 = kHalf, s2 = kHalf;
      for (int x = 0, n = kernel.count[xx]; x < n; ++x, p += 3) {
        s0 += p[0] * k[x];
        s1 += p[1] * k[x];
        s2 += p[2] * k[x];
      }
      dst[3 * xx + 0] = clip8(s0);
      dst[3 * xx + 1] = clip8(s1);
      dst[3 * xx + 2] = clip8(s2);
    }
  }
}

// Pillow loops pixel by pixel; accumulating whole rows instead gives the
// same integers (exact int32 sums) with contiguous memory access.
void vertical_pass(const cv::Mat& in, int row_offset, const AxisKernel& kernel, cv::Mat& out) {
  const int row_len = out.cols * 3;
  std::vector<int32_t> acc(row_len);
  for (int yy = 0; yy < out.rows; ++yy) {
    std::fill(acc.begin(), acc.end(), kHalf);
    const int32_t* k = &kernel.weights[static_cast<size_t>(yy) * kernel.ksize];
    for (int y = 0, n = kernel.count[yy]; y < n; ++y) {
      const uint8_t* src = in.ptr<uint8_t>(kernel.first[yy] + y - row_offset);
      const int32_t weight = k[y];
      for (int i = 0; i < row_len; ++i) acc[i] += src[i] * weight;
    }
    uint8_t* dst = out.ptr<uint8_t>(yy);
    for (int i = 0; i < row_len; ++i) dst[i] = clip8(acc[i]);
  }
}

}  // namespace

cv::Mat resize_bicubic_pil(const cv::Mat& rgb, int out_width, int out_height) {
  return resize_bicubic_pil(rgb, out_width, out_height,
                            Box{0.0, 0.0, static_cast<double>(rgb.cols), static_cast<double>(rgb.rows)});
}

cv::Mat resize_bicubic_pil(const cv::Mat& rgb, int out_width, int out_height, const Box& box) {
  ALBEF_CHECK(rgb.type() == CV_8UC3 && !rgb.empty(), "expected a non-empty 8-bit 3-channel image, got OpenCV type ",
              rgb.type(), " of size ", rgb.cols, "x", rgb.rows);
  ALBEF_CHECK(out_width > 0 && out_height > 0, "output size must be positive, got ", out_width, "x", out_height);
  // Pillow's C API takes the box as float.
  const float x0 = static_cast<float>(box.x0), y0 = static_cast<float>(box.y0);
  const float x1 = static_cast<float>(box.x1), y1 = static_cast<float>(box.y1);
  ALBEF_CHECK(x0 >= 0 && y0 >= 0, "box offset can't be negative");
  ALBEF_CHECK(x1 <= rgb.cols && y1 <= rgb.rows, "box can't exceed the image size ", rgb.cols, "x", rgb.rows);
  ALBEF_CHECK(x1 - x0 >= 0 && y1 - y0 >= 0, "box can't be empty");

  // Pillow's conditions, including its comparison of the box's right/bottom
  // edge with the output (not input) size.
  const bool need_horizontal = out_width != rgb.cols || x0 != 0 || x1 != out_width;
  const bool need_vertical = out_height != rgb.rows || y0 != 0 || y1 != out_height;
  if (!need_horizontal && !need_vertical) return rgb.clone();

  const AxisKernel horizontal = precompute(rgb.cols, x0, x1, out_width);
  const AxisKernel vertical = precompute(rgb.rows, y0, y1, out_height);

  cv::Mat source = rgb;
  int row_offset = 0;
  if (need_horizontal) {
    // Only the input rows the vertical pass reads.
    const int first_row = vertical.first.front();
    const int last_row = vertical.first.back() + vertical.count.back();
    cv::Mat narrowed(last_row - first_row, out_width, CV_8UC3);
    horizontal_pass(rgb, first_row, horizontal, narrowed);
    if (!need_vertical) return narrowed;
    source = narrowed;
    row_offset = first_row;
  }
  cv::Mat out(out_height, source.cols, CV_8UC3);
  vertical_pass(source, row_offset, vertical, out);
  return out;
}

cv::Mat resized_crop_pil(const cv::Mat& rgb, int top, int left, int height, int width, int out_width,
                         int out_height) {
  ALBEF_CHECK(top >= 0 && left >= 0 && height > 0 && width > 0 && top + height <= rgb.rows &&
                  left + width <= rgb.cols,
              "crop (top ", top, ", left ", left, ", height ", height, ", width ", width,
              ") is not inside the ", rgb.cols, "x", rgb.rows, " image");
  return resize_bicubic_pil(rgb(cv::Rect(left, top, width, height)), out_width, out_height);
}

}  // namespace albef::vision
