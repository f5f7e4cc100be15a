#pragma once
/// @file augment.h
/// @brief ALBEF's train-time image transform: RandomResizedCrop, horizontal
/// flip and the OpenCV-based RandomAugment of the official
/// `dataset/randaugment.py`, then ToTensor + Normalize.
///
/// Every deterministic piece reproduces the official pipeline to the bit
/// (OpenCV 4.6, NumPy 1.24, PIL 9.4, torchvision 0.14), including its quirks:
/// AutoContrast's uint8 negation that turns a channel whose minimum is above 0
/// all white, Sharpness wrapping out-of-range values modulo 256 instead of
/// clipping, shear about the top-left corner, rotation about (W/2, H/2).
///
/// The random decisions come from an explicit `Rng` passed to each call, never
/// from global state, so data-loader threads can each draw a reproducible
/// stream per (seed, epoch, sample). These streams are not torch's or numpy's:
/// the same seed gives different crops and ops than the Python code, with the
/// same distribution. Every sampler also has a "replay" counterpart that
/// applies given decisions, which is how the official outputs are matched.

#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace albef::vision {

/// The random source of the train transform: a 64-bit Mersenne Twister with
/// draws defined here (not by `std::*_distribution`, whose output differs
/// between standard libraries), so a seed gives the same stream everywhere.
/// Not thread-safe: give each thread or sample its own.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  /// The stream of one sample in one epoch: the three numbers are hashed
  /// together (splitmix64), so neighbouring indices or epochs get unrelated
  /// streams and the result does not depend on which thread draws it.
  static Rng for_sample(uint64_t seed, uint64_t epoch, uint64_t index);

  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Uniform in [low, high).
  double uniform(double low, double high);
  /// Uniform integer in [0, n), without modulo bias; n must be positive.
  int64_t below(int64_t n);

 private:
  std::mt19937_64 engine_;
};

// ---------------------------------------------------------------------------
// RandomAugment ops

/// The ops of ALBEF's RandomAugment list, in its order.
enum class AugmentOp {
  Identity,
  AutoContrast,
  Equalize,
  Brightness,
  Sharpness,
  ShearX,
  ShearY,
  TranslateX,
  TranslateY,
  Rotate,
};

/// All ten ops: the `augs` list of ALBEF's train transforms.
const std::vector<AugmentOp>& albef_augment_ops();

/// The official name ("ShearX", ...).
const char* augment_op_name(AugmentOp op);
/// The op of an official name; throws albef::Error for an unknown name.
AugmentOp augment_op_from_name(const std::string& name);

/// The official MAX_LEVEL: magnitudes run from 0 to 10.
constexpr int kMaxMagnitude = 10;
/// The official border fill of the geometric ops (grey 128 in every channel).
constexpr int kAugmentFill = 128;

/// The official level-to-argument mapping (`arg_dict`) before the sign:
/// Brightness/Sharpness factor (m/10)*1.8+0.1, shear factor (m/10)*0.3,
/// translation (m/10)*10 pixels, rotation (m/10)*30 degrees; 0 for the ops
/// that take no argument.
double augment_op_argument(AugmentOp op, int magnitude);

/// Whether the op draws a random sign for its argument (shears,
/// translations, rotation).
bool augment_op_has_sign(AugmentOp op);

/// The official sign rule for a draw in [0, 1): shears and translations are
/// negated when the draw is > 0.5, but Rotate when it is < 0.5.
bool augment_sign_negates(AugmentOp op, double draw);

/// `autocontrast_func` (cutoff 0): per channel, stretch [min, max] to
/// [0, 255], except that a channel whose minimum is above 0 comes out all
/// 255 (the official code negates the minimum as a uint8). Constant channels
/// are left alone.
cv::Mat autocontrast(const cv::Mat& rgb);

/// `equalize_func`: PIL-style histogram equalization per channel. Exact for
/// images under 2^24 pixels (the official float32 histogram counts are
/// integers up to there).
cv::Mat equalize(const cv::Mat& rgb);

/// `brightness_func`: every value times `factor` in float32, clipped to
/// [0, 255] and truncated.
cv::Mat brightness(const cv::Mat& rgb, double factor);

/// `sharpness_func`: blends with the 3x3 smoothing filter [1 1 1; 1 5 1;
/// 1 1 1]/13 as `deg + factor * (img - deg)` in float32, on the interior only
/// (the one-pixel border keeps the input), converting to uint8 by truncation
/// modulo 256 (275.5 -> 19, -3.2 -> 253) as the official unclipped cast does
/// on x86. factor 0 returns the filtered image, factor 1 the input.
cv::Mat sharpness(const cv::Mat& rgb, double factor);

