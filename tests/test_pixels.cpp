// Images held as 8-bit pixels: the test transform's bytes, which the image
// encoder normalises a pass at a time into the official float32 values.

#include "albef/api/inference.h"
#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "albef/vision/image.h"
#include "albef/vision/pixels.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <opencv2/core.hpp>

#include <functional>
#include <string>
#include <vector>

namespace albef::vision {
namespace {

using albef::testing::data_path;
using albef::testing::source_path;

std::vector<std::string> bundled_images(size_t count) {
  std::vector<std::string> paths;
  for (const char* name : {"000000000790.jpg", "000000078499.jpg", "000000084284.jpg", "000000107438.jpg"})
    paths.push_back(source_path(std::string("data/coco-by/images/") + name));
  paths.resize(count);
  return paths;
}

void expect_error(const std::function<void()>& run, const std::vector<std::string>& parts) {
  try {
    run();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what() << " lacks " << part;
  }
}

TEST(Pixels, NormalisedTheyAreTheTestTransformsValues) {
  cv::Mat rgb(5, 7, CV_8UC3);
  cv::randu(rgb, 0, 256);
  const at::Tensor pixels = to_pixel_tensor(rgb);
  EXPECT_EQ(pixels.scalar_type(), at::kByte);
  EXPECT_EQ(pixels.sizes(), (std::vector<int64_t>{3, 5, 7}));
  EXPECT_EQ(pixels[1][2][3].item<int64_t>(), rgb.at<cv::Vec3b>(2, 3)[1]);  // RGB planes, R first
  EXPECT_TRUE(normalize_pixels(pixels).equal(to_normalized_tensor(rgb)));
  const cv::Mat crop = rgb(cv::Rect(1, 1, 4, 3));  // rows apart in memory
  ASSERT_FALSE(crop.isContinuous());
  EXPECT_TRUE(normalize_pixels(to_pixel_tensor(crop)).equal(to_normalized_tensor(crop)));
  // Every byte in every channel, against torchvision's float32 steps written out.
  const at::Tensor bytes = at::arange(256, at::kInt).to(at::kByte).view({1, 1, 256}).expand({3, 1, 256});
  const at::Tensor normalised = normalize_pixels(bytes.contiguous());
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v)
      ASSERT_EQ(normalised[c][0][v].item<float>(), (static_cast<float>(v) / 255.0f - kMean[c]) / kStd[c]) << c << v;
  // And the per-image path (a table of those values) gives each of them too.
  cv::Mat every_byte(1, 256, CV_8UC3);
  for (int v = 0; v < 256; ++v) every_byte.at<cv::Vec3b>(0, v) = cv::Vec3b(v, v, v);
  EXPECT_TRUE(to_normalized_tensor(every_byte).equal(normalised));
}

TEST(Pixels, FilesLoadAsTheBytesOfTheTestTransform) {
  const std::vector<std::string> paths = bundled_images(3);
  const at::Tensor batch = load_test_pixels(paths, 32);
  EXPECT_EQ(batch.scalar_type(), at::kByte);
  EXPECT_EQ(batch.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  for (size_t i = 0; i < paths.size(); ++i)
    EXPECT_TRUE(normalize_pixels(batch[static_cast<int64_t>(i)]).equal(load_test_image(paths[i], 32))) << paths[i];
  EXPECT_TRUE(batch[1].equal(load_test_pixels(paths[1], 32)));
  EXPECT_EQ(load_test_pixels(std::vector<std::string>{}, 32).sizes(), (std::vector<int64_t>{0, 3, 32, 32}));
  expect_error([] { load_test_pixels(std::vector<std::string>{"/nonexistent/x.jpg"}, 32); }, {"/nonexistent/x.jpg"});
  expect_error([&] { load_test_pixels(paths[0], 0); }, {"image_res", "0"});
}

TEST(Pixels, NormalizePixelsSaysWhatItTakes) {
  expect_error([] { normalize_pixels(at::zeros({1, 3, 4, 4})); }, {"uint8", "Float"});
  expect_error([] { normalize_pixels(at::zeros({2, 4, 8, 8}, at::kByte)); }, {"[..., 3, H, W]", "[2, 4, 8, 8]"});
}

InferenceOptions tiny(Precision precision) {
  InferenceOptions options;
  options.config_path = data_path("tiny/Pretrain.yaml");
  options.checkpoint_path = data_path("tiny/albef_pretrain_tiny.pth");
  options.threads = 1;
  options.precision = precision;
  options.batch_size = 3;  // two batches of the four images
  return options;
}

TEST(Pixels, TheImageEncoderTakesThemInEveryPrecision) {
  std::vector<Precision> precisions = {Precision::Fp32, Precision::Int8};
  if (dnnl_bf16_gemm_available()) precisions.push_back(Precision::Bf16);
  const std::vector<std::string> paths = bundled_images(4);
  for (const Precision precision : precisions) {
    AlbefInference albef(tiny(precision));
    const at::Tensor pixels = albef.load_images(paths);
    ASSERT_EQ(pixels.scalar_type(), at::kByte);
    const at::Tensor from_bytes = albef.image_features(pixels);
    EXPECT_TRUE(from_bytes.equal(albef.image_features(normalize_pixels(pixels)))) << static_cast<int>(precision);
    EXPECT_TRUE(from_bytes.equal(albef.image_features(paths))) << static_cast<int>(precision);
    const std::vector<std::string> captions = {"a cake on a table", "horses on a hill"};
    const auto scores = albef.score_images(pixels, {0, 1}, captions);
    const auto expected = albef.score_images(normalize_pixels(pixels), {0, 1}, captions);
    for (size_t i = 0; i < captions.size(); ++i) {
      EXPECT_EQ(scores[i].itc, expected[i].itc) << i;
      EXPECT_EQ(scores[i].itm_match, expected[i].itm_match) << i;
    }
  }
}

}  // namespace
}  // namespace albef::vision
