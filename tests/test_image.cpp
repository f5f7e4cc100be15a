// Image decoding and the PIL-exact transforms against the official pipeline's
// fixtures (PIL 9.4 + torchvision 0.14), plus decoding of unusual and broken
// files.

#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "albef/vision/image.h"
#include "test_util.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <array>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace albef::vision {
namespace {

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::source_path;

const char* const kCocoImages[] = {"000000000790.jpg", "000000078499.jpg", "000000084284.jpg",
                                   "000000107438.jpg"};

std::string coco_image(const std::string& name) { return source_path("data/coco-by/images/" + name); }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// An HWC uint8 tensor holding a copy of the pixels (the image may be an ROI).
at::Tensor as_tensor(const cv::Mat& rgb) {
  const cv::Mat dense = rgb.clone();
  return at::from_blob(dense.data, {dense.rows, dense.cols, dense.channels()}, at::kByte).clone();
}

// Expects read_rgb(path) to throw albef::Error naming the file and the problem.
void expect_read_error(const std::string& path, const std::string& problem) {
  try {
    read_rgb(path);
    ADD_FAILURE() << "read_rgb accepted " << path;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(problem), std::string::npos) << message;
  }
}

// --- A minimal PNG writer (stored deflate blocks) for layouts OpenCV cannot
// encode (palettes, 2-bit grey, grey + alpha) or not byte for byte (16-bit).

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (const char ch : data) {
    crc ^= static_cast<uint8_t>(ch);
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
  }
  return crc ^ 0xFFFFFFFFu;
}

std::string big_endian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string png_chunk(const std::string& type, const std::string& data) {
  return big_endian32(static_cast<uint32_t>(data.size())) + type + data + big_endian32(crc32(type + data));
}

std::string zlib_stored(const std::string& data) {
  ALBEF_CHECK(data.size() < 65536, "test PNG too large");
  uint32_t a = 1, b = 0;
  for (const char ch : data) {
    a = (a + static_cast<uint8_t>(ch)) % 65521;
    b = (b + a) % 65521;
  }
  const auto len = static_cast<uint16_t>(data.size());
  std::string out = "\x78\x01";
  out += '\x01';  // final stored block
  out += {static_cast<char>(len & 0xFF), static_cast<char>(len >> 8), static_cast<char>(~len & 0xFF),
          static_cast<char>((~len >> 8) & 0xFF)};
  return out + data + big_endian32((b << 16) | a);
}

// `rows` are the packed scanlines without the filter byte; `extra` chunks go
// before IDAT (PLTE, tRNS).
std::string make_png(int width, int bit_depth, int colour_type, const std::vector<std::string>& rows,
                     const std::string& extra = "", const std::string& idat_override = "") {
  std::string ihdr = big_endian32(width) + big_endian32(static_cast<uint32_t>(rows.size()));
  ihdr += {static_cast<char>(bit_depth), static_cast<char>(colour_type), 0, 0, 0};
  std::string raw;
  for (const auto& row : rows) raw += '\0' + row;
  const std::string idat = idat_override.empty() ? zlib_stored(raw) : idat_override;
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) + extra + png_chunk("IDAT", idat) +
         png_chunk("IEND", "");
}

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (const int v : values) out += static_cast<char>(v);
  return out;
}

// Reads a PNG/JPEG given as bytes through a temp file.
cv::Mat read_rgb_bytes(const std::string& name, const std::string& data) {
  const std::string path = make_temp_dir("image_modes") + "/" + name;
  write_bytes(path, data);
  return read_rgb(path);
}

void expect_pixels(const cv::Mat& rgb, const std::vector<std::array<int, 3>>& expected) {
  ASSERT_EQ(rgb.type(), CV_8UC3);
  ASSERT_EQ(static_cast<size_t>(rgb.total()), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const cv::Vec3b pixel = rgb.at<cv::Vec3b>(static_cast<int>(i / rgb.cols), static_cast<int>(i % rgb.cols));
    EXPECT_EQ((std::array<int, 3>{pixel[0], pixel[1], pixel[2]}), expected[i]) << "pixel " << i;
  }
}

// --- The official pipeline.

TEST(Image, TestTransformMatchesOfficialFixtures) {
  for (const int res : {32, 256}) {
    const std::string fixture = res == 32 ? "tiny/npy/inputs__image.npy" : "tiny/npy/inputs__image_256.npy";
    const at::Tensor expected = io::read_npy(data_path(fixture));
    ASSERT_EQ(expected.sizes(), (at::IntArrayRef{4, 3, res, res}));
    double max_error = 0.0, sum_error = 0.0;
    for (int i = 0; i < 4; ++i) {
      const at::Tensor actual = load_test_image(coco_image(kCocoImages[i]), res);
      ASSERT_EQ(actual.sizes(), (at::IntArrayRef{3, res, res}));
      const at::Tensor error = (actual.to(at::kDouble) - expected[i].to(at::kDouble)).abs();
      max_error = std::max(max_error, error.max().item<double>());
      sum_error += error.sum().item<double>();
    }
    const double mean_error = sum_error / static_cast<double>(expected.numel());
    std::cout << "[ image ] test transform at " << res << "x" << res << ": max |error| " << max_error
              << ", mean |error| " << mean_error << std::endl;
    EXPECT_LE(max_error, 0.02);
    EXPECT_LE(mean_error, 0.001);
  }
}