/// `shear_x_func`: output (x, y) samples input (x + factor * y, y)
/// (bilinear, OpenCV fixed point, border filled with kAugmentFill).
cv::Mat shear_x(const cv::Mat& rgb, double factor);
/// `shear_y_func`: output (x, y) samples input (x, y + factor * x).
cv::Mat shear_y(const cv::Mat& rgb, double factor);
/// `translate_x_func`: positive `pixels` moves the content left.
cv::Mat translate_x(const cv::Mat& rgb, double pixels);
/// `translate_y_func`: positive `pixels` moves the content up.
cv::Mat translate_y(const cv::Mat& rgb, double pixels);
/// `rotate_func`: counter-clockwise on screen for positive `degrees`, about
/// (W/2, H/2) (not the centre pixel), size kept, corners filled.
cv::Mat rotate(const cv::Mat& rgb, double degrees);

/// One op at `magnitude` (official `func_dict[op](img, *arg_dict[op](m))`)
/// with its argument negated when `negative` (ignored for unsigned ops).
cv::Mat apply_augment_op(const cv::Mat& rgb, AugmentOp op, int magnitude, bool negative);

/// One sampled step of RandomAugment.
struct AugmentStep {
  AugmentOp op = AugmentOp::Identity;
  /// False when the step's probability draw skipped it.
  bool applied = false;
  /// The argument is negated (only meaningful for applied signed ops).
  bool negative = false;
};

/// The official `RandomAugment(N, M, isPIL=True, augs)`: draws N ops with
/// replacement, each then applied with probability 0.5 at magnitude M. The
/// input and output are RGB CV_8UC3 images; the input is never modified.
class RandomAugment {
 public:
  explicit RandomAugment(int num_ops = 2, int magnitude = 7,
                         std::vector<AugmentOp> ops = albef_augment_ops());

  /// Draws the decisions in the official order: the N ops, then per op the
  /// skip draw (skipped when > 0.5) and, if applied and signed, the sign draw.
  std::vector<AugmentStep> sample(Rng& rng) const;
  /// Applies given decisions in order (skipped steps do nothing).
  cv::Mat apply(const cv::Mat& rgb, const std::vector<AugmentStep>& steps) const;
  /// `apply(rgb, sample(rng))`.
  cv::Mat operator()(const cv::Mat& rgb, Rng& rng) const;

  int num_ops() const { return num_ops_; }
  int magnitude() const { return magnitude_; }
  const std::vector<AugmentOp>& ops() const { return ops_; }

 private:
  int num_ops_;
  int magnitude_;
  std::vector<AugmentOp> ops_;
};

// ---------------------------------------------------------------------------
// RandomResizedCrop and the whole train transform

/// A crop in pixels, as torchvision's `(i, j, h, w)`.
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};

/// torchvision `RandomResizedCrop.get_params` for a `width` x `height` image:
/// up to 10 tries of a target area `area * U(scale)` and an aspect ratio
/// `exp(U(log ratio))`, w = round(sqrt(area * ratio)), h = round(sqrt(area /
/// ratio)) (half to even, as Python), accepted when it fits, then a uniform
/// position; after 10 misses, the centred largest crop with the ratio clamped
/// to [ratio_min, ratio_max]. The returned box always lies in the image.
CropBox sample_crop_box(int width, int height, double scale_min, double scale_max, Rng& rng,
                        double ratio_min = 3.0 / 4.0, double ratio_max = 4.0 / 3.0);

/// The scale lower bound of ALBEF's pretraining transform.
constexpr double kPretrainScaleMin = 0.2;
/// The scale lower bound of ALBEF's fine-tuning `train_transform`.
constexpr double kFinetuneScaleMin = 0.5;

/// Every random decision of one train transform call.
struct TrainDecisions {
  CropBox crop;
  bool flip = false;
  std::vector<AugmentStep> augment;
};

/// The images after each stage of one call (`flipped` and `cropped` share
/// pixels when there is no flip; `augmented` is the input of `tensor`).
struct TrainStages {
  cv::Mat cropped, flipped, augmented;
  at::Tensor tensor;
};

/// ALBEF's train transform: RandomResizedCrop(image_res, scale=(scale_min,
/// 1), ratio=(3/4, 4/3), BICUBIC) -> RandomHorizontalFlip(0.5) ->
/// RandomAugment(2, 7, all ten ops) -> ToTensor -> Normalize. Thread-safe
/// (const); the randomness comes from the Rng of each call.
class TrainTransform {
 public:
  explicit TrainTransform(int image_res, double scale_min = kPretrainScaleMin);

  /// Draws the decisions for a `width` x `height` image, in the official
  /// order: crop box, flip (when < 0.5), RandomAugment.
  TrainDecisions sample(int width, int height, Rng& rng) const;
  /// Applies given decisions to an RGB CV_8UC3 image.
  TrainStages replay(const cv::Mat& rgb, const TrainDecisions& decisions) const;
  /// The transform of one image: float32 [3, image_res, image_res].
  at::Tensor operator()(const cv::Mat& rgb, Rng& rng) const;

  int image_res() const { return image_res_; }
  double scale_min() const { return scale_min_; }
  const RandomAugment& augment() const { return augment_; }

 private:
  int image_res_;
  double scale_min_;
  RandomAugment augment_;
};

}  // namespace albef::vision
