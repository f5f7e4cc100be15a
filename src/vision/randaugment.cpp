// The ten RandomAugment ops of ALBEF's dataset/randaugment.py (OpenCV and
// NumPy on uint8 RGB arrays), reproduced to the bit, and RandomAugment itself.
// The point-wise ops become lookup tables built with the official arithmetic
// (float32 or float64, truncating casts), Sharpness repeats the official
// float32 operations per value, and the geometric ops call the same OpenCV
// warpAffine with the same float32 matrices.

#include "albef/vision/augment.h"

#include "albef/core/error.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

namespace albef::vision {
namespace {

// Official names, in AugmentOp order.
constexpr const char* kOpNames[] = {"Identity",  "AutoContrast", "Equalize",   "Brightness",
                                    "Sharpness", "ShearX",       "ShearY",     "TranslateX",
                                    "TranslateY", "Rotate"};
constexpr size_t kNumOps = std::size(kOpNames);

void check_rgb(const cv::Mat& rgb) {
  ALBEF_CHECK(rgb.type() == CV_8UC3, "expected an 8-bit 3-channel image, got OpenCV type ", rgb.type());
  ALBEF_CHECK(!rgb.empty(), "the image is empty");
}

// a * b + c rounded twice, as Python evaluates it; the volatile stops a
// compiler targeting FMA from fusing the two operations (one rounding).
double mul_add_unfused(double a, double b, double c) {
  volatile double product = a * b;
  return product + c;
}

// NumPy's float -> uint8 `astype` on x86: truncation toward zero, then the
// low 8 bits (out-of-range values wrap instead of saturating).
uint8_t truncate_wrap(float value) { return static_cast<uint8_t>(static_cast<int>(value)); }

// Applies one table per channel (a plain loop beats cv::LUT's 3-channel path).
cv::Mat apply_channel_tables(const cv::Mat& rgb, const std::array<std::array<uint8_t, 256>, 3>& tables) {
  cv::Mat out(rgb.size(), CV_8UC3);
  for (int y = 0; y < rgb.rows; ++y) {
    const uint8_t* src = rgb.ptr<uint8_t>(y);
    uint8_t* dst = out.ptr<uint8_t>(y);
    for (int x = 0; x < rgb.cols; ++x, src += 3, dst += 3) {
      dst[0] = tables[0][src[0]];
      dst[1] = tables[1][src[1]];
      dst[2] = tables[2][src[2]];
    }
  }
  return out;
}

// The image as one long row when its pixels are contiguous (fewer row tails).
cv::Mat as_rows(const cv::Mat& rgb) { return rgb.isContinuous() ? rgb.reshape(3, 1) : rgb; }

// Per-channel counts of every byte value. Four partial histograms, one per
// pixel of each group of four, keep runs of equal values (flat regions) from
// stalling on the same counter.
std::array<std::array<int64_t, 256>, 3> channel_histograms(const cv::Mat& rgb) {
  std::array<std::array<std::array<uint32_t, 256>, 3>, 4> part{};
  const cv::Mat rows = as_rows(rgb);
  for (int y = 0; y < rows.rows; ++y) {
    const uint8_t* p = rows.ptr<uint8_t>(y);
    int x = 0;
    for (; x + 4 <= rows.cols; x += 4, p += 12)
      for (int k = 0; k < 4; ++k)
        for (int c = 0; c < 3; ++c) ++part[k][c][p[3 * k + c]];
    for (; x < rows.cols; ++x, p += 3)
      for (int c = 0; c < 3; ++c) ++part[0][c][p[c]];
  }
  std::array<std::array<int64_t, 256>, 3> hist{};
  for (const auto& partial : part)
    for (int c = 0; c < 3; ++c)
      for (int v = 0; v < 256; ++v) hist[c][v] += partial[c][v];
  return hist;
}

// Per-channel minimum and maximum. The bytes are folded into 48-byte lanes
// (16 whole pixels, so lane k holds channel k % 3): whole 48-byte chunks
// vectorize, the row's tail goes to the first lanes.
void channel_extremes(const cv::Mat& rgb, std::array<uint8_t, 3>& low, std::array<uint8_t, 3>& high) {
  constexpr int kLane = 48;
  uint8_t lane_low[kLane], lane_high[kLane];
  std::fill(lane_low, lane_low + kLane, 255);
  std::fill(lane_high, lane_high + kLane, 0);
  const cv::Mat rows = as_rows(rgb);
  const int row_bytes = 3 * rows.cols, whole = row_bytes - row_bytes % kLane;
  for (int y = 0; y < rows.rows; ++y) {
    const uint8_t* p = rows.ptr<uint8_t>(y);
    for (int i = 0; i < whole; i += kLane)
      for (int k = 0; k < kLane; ++k) {
        const uint8_t v = p[i + k];
        lane_low[k] = v < lane_low[k] ? v : lane_low[k];
        lane_high[k] = v > lane_high[k] ? v : lane_high[k];
      }
    for (int i = whole; i < row_bytes; ++i) {
      lane_low[i - whole] = std::min(lane_low[i - whole], p[i]);
      lane_high[i - whole] = std::max(lane_high[i - whole], p[i]);
    }
  }
  low.fill(255);
  high.fill(0);
  for (int k = 0; k < kLane; ++k) {
    low[k % 3] = std::min(low[k % 3], lane_low[k]);
    high[k % 3] = std::max(high[k % 3], lane_high[k]);
  }
}

cv::Mat warp(const cv::Mat& rgb, const cv::Mat& matrix) {
  cv::Mat out;
  cv::warpAffine(rgb, out, matrix, rgb.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                 cv::Scalar::all(kAugmentFill));
  return out;
}

// The official matrices are np.float32 arrays: the argument is rounded to
// float before OpenCV widens the matrix back to double.
cv::Mat warp_float32(const cv::Mat& rgb, float m00, float m01, float m02, float m10, float m11,
                     float m12) {
  return warp(rgb, cv::Mat(cv::Matx23f(m00, m01, m02, m10, m11, m12)));
}

}  // namespace

const std::vector<AugmentOp>& albef_augment_ops() {
  static const std::vector<AugmentOp> ops = [] {
    std::vector<AugmentOp> all;
    for (size_t i = 0; i < kNumOps; ++i) all.push_back(static_cast<AugmentOp>(i));
    return all;
  }();
  return ops;
}

const char* augment_op_name(AugmentOp op) {
  const auto index = static_cast<size_t>(op);
  ALBEF_CHECK(index < kNumOps, "invalid AugmentOp ", index);
  return kOpNames[index];
}

AugmentOp augment_op_from_name(const std::string& name) {
  for (size_t i = 0; i < kNumOps; ++i)
    if (name == kOpNames[i]) return static_cast<AugmentOp>(i);
  std::string known;
  for (const char* op_name : kOpNames) known += (known.empty() ? "" : ", ") + std::string(op_name);
  fail("unknown RandomAugment op '", name, "' (known: ", known, ")");
}

double augment_op_argument(AugmentOp op, int magnitude) {
  // Python's `level / MAX_LEVEL` with two ints is a true division.
  const double level = static_cast<double>(magnitude) / kMaxMagnitude;
  switch (op) {
    case AugmentOp::Brightness:
    case AugmentOp::Sharpness:
      return mul_add_unfused(level, 1.8, 0.1);
    case AugmentOp::ShearX:
    case AugmentOp::ShearY:
      return level * 0.3;
    case AugmentOp::TranslateX:
    case AugmentOp::TranslateY:
      return level * 10.0;
    case AugmentOp::Rotate:
      return level * 30.0;
    default:
      return 0.0;
  }
}

bool augment_op_has_sign(AugmentOp op) {
  return op == AugmentOp::ShearX || op == AugmentOp::ShearY || op == AugmentOp::TranslateX ||
         op == AugmentOp::TranslateY || op == AugmentOp::Rotate;
}

bool augment_sign_negates(AugmentOp op, double draw) {
  if (!augment_op_has_sign(op)) return false;
  return op == AugmentOp::Rotate ? draw < 0.5 : draw > 0.5;
}

cv::Mat autocontrast(const cv::Mat& rgb) {
  check_rgb(rgb);
  std::array<uint8_t, 3> low, high;
  channel_extremes(rgb, low, high);
  std::array<std::array<uint8_t, 256>, 3> tables{};
  for (int c = 0; c < 3; ++c) {
    if (high[c] <= low[c]) {
      for (int v = 0; v < 256; ++v) tables[c][v] = static_cast<uint8_t>(v);
      continue;
    }
    const double scale = 255.0 / (high[c] - low[c]);
    // `-low` of a NumPy uint8 scalar wraps to 256 - low: for low > 0 the
    // offset is >= 255 and the whole channel saturates to 255.
    const double offset = static_cast<uint8_t>(-low[c]) * scale;
    for (int v = 0; v < 256; ++v) {
      const double t = std::clamp(mul_add_unfused(v, scale, offset), 0.0, 255.0);
      tables[c][v] = static_cast<uint8_t>(t);
    }
  }
  return apply_channel_tables(rgb, tables);
}

cv::Mat equalize(const cv::Mat& rgb) {
  check_rgb(rgb);
  const auto hist = channel_histograms(rgb);
  std::array<std::array<uint8_t, 256>, 3> tables{};
  for (int c = 0; c < 3; ++c) {
    int last = 255;
    while (hist[c][last] == 0) --last;
    // PIL's step: the pixels of every value but the highest present, / 255.
    int64_t below_last = 0;
    for (int v = 0; v < last; ++v) below_last += hist[c][v];
    const int64_t step = below_last / 255;
    int64_t cumulative = step / 2;
    for (int v = 0; v < 256; ++v) {
      tables[c][v] = step == 0 ? static_cast<uint8_t>(v)
                               : static_cast<uint8_t>(std::min<int64_t>(cumulative / step, 255));
      cumulative += hist[c][v];
    }
  }
  return apply_channel_tables(rgb, tables);
}

cv::Mat brightness(const cv::Mat& rgb, double factor) {
  check_rgb(rgb);
  const float f = static_cast<float>(factor);
  cv::Mat lut(1, 256, CV_8U);
  for (int v = 0; v < 256; ++v)
    lut.at<uint8_t>(v) = static_cast<uint8_t>(std::clamp(static_cast<float>(v) * f, 0.0f, 255.0f));
  cv::Mat out;
  cv::LUT(rgb, lut, out);
  return out;
}

cv::Mat sharpness(const cv::Mat& rgb, double factor) {
  check_rgb(rgb);
  cv::Mat kernel(3, 3, CV_32F, cv::Scalar(1.0f / 13.0f));
  kernel.at<float>(1, 1) = 5.0f / 13.0f;
  cv::Mat degenerate;
  cv::filter2D(rgb, degenerate, -1, kernel);
  if (factor == 0.0) return degenerate;
  cv::Mat out = rgb.clone();
  if (factor == 1.0) return out;
  // NumPy computes float32(factor) * (img - deg), rounds it to float32, then
  // adds deg. The products go through a row buffer, which keeps the two
  // roundings apart (no fused multiply-add) and lets both loops vectorize.
  const float f = static_cast<float>(factor);
  const int row_values = 3 * (rgb.cols - 2);
  std::vector<float> product(static_cast<size_t>(std::max(row_values, 0)));
  for (int y = 1; y + 1 < rgb.rows; ++y) {
    const uint8_t* src = rgb.ptr<uint8_t>(y) + 3;
    const uint8_t* deg = degenerate.ptr<uint8_t>(y) + 3;
    uint8_t* dst = out.ptr<uint8_t>(y) + 3;
    for (int i = 0; i < row_values; ++i) product[i] = f * static_cast<float>(src[i] - deg[i]);
    for (int i = 0; i < row_values; ++i) dst[i] = truncate_wrap(static_cast<float>(deg[i]) + product[i]);
  }
  return out;
}

cv::Mat shear_x(const cv::Mat& rgb, double factor) {
  check_rgb(rgb);
  return warp_float32(rgb, 1.0f, static_cast<float>(factor), 0.0f, 0.0f, 1.0f, 0.0f);
}

cv::Mat shear_y(const cv::Mat& rgb, double factor) {
  check_rgb(rgb);
  return warp_float32(rgb, 1.0f, 0.0f, 0.0f, static_cast<float>(factor), 1.0f, 0.0f);
}

cv::Mat translate_x(const cv::Mat& rgb, double pixels) {
  check_rgb(rgb);
  return warp_float32(rgb, 1.0f, 0.0f, static_cast<float>(-pixels), 0.0f, 1.0f, 0.0f);
}

cv::Mat translate_y(const cv::Mat& rgb, double pixels) {
  check_rgb(rgb);
  return warp_float32(rgb, 1.0f, 0.0f, 0.0f, 0.0f, 1.0f, static_cast<float>(-pixels));
}

cv::Mat rotate(const cv::Mat& rgb, double degrees) {
  check_rgb(rgb);
  // The official centre is a Python (W/2, H/2) passed as cv::Point2f.
  const cv::Point2f centre(static_cast<float>(rgb.cols / 2.0), static_cast<float>(rgb.rows / 2.0));
  return warp(rgb, cv::getRotationMatrix2D(centre, degrees, 1.0));
}

cv::Mat apply_augment_op(const cv::Mat& rgb, AugmentOp op, int magnitude, bool negative) {
  double arg = augment_op_argument(op, magnitude);
  if (negative && augment_op_has_sign(op)) arg = -arg;
  switch (op) {
    case AugmentOp::Identity:
      check_rgb(rgb);
      return rgb.clone();
    case AugmentOp::AutoContrast:
      return autocontrast(rgb);
    case AugmentOp::Equalize:
      return equalize(rgb);
    case AugmentOp::Brightness:
      return brightness(rgb, arg);
    case AugmentOp::Sharpness:
      return sharpness(rgb, arg);
    case AugmentOp::ShearX:
      return shear_x(rgb, arg);
    case AugmentOp::ShearY:
      return shear_y(rgb, arg);
    case AugmentOp::TranslateX:
      return translate_x(rgb, arg);
    case AugmentOp::TranslateY:
      return translate_y(rgb, arg);
    case AugmentOp::Rotate:
      return rotate(rgb, arg);
  }
  throw Error(str_cat("apply_augment_op: invalid AugmentOp ", static_cast<int>(op)));
}

RandomAugment::RandomAugment(int num_ops, int magnitude, std::vector<AugmentOp> ops)
    : num_ops_(num_ops), magnitude_(magnitude), ops_(std::move(ops)) {
  ALBEF_CHECK(num_ops_ >= 0, "num_ops must be >= 0, got ", num_ops_);
  ALBEF_CHECK(magnitude_ >= 0 && magnitude_ <= kMaxMagnitude, "magnitude must be in [0, ",
              kMaxMagnitude, "], got ", magnitude_);
  ALBEF_CHECK(num_ops_ == 0 || !ops_.empty(), "no ops to choose from");
}

std::vector<AugmentStep> RandomAugment::sample(Rng& rng) const {
  std::vector<AugmentStep> steps(static_cast<size_t>(num_ops_));
  for (AugmentStep& step : steps)
    step.op = ops_[static_cast<size_t>(rng.below(static_cast<int64_t>(ops_.size())))];
  for (AugmentStep& step : steps) {
    step.applied = !(rng.uniform() > 0.5);
    if (step.applied && augment_op_has_sign(step.op))
      step.negative = augment_sign_negates(step.op, rng.uniform());
  }
  return steps;
}

cv::Mat RandomAugment::apply(const cv::Mat& rgb, const std::vector<AugmentStep>& steps) const {
  check_rgb(rgb);
  cv::Mat current = rgb;
  for (const AugmentStep& step : steps)
    if (step.applied) current = apply_augment_op(current, step.op, magnitude_, step.negative);
  // The result never shares the caller's pixels, even when every step was skipped.
  return current.data == rgb.data ? rgb.clone() : current;
}

cv::Mat RandomAugment::operator()(const cv::Mat& rgb, Rng& rng) const { return apply(rgb, sample(rng)); }

}  // namespace albef::vision