struct CropCase {
  const char* image;
  int top, left, height, width;
};

// Boxes (i, j, h, w) of the official RandomResizedCrop fixtures.
const CropCase kCrops[] = {
    {"img1", 0, 0, 375, 500},   {"img1", 37, 101, 211, 279}, {"img1", 120, 64, 240, 181},
    {"img2", 0, 0, 640, 480},   {"img2", 95, 33, 401, 337},  {"img2", 300, 200, 281, 229},
};

std::string crop_image_path(const std::string& image) {
  return coco_image(image == "img1" ? "000000084284.jpg" : "000000121647.jpg");
}

// Crop k of kCrops resized to size x size against rrc__<image>__box<k % 3>__<size>.npy.
void expect_resized_crop_exact(int k, int size) {
  const CropCase& crop = kCrops[k];
  const std::string fixture = str_cat("augment/rrc__", crop.image, "__box", k % 3, "__", size, ".npy");
  const at::Tensor expected = io::read_npy(data_path(fixture));
  const cv::Mat rgb = read_rgb(crop_image_path(crop.image));
  const at::Tensor actual = as_tensor(resized_crop_pil(rgb, crop.top, crop.left, crop.height, crop.width, size, size));
  ASSERT_EQ(actual.sizes(), expected.sizes()) << fixture;
  EXPECT_EQ(actual.ne(expected).sum().item<int64_t>(), 0) << fixture;
}

TEST(Image, ResizedCropIsBitExact) {
  for (int k = 0; k < 6; ++k) expect_resized_crop_exact(k, 32);
  expect_resized_crop_exact(1, 256);  // img1 box1
  expect_resized_crop_exact(5, 256);  // img2 box2
}

TEST(Image, ResizeWithBoxReadsOutsideTheBox) {
  const CropCase& crop = kCrops[1];
  const cv::Mat rgb = read_rgb(crop_image_path(crop.image));
  const Box box{double(crop.left), double(crop.top), double(crop.left + crop.width),
                double(crop.top + crop.height)};
  const at::Tensor with_box = as_tensor(resize_bicubic_pil(rgb, 32, 32, box));
  const at::Tensor expected = io::read_npy(data_path("augment/rrc__img1__box1__32.npy"));
  // The interior agrees with crop-then-resize; the border differs because
  // the box version's filter reaches pixels outside the box.
  using at::indexing::Slice;
  EXPECT_TRUE(with_box.index({Slice(2, -2), Slice(2, -2)}).equal(expected.index({Slice(2, -2), Slice(2, -2)})));
  EXPECT_FALSE(with_box.equal(expected));
  // The full-image box is the plain resize.
  const Box full{0, 0, double(rgb.cols), double(rgb.rows)};
  EXPECT_TRUE(as_tensor(resize_bicubic_pil(rgb, 40, 24, full)).equal(as_tensor(resize_bicubic_pil(rgb, 40, 24))));
}

TEST(Image, ResizeSpecialCases) {
  cv::Mat rgb(7, 5, CV_8UC3);
  cv::randu(rgb, 0, 256);
  // Same size: a copy.
  EXPECT_TRUE(as_tensor(resize_bicubic_pil(rgb, 5, 7)).equal(as_tensor(rgb)));
  // Upscaling one axis only; a constant image stays constant (weights sum to 1).
  const cv::Mat flat(7, 5, CV_8UC3, cv::Scalar(10, 128, 250));
  const cv::Mat wide = resize_bicubic_pil(flat, 11, 7);
  EXPECT_EQ(cv::norm(wide, cv::Mat(7, 11, CV_8UC3, cv::Scalar(10, 128, 250)), cv::NORM_INF), 0);
  const cv::Mat tall = resize_bicubic_pil(flat, 5, 3);
  EXPECT_EQ(cv::norm(tall, cv::Mat(3, 5, CV_8UC3, cv::Scalar(10, 128, 250)), cv::NORM_INF), 0);
  EXPECT_THROW(resize_bicubic_pil(rgb, 0, 4), Error);
  EXPECT_THROW(resize_bicubic_pil(rgb, 4, 4, Box{0, 0, 6, 7}), Error);
  EXPECT_THROW(resized_crop_pil(rgb, 1, 1, 7, 2, 4, 4), Error);
}

