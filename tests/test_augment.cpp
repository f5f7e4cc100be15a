// The train-time transform against the official pipeline's fixtures
// (dataset/randaugment.py on OpenCV 4.6 / NumPy 1.24, torchvision 0.14 on
// PIL 9.4): every RandomAugment op bit-exact with both signs, the seed-1
// pretrain transform replayed from its recorded decisions, and properties of
// the samplers (bounds, distributions, reproducibility).

#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "albef/vision/augment.h"
#include "albef/vision/image.h"
#include "test_util.h"

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <array>
#include <cstdint>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace albef::vision {
namespace {

using albef::testing::data_path;
using albef::testing::source_path;
using nlohmann::json;

const json& fixture_json() {
  static const json doc = [] {
    std::ifstream in(data_path("augment/augment.json"));
    return json::parse(in);
  }();
  return doc;
}

std::string image_file(const std::string& image) {
  return source_path("data/coco-by/" + fixture_json()["images"][image]["file"].get<std::string>());
}

// The op input: a plain slice of the decoded image, as the fixtures made it.
cv::Mat op_input(const std::string& image) {
  const json& info = fixture_json()["images"][image];
  const cv::Rect rect(info["x0"].get<int>(), info["y0"].get<int>(), info["W"].get<int>(), info["H"].get<int>());
  return read_rgb(image_file(image))(rect).clone();
}

// The expected images are the fixtures' uint8 RGB arrays stored as lossless PNG.
cv::Mat read_expected(const std::string& name) {
  const std::string path = data_path("augment/" + name + ".png");
  const cv::Mat bgr = cv::imread(path, cv::IMREAD_UNCHANGED);
  EXPECT_EQ(bgr.type(), CV_8UC3) << path;
  cv::Mat rgb;
  if (!bgr.empty()) cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

// Bit-exact comparison reporting how many values differ and the largest gap.
void expect_same_pixels(const cv::Mat& actual, const cv::Mat& expected, const std::string& label) {
  ASSERT_EQ(actual.type(), expected.type()) << label;
  ASSERT_EQ(actual.size(), expected.size()) << label;
  cv::Mat diff;
  cv::absdiff(actual, expected, diff);
  const int differing = cv::countNonZero(diff.reshape(1));
  EXPECT_EQ(differing, 0) << label << ": max difference " << cv::norm(diff, cv::NORM_INF);
}

// ops__<image>__<Op>[_pos|_neg] against the op with its recorded sign draw.
void expect_op_matches(const std::string& image, const std::string& key) {
  SCOPED_TRACE(image + " " + key);
  const size_t underscore = key.find('_');
  const AugmentOp op = augment_op_from_name(key.substr(0, underscore));
  const json& entry = fixture_json()["ops"][image][key];
  bool negative = false;
  if (augment_op_has_sign(op)) {
    negative = augment_sign_negates(op, entry["np_random_random_draw_used_for_sign"].get<double>());
    EXPECT_EQ(negative, key.substr(underscore + 1) == "neg");
  }
  const json& args = entry["args_after_img"];
  if (!args.empty()) {
    const double magnitude_argument = augment_op_argument(op, 7);
    EXPECT_EQ(args[0].get<double>(), negative ? -magnitude_argument : magnitude_argument);
  }
  const cv::Mat input = op_input(image);
  const cv::Mat input_copy = input.clone();
  expect_same_pixels(apply_augment_op(input, op, 7, negative), read_expected("ops__" + image + "__" + key), key);
  EXPECT_EQ(cv::norm(input, input_copy, cv::NORM_INF), 0) << "the input was modified";
}

TEST(RandomAugmentOps, MatchOfficialOnLandscapeImage) {
  for (const char* key : {"AutoContrast", "Equalize", "Brightness", "Sharpness", "ShearX_pos", "ShearX_neg",
                          "ShearY_pos", "ShearY_neg", "TranslateX_pos", "TranslateX_neg", "TranslateY_pos",
                          "TranslateY_neg", "Rotate_pos", "Rotate_neg"})
    expect_op_matches("img1", key);
}

TEST(RandomAugmentOps, MatchOfficialOnPortraitImage) {
  for (const char* key : {"Equalize", "Sharpness", "ShearY_neg", "TranslateY_pos", "Rotate_pos", "Rotate_neg"})
    expect_op_matches("img2", key);
}

TEST(RandomAugmentOps, IdentityReturnsACopy) {
  const cv::Mat input = op_input("img2");
  const cv::Mat out = apply_augment_op(input, AugmentOp::Identity, 7, false);
  expect_same_pixels(out, input, "Identity");
  EXPECT_NE(out.data, input.data);
}

// uint8 wraps of `-low`: a channel with min > 0 turns all 255, channels with
// min 0 stretch; img2 has min 0 and max 255 everywhere, so it is unchanged.
TEST(RandomAugmentOps, AutoContrastKeepsTheOfficialNegationBug) {
  const cv::Mat input = op_input("img1");
  cv::Mat half(input.size(), CV_8UC3), half_plus20(input.size(), CV_8UC3);
  for (int y = 0; y < input.rows; ++y)
    for (int i = 0; i < 3 * input.cols; ++i) {
      const int v = input.ptr<uint8_t>(y)[i] / 2;
      half.ptr<uint8_t>(y)[i] = static_cast<uint8_t>(v);
      half_plus20.ptr<uint8_t>(y)[i] = static_cast<uint8_t>(v + 20);
    }
  const cv::Mat out_half = autocontrast(half);
  expect_same_pixels(out_half, read_expected("ops__img1__extra_half__AutoContrast"), "extra_half");
  expect_same_pixels(autocontrast(half_plus20), read_expected("ops__img1__extra_half_plus20__AutoContrast"),
                     "extra_half_plus20");
  std::vector<cv::Mat> channels;
  cv::split(out_half, channels);
  EXPECT_EQ(cv::countNonZero(channels[0] != 255), 0);  // R min 9 -> all 255
  double low = 0, high = 0;
  cv::minMaxLoc(channels[1], &low, &high);  // G: [0, 127] stretched to [0, 255]
  EXPECT_EQ(low, 0);
  EXPECT_EQ(high, 255);

  const cv::Mat portrait = op_input("img2");
  expect_same_pixels(autocontrast(portrait), portrait, "img2 AutoContrast");
  const cv::Mat flat(4, 5, CV_8UC3, cv::Scalar(7, 0, 200));
  expect_same_pixels(autocontrast(flat), flat, "constant channels");
}

// 5x5 impulses: deg = round(255 * 5/13) = 98 at a white dot on black, whose
// sharpened value 98 + 1.36 * 157 = 311.52 wraps to 55; a black dot on white
// (deg = round(255 * 8/13) = 157) gives 157 - 213.52 = -56.52 -> 200.
TEST(RandomAugmentOps, SharpnessWrapsInsteadOfClipping) {
  cv::Mat dot(5, 5, CV_8UC3, cv::Scalar::all(0));
  dot.at<cv::Vec3b>(2, 2) = cv::Vec3b(255, 255, 255);
  const cv::Mat sharp = sharpness(dot, 1.36);
  EXPECT_EQ(sharp.at<cv::Vec3b>(2, 2), cv::Vec3b(55, 55, 55));
  EXPECT_EQ(sharp.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 0));  // the border keeps the input

  const cv::Mat hole = cv::Scalar::all(255) - dot;
  EXPECT_EQ(sharpness(hole, 1.36).at<cv::Vec3b>(2, 2), cv::Vec3b(200, 200, 200));
  expect_same_pixels(sharpness(dot, 1.0), dot, "factor 1");
  EXPECT_EQ(sharpness(dot, 0.0).at<cv::Vec3b>(2, 2), cv::Vec3b(98, 98, 98));
  // Too small for an interior: unchanged.
  const cv::Mat thin(2, 7, CV_8UC3, cv::Scalar(1, 2, 3));
  expect_same_pixels(sharpness(thin, 1.36), thin, "2-row image");
}

TEST(RandomAugmentOps, LevelsSignsAndNames) {
  EXPECT_DOUBLE_EQ(augment_op_argument(AugmentOp::Brightness, 7), 1.36);
  EXPECT_DOUBLE_EQ(augment_op_argument(AugmentOp::Sharpness, 0), 0.1);
  EXPECT_DOUBLE_EQ(augment_op_argument(AugmentOp::Sharpness, 10), 1.9);
  EXPECT_DOUBLE_EQ(augment_op_argument(AugmentOp::ShearY, 10), 0.3);
  EXPECT_DOUBLE_EQ(augment_op_argument(AugmentOp::TranslateX, 7), 7.0);
  EXPECT_DOUBLE_EQ(augment_op_argument(AugmentOp::Rotate, 7), 21.0);
  EXPECT_EQ(augment_op_argument(AugmentOp::Equalize, 7), 0.0);

  EXPECT_TRUE(augment_sign_negates(AugmentOp::ShearX, 0.75));
  EXPECT_FALSE(augment_sign_negates(AugmentOp::TranslateY, 0.25));
  EXPECT_TRUE(augment_sign_negates(AugmentOp::Rotate, 0.25));
  EXPECT_FALSE(augment_sign_negates(AugmentOp::Rotate, 0.75));
  EXPECT_FALSE(augment_sign_negates(AugmentOp::Brightness, 0.75));

  const auto& ops = albef_augment_ops();
  ASSERT_EQ(ops.size(), 10u);
  const json& official = fixture_json()["op_list"];
  for (size_t i = 0; i < ops.size(); ++i) {
    EXPECT_EQ(augment_op_name(ops[i]), official[i].get<std::string>());
    EXPECT_EQ(augment_op_from_name(augment_op_name(ops[i])), ops[i]);
  }
  EXPECT_THROW(augment_op_from_name("Solarize"), Error);
  EXPECT_THROW(brightness(cv::Mat(4, 4, CV_8UC1, cv::Scalar(0)), 1.5), Error);
  EXPECT_THROW(RandomAugment(2, 11), Error);
}

// The seed-1 official pretrain transform of img1, replayed from the decisions
// recorded in augment.json: every stage bit-exact, the tensor to float noise.
TEST(TrainTransform, ReplaysOfficialSeed1) {
  const json& record = fixture_json()["full_transform"]["seed1"];
  TrainDecisions decisions;
  const auto box = record["rrc_box_ijhw"].get<std::array<int, 4>>();
  decisions.crop = CropBox{box[0], box[1], box[2], box[3]};
  decisions.flip = record["hflip"].get<bool>();
  for (const json& step : record["randaugment_ops"]) {
    AugmentStep s;
    s.op = augment_op_from_name(step["op"].get<std::string>());
    s.applied = !(step["skip_draw"].get<double>() > 0.5);
    EXPECT_EQ(s.applied, step["applied"].get<bool>());
    s.negative = s.applied && step["args_after_img"][0].get<double>() < 0;
    decisions.augment.push_back(s);
  }
  ASSERT_EQ(decisions.augment.size(), 2u);

  const TrainTransform transform(record["image_res"].get<int>(), record["rrc_scale"][0].get<double>());
  const cv::Mat image = read_rgb(source_path("data/coco-by/" + record["image"].get<std::string>()));
  const TrainStages stages = transform.replay(image, decisions);
  const std::string prefix = "full_pretrain__img1__seed1__";
  expect_same_pixels(stages.cropped, read_expected(prefix + "after_rrc"), "after_rrc");
  expect_same_pixels(stages.flipped, read_expected(prefix + "after_flip"), "after_flip");
  expect_same_pixels(stages.augmented, read_expected(prefix + "after_randaugment"), "after_randaugment");
  const at::Tensor expected = io::read_npy(data_path("augment/" + prefix + "tensor.npy"));
  ASSERT_EQ(stages.tensor.sizes(), expected.sizes());
  EXPECT_TENSOR_NEAR(stages.tensor, expected, 1e-6);
}

// sqrt(area * ratio) and sqrt(area / ratio) are within half a pixel of w and
// h, which bounds the sampled area and ratio from the rounded box.
void expect_box_plausible(const CropBox& box, int width, int height, double scale_min, double scale_max) {
  ASSERT_GT(box.width, 0);
  ASSERT_GT(box.height, 0);
  ASSERT_GE(box.top, 0);
  ASSERT_GE(box.left, 0);
  ASSERT_LE(box.top + box.height, height);
  ASSERT_LE(box.left + box.width, width);
  const double area = static_cast<double>(width) * height, w = box.width, h = box.height;
  EXPECT_LE((w - 0.5) * (h - 0.5), scale_max * area);
  EXPECT_GE((w + 0.5) * (h + 0.5), scale_min * area);
  EXPECT_LE((w - 0.5) / (h + 0.5), 4.0 / 3.0);
  EXPECT_GE((w + 0.5) / (h - 0.5), 3.0 / 4.0);
}

TEST(RandomResizedCrop, BoxesRespectBoundsScaleAndRatio) {
  const std::array<std::array<int, 2>, 4> sizes{{{500, 375}, {480, 640}, {64, 64}, {300, 200}}};
  for (const auto& size : sizes)
    for (const double scale_min : {kPretrainScaleMin, kFinetuneScaleMin}) {
      SCOPED_TRACE(::testing::Message() << size[0] << "x" << size[1] << " scale " << scale_min);
      Rng rng(42);
      std::set<int> tops, lefts;
      double area_fraction_sum = 0;
      constexpr int kDraws = 3000;
      for (int k = 0; k < kDraws; ++k) {
        const CropBox box = sample_crop_box(size[0], size[1], scale_min, 1.0, rng);
        expect_box_plausible(box, size[0], size[1], scale_min, 1.0);
        tops.insert(box.top);
        lefts.insert(box.left);
        area_fraction_sum += static_cast<double>(box.width) * box.height / (size[0] * size[1]);
        if (HasFailure()) return;
      }
      EXPECT_GT(tops.size(), 10u);
      EXPECT_GT(lefts.size(), 10u);
      // Accepted areas are uniform on the scale range, minus the rejected
      // draws that do not fit (those lean large), so the mean sits a little
      // below the middle.
      const double mean = area_fraction_sum / kDraws;
      EXPECT_GT(mean, scale_min);
      EXPECT_LT(mean, (scale_min + 1.0) / 2 + 0.02);
    }
}

TEST(RandomResizedCrop, FallsBackToTheCentredCrop) {
  Rng rng(1);
  // Every try is too tall for a 10-pixel-high strip: the centred 13x10 crop
  // (10 * 4/3 = 13.33 rounds to 13).
  CropBox box = sample_crop_box(1000, 10, 0.2, 1.0, rng);
  EXPECT_EQ((std::array<int, 4>{box.top, box.left, box.height, box.width}), (std::array<int, 4>{0, 493, 10, 13}));
  box = sample_crop_box(10, 1000, 0.2, 1.0, rng);
  EXPECT_EQ((std::array<int, 4>{box.top, box.left, box.height, box.width}), (std::array<int, 4>{493, 0, 13, 10}));
  // An area larger than the image never fits; a square keeps the whole image.
  box = sample_crop_box(100, 100, 2.0, 3.0, rng);
  EXPECT_EQ((std::array<int, 4>{box.top, box.left, box.height, box.width}), (std::array<int, 4>{0, 0, 100, 100}));
  EXPECT_THROW(sample_crop_box(100, 100, 0.8, 0.5, rng), Error);
  EXPECT_THROW(sample_crop_box(0, 100, 0.2, 1.0, rng), Error);
}

std::vector<std::array<int, 4>> draw_boxes(Rng rng, int count) {
  std::vector<std::array<int, 4>> boxes;
  for (int k = 0; k < count; ++k) {
    const CropBox b = sample_crop_box(500, 375, 0.2, 1.0, rng);
    boxes.push_back({b.top, b.left, b.height, b.width});
  }
  return boxes;
}

TEST(Rng, StreamsAreReproducibleAndDistinct) {
  EXPECT_EQ(draw_boxes(Rng(7), 50), draw_boxes(Rng(7), 50));
  EXPECT_NE(draw_boxes(Rng(7), 50), draw_boxes(Rng(8), 50));
  EXPECT_EQ(draw_boxes(Rng::for_sample(3, 1, 17), 20), draw_boxes(Rng::for_sample(3, 1, 17), 20));
  EXPECT_NE(draw_boxes(Rng::for_sample(3, 1, 17), 20), draw_boxes(Rng::for_sample(3, 1, 18), 20));
  EXPECT_NE(draw_boxes(Rng::for_sample(3, 1, 17), 20), draw_boxes(Rng::for_sample(3, 2, 17), 20));
  EXPECT_NE(draw_boxes(Rng::for_sample(3, 1, 17), 20), draw_boxes(Rng::for_sample(4, 1, 17), 20));
}

TEST(Rng, DrawsAreUniform) {
  Rng rng(123);
  constexpr int kDraws = 100000;
  std::array<int, 7> counts{};
  double sum = 0;
  for (int k = 0; k < kDraws; ++k) {
    const int64_t v = rng.below(7);
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 7);
    ++counts[static_cast<size_t>(v)];
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  for (int c : counts) EXPECT_NEAR(c, kDraws / 7.0, 0.03 * kDraws / 7.0);
  EXPECT_NEAR(sum / kDraws, 0.5, 0.005);
  EXPECT_THROW(rng.below(0), Error);
}

TEST(RandomAugment, SamplesOpsSkipsAndSignsLikeTheOfficialRule) {
  const RandomAugment augment;  // ALBEF's (2, 7, all ten ops)
  EXPECT_EQ(augment.num_ops(), 2);
  EXPECT_EQ(augment.magnitude(), 7);
  Rng rng(5);
  std::map<AugmentOp, int> chosen;
  int applied = 0, signed_applied = 0, negative = 0;
  constexpr int kCalls = 20000;
  for (int k = 0; k < kCalls; ++k) {
    const std::vector<AugmentStep> steps = augment.sample(rng);
    ASSERT_EQ(steps.size(), 2u);
    for (const AugmentStep& s : steps) {
      ++chosen[s.op];
      applied += s.applied;
      if (s.applied && augment_op_has_sign(s.op)) {
        ++signed_applied;
        negative += s.negative;
      }
      if (!s.applied || !augment_op_has_sign(s.op)) {
        ASSERT_FALSE(s.negative);
      }
    }
  }
  ASSERT_EQ(chosen.size(), 10u);
  for (const auto& [op, count] : chosen) EXPECT_NEAR(count, 2 * kCalls / 10.0, 0.06 * 2 * kCalls / 10.0);
  EXPECT_NEAR(applied, kCalls, 0.03 * kCalls);
  EXPECT_NEAR(negative, signed_applied / 2.0, 0.04 * signed_applied / 2.0);

  Rng a(9), b(9);
  const cv::Mat input = op_input("img2");
  for (int k = 0; k < 5; ++k) expect_same_pixels(augment(input, a), augment(input, b), "same seed");
}

TEST(RandomAugment, AppliesStepsInOrderAndSkipsSkippedOnes) {
  const RandomAugment augment;
  const cv::Mat input = op_input("img1");
  const cv::Mat skipped = augment.apply(input, {{AugmentOp::Equalize, false, false}, {AugmentOp::Rotate, false, true}});
  expect_same_pixels(skipped, input, "all skipped");
  EXPECT_NE(skipped.data, input.data);
  const cv::Mat both = augment.apply(input, {{AugmentOp::TranslateX, true, true}, {AugmentOp::Brightness, true, false}});
  expect_same_pixels(both, brightness(translate_x(input, -7.0), 1.36), "translate then brightness");
}

TEST(TrainTransform, SampledCallsAreReproducibleReplays) {
  const cv::Mat image = read_rgb(image_file("img2"));
  const TrainTransform transform(64, kFinetuneScaleMin);
  Rng rng(11), same(11), other(12), replay_rng(11);
  const at::Tensor out = transform(image, rng);
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{3, 64, 64}));
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(out, transform(image, same)));
  EXPECT_FALSE(at::equal(out, transform(image, other)));
  const TrainDecisions decisions = transform.sample(image.cols, image.rows, replay_rng);
  expect_box_plausible(decisions.crop, image.cols, image.rows, kFinetuneScaleMin, 1.0);
  EXPECT_TRUE(at::equal(out, transform.replay(image, decisions).tensor));

  // Over many calls about half are flipped and the crops follow the scale.
  int flips = 0;
  for (int k = 0; k < 2000; ++k) {
    Rng sample_rng = Rng::for_sample(0, 0, static_cast<uint64_t>(k));
    const TrainDecisions d = transform.sample(image.cols, image.rows, sample_rng);
    flips += d.flip;
    expect_box_plausible(d.crop, image.cols, image.rows, kFinetuneScaleMin, 1.0);
  }
  EXPECT_NEAR(flips, 1000, 100);
  EXPECT_THROW(TrainTransform(0), Error);
  EXPECT_THROW(TrainTransform(64, 1.5), Error);
}

}  // namespace
}  // namespace albef::vision