TEST(Image, ToNormalizedTensorIsToTensorThenNormalize) {
  cv::Mat rgb(2, 3, CV_8UC3);
  cv::randu(rgb, 0, 256);
  const at::Tensor hwc = as_tensor(rgb);
  // torchvision's float32 ops, written with LibTorch.
  const at::Tensor mean = at::tensor(std::vector<float>(kMean, kMean + 3)).view({3, 1, 1});
  const at::Tensor std = at::tensor(std::vector<float>(kStd, kStd + 3)).view({3, 1, 1});
  const at::Tensor expected = hwc.permute({2, 0, 1}).to(at::kFloat).div(255).sub(mean).div(std);
  EXPECT_TRUE(to_normalized_tensor(rgb).equal(expected));
}

// --- Decoding modes (PIL's convert('RGB')).

TEST(Image, GreyPngIsReplicated) {
  const std::string path = data_path("images/camera.png");
  const cv::Mat rgb = read_rgb(path);
  const cv::Mat grey = cv::imread(path, cv::IMREAD_GRAYSCALE);
  ASSERT_EQ(rgb.size(), grey.size());
  std::vector<cv::Mat> channels;
  cv::split(rgb, channels);
  for (const cv::Mat& channel : channels) EXPECT_EQ(cv::norm(channel, grey, cv::NORM_INF), 0);
}

TEST(Image, RgbaPngDropsAlphaWithoutCompositing) {
  const std::string path = data_path("images/horse.png");
  const cv::Mat bgra = cv::imread(path, cv::IMREAD_UNCHANGED);
  ASSERT_EQ(bgra.type(), CV_8UC4);
  std::vector<cv::Mat> channels;
  cv::split(bgra, channels);
  double min_alpha = 0;
  cv::minMaxLoc(channels[3], &min_alpha);
  ASSERT_LT(min_alpha, 255) << "the test image must have transparent pixels";
  cv::Mat expected;
  cv::merge(std::vector<cv::Mat>{channels[2], channels[1], channels[0]}, expected);
  EXPECT_EQ(cv::norm(read_rgb(path), expected, cv::NORM_INF), 0);
}

TEST(Image, PaletteAndLowBitDepthPngs) {
  // 2x1 palette image with a tRNS chunk: the palette colours, alpha ignored.
  const std::string palette = png_chunk("PLTE", bytes({255, 0, 0, 0, 128, 255})) + png_chunk("tRNS", bytes({0, 77}));
  expect_pixels(read_rgb_bytes("palette.png", make_png(2, 8, 3, {bytes({1, 0})}, palette)),
                {{{0, 128, 255}}, {{255, 0, 0}}});
  // 2-bit grey: 0..3 scaled to 0, 85, 170, 255.
  expect_pixels(read_rgb_bytes("grey2.png", make_png(4, 2, 0, {bytes({0b00011011})})),
                {{{0, 0, 0}}, {{85, 85, 85}}, {{170, 170, 170}}, {{255, 255, 255}}});
  // Grey + alpha: grey replicated, alpha dropped.
  expect_pixels(read_rgb_bytes("grey_alpha.png", make_png(2, 8, 4, {bytes({40, 0, 200, 128})})),
                {{{40, 40, 40}}, {{200, 200, 200}}});
}

TEST(Image, SixteenBitPngsFollowPil) {
  // 16-bit grey opens in PIL as mode "I"; I -> RGB clips at 255.
  expect_pixels(read_rgb_bytes("grey16.png", make_png(4, 16, 0, {bytes({0x00, 0xC8, 0x00, 0xFF, 0x01, 0x00, 0xFF, 0xFF})})),
                {{{200, 200, 200}}, {{255, 255, 255}}, {{255, 255, 255}}, {{255, 255, 255}}});
  // 16-bit RGB keeps the high byte of each sample.
  expect_pixels(read_rgb_bytes("rgb16.png", make_png(1, 16, 2, {bytes({0x12, 0xFF, 0x80, 0x01, 0x00, 0xFF})})),
                {{{0x12, 0x80, 0x00}}});
}

TEST(Image, GreyJpegIsReplicated) {
  cv::Mat grey(16, 24, CV_8UC1);
  cv::randu(grey, 0, 256);
  std::vector<uchar> encoded;
  ASSERT_TRUE(cv::imencode(".jpg", grey, encoded));
  const std::string data(encoded.begin(), encoded.end());
  const cv::Mat rgb = read_rgb_bytes("grey.jpg", data);
  const cv::Mat decoded = cv::imdecode(encoded, cv::IMREAD_GRAYSCALE);
  std::vector<cv::Mat> channels;
  cv::split(rgb, channels);
  for (const cv::Mat& channel : channels) EXPECT_EQ(cv::norm(channel, decoded, cv::NORM_INF), 0);
}

TEST(Image, ExifOrientationIsIgnored) {
  cv::Mat bgr(8, 16, CV_8UC3);
  cv::randu(bgr, 0, 256);
  std::vector<uchar> encoded;
  ASSERT_TRUE(cv::imencode(".jpg", bgr, encoded));
  // APP1 Exif, big-endian TIFF, one IFD entry: Orientation (0x0112) = 6
  // ("rotate 90 CW"), which OpenCV would apply by default.
  const std::string exif = std::string("Exif\0\0MM\0\x2a\0\0\0\x08", 14) +
                           bytes({0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0});
  const std::string app1 = bytes({0xFF, 0xE1, 0, static_cast<int>(exif.size() + 2)}) + exif;
  const std::string plain(encoded.begin(), encoded.end());
  const std::string with_exif = plain.substr(0, 2) + app1 + plain.substr(2);
  const cv::Mat rotated_by_opencv = cv::imdecode(std::vector<uchar>(with_exif.begin(), with_exif.end()), cv::IMREAD_COLOR);
  ASSERT_EQ(rotated_by_opencv.rows, 16) << "the EXIF block is not recognised";
  const cv::Mat rgb = read_rgb_bytes("exif.jpg", with_exif);
  EXPECT_TRUE(as_tensor(rgb).equal(as_tensor(read_rgb_bytes("plain.jpg", plain))));
  EXPECT_EQ(rgb.rows, 8);
  EXPECT_EQ(rgb.cols, 16);
}

// --- Broken files: albef::Error naming the file, never a crash or a
// partial image.

TEST(Image, MissingEmptyAndDirectory) {
  const std::string dir = make_temp_dir("image_bad_basic");
  expect_read_error(dir + "/missing.jpg", "no such file");
  write_bytes(dir + "/empty.jpg", "");
  expect_read_error(dir + "/empty.jpg", "empty");
  expect_read_error(dir, "directory");
}

TEST(Image, TruncatedFiles) {
  const std::string dir = make_temp_dir("image_bad_truncated");
  const std::string jpeg = read_bytes(coco_image("000000084284.jpg"));
  write_bytes(dir + "/half.jpg", jpeg.substr(0, jpeg.size() / 2));
  expect_read_error(dir + "/half.jpg", "truncated JPEG");
  write_bytes(dir + "/no_eoi.jpg", jpeg.substr(0, jpeg.size() - 2));
  expect_read_error(dir + "/no_eoi.jpg", "truncated JPEG");
  write_bytes(dir + "/header_only.jpg", jpeg.substr(0, 100));
  expect_read_error(dir + "/header_only.jpg", "truncated JPEG");
  // Trailing bytes after EOI are fine (PIL ignores them too).
  write_bytes(dir + "/trailing.jpg", jpeg + "trailing junk");
  EXPECT_EQ(cv::norm(read_rgb(dir + "/trailing.jpg"), read_rgb(coco_image("000000084284.jpg")), cv::NORM_INF), 0);

  const std::string png = read_bytes(data_path("images/camera.png"));
  write_bytes(dir + "/half.png", png.substr(0, png.size() / 2));
  expect_read_error(dir + "/half.png", "truncated PNG");
  write_bytes(dir + "/no_iend.png", png.substr(0, png.size() - 12));
  expect_read_error(dir + "/no_iend.png", "truncated PNG");
}

TEST(Image, CorruptAndNonImageFiles) {
  const std::string dir = make_temp_dir("image_bad_corrupt");
  std::mt19937 rng(7);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng() & 0xFF);
  noise[0] = 'x';  // not the start of any image signature
  write_bytes(dir + "/noise.jpg", noise);
  expect_read_error(dir + "/noise.jpg", "not a supported image format");
  write_bytes(dir + "/text.png", "this is not an image\n");
  expect_read_error(dir + "/text.png", "not a supported image format");

  // A damaged byte in the compressed body: caught by the chunk checksum.
  std::string png = read_bytes(data_path("images/horse.png"));
  png[png.size() / 2] = static_cast<char>(png[png.size() / 2] ^ 0x5A);
  write_bytes(dir + "/damaged.png", png);
  expect_read_error(dir + "/damaged.png", "checksum mismatch in chunk 'IDAT'");
  // A body that is not zlib data but has valid checksums: the decoder fails.
  write_bytes(dir + "/bad_zlib.png", make_png(2, 8, 2, {std::string(6, 'a')}, "", "not zlib data"));
  expect_read_error(dir + "/bad_zlib.png", "corrupt");
  // A JPEG signature followed by noise.
  write_bytes(dir + "/noise_after_soi.jpg", std::string("\xff\xd8\xff", 3) + noise + "\xff\xd9");
  expect_read_error(dir + "/noise_after_soi.jpg", "cannot read image");
}

}  // namespace
}  // namespace albef::vision
