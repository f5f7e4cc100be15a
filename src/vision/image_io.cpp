// Image decoding that matches PIL's `Image.open(path).convert('RGB')`.
//
// OpenCV decodes with the same libjpeg(-turbo) settings as PIL (ISLOW DCT,
// fancy upsampling) and with libpng, so the pixels agree. Where the two
// libraries disagree, this file follows PIL:
//  - EXIF orientation is ignored (PIL's `open` does not apply it);
//  - alpha is dropped without compositing, grey is replicated, palettes are
//    expanded (libpng's expand + strip-alpha does exactly that);
//  - 16-bit PNGs: PIL keeps the high byte of 16-bit RGB(A)/grey+alpha
//    samples, as libpng's strip-16 does, but opens plain 16-bit grey as mode
//    "I" whose conversion to RGB clips the value to 255 (no scaling), so that
//    one case is decoded at 16 bits and clipped here.
// Not reproduced: CMYK/YCCK JPEGs (OpenCV's CMYK->RGB rounds differently
// from PIL's) and formats OpenCV lacks (GIF), which fail with an Error.
// OpenCV reports a truncated JPEG only as a libjpeg warning on stderr and
// returns a partly grey image, and libpng prints its own errors, so the
// container structure (JPEG markers up to EOI, PNG chunks up to IEND with
// the checksums of the critical chunks) is checked here before decoding.
// What still reaches stderr (libpng on a corrupt zlib stream, OpenCV 4.6's
// imdecode on malformed BMP/HDR/... headers) is written by libpng or with
// std::cerr, not through cv::utils::logging, so it cannot be silenced
// without redirecting the process's stderr.

#include "albef/vision/image.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string_view>

namespace albef::vision {
namespace {

constexpr std::string_view kJpegSignature("\xff\xd8\xff", 3);
constexpr std::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);
constexpr char kTruncatedJpeg[] = "truncated JPEG (the data ends before the end-of-image marker)";
constexpr char kTruncatedPng[] = "truncated PNG (the data ends before the IEND chunk)";

uint8_t byte_at(std::string_view data, size_t pos) { return static_cast<uint8_t>(data[pos]); }

uint32_t big_endian(std::string_view data, size_t pos, int nbytes) {
  uint32_t value = 0;
  for (int i = 0; i < nbytes; ++i) value = (value << 8) | byte_at(data, pos + i);
  return value;
}

uint32_t crc32(std::string_view data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (const char ch : data) crc = table[(crc ^ static_cast<uint8_t>(ch)) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

// Markers without a length field: TEM, RSTn, SOI.
bool standalone_marker(uint8_t marker) { return marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8); }

// Follows the JPEG segments and entropy-coded scans up to EOI. Returns the
// problem, or an empty string when the stream is complete. Stray bytes
// between segments are skipped, as libjpeg does (with a warning).
std::string jpeg_problem(std::string_view data) {
  const size_t size = data.size();
  size_t pos = 2;  // after SOI
  while (true) {
    while (pos < size && byte_at(data, pos) != 0xFF) ++pos;
    while (pos < size && byte_at(data, pos) == 0xFF) ++pos;  // fill bytes
    if (pos >= size) return kTruncatedJpeg;
    const uint8_t marker = byte_at(data, pos++);
    if (marker == 0xD9) return {};
    if (marker == 0x00 || standalone_marker(marker)) continue;
    if (pos + 2 > size) return kTruncatedJpeg;
    const size_t length = big_endian(data, pos, 2);
    if (length < 2) return "corrupt JPEG (a segment length is smaller than 2)";
    pos += length;
    if (pos > size) return kTruncatedJpeg;
    if (marker != 0xDA) continue;
    // Scan data: 0xFF only appears stuffed (FF 00), as a restart marker or
    // as fill before the next real marker.
    while (true) {
      const void* ff = std::memchr(data.data() + pos, 0xFF, size - pos);
      if (!ff) return kTruncatedJpeg;
      pos = static_cast<const char*>(ff) - data.data();
      if (pos + 1 >= size) return kTruncatedJpeg;
      const uint8_t next = byte_at(data, pos + 1);
      if (next == 0xFF) {
        ++pos;
      } else if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
        pos += 2;
      } else {
        break;
      }
    }
  }
}

// Follows the PNG chunks up to IEND, checking the CRC of critical chunks
// (libpng rejects those too; a bad ancillary chunk is only skipped).
std::string png_problem(std::string_view data) {
  const size_t size = data.size();
  size_t pos = kPngSignature.size();
  while (true) {
    if (size - pos < 12) return kTruncatedPng;
    const size_t length = big_endian(data, pos, 4);
    if (length > size - pos - 12) return kTruncatedPng;
    const std::string_view type = data.substr(pos + 4, 4);
    const bool critical = (type[0] & 0x20) == 0;
    if (critical && crc32(data.substr(pos + 4, 4 + length)) != big_endian(data, pos + 8 + length, 4))
      return str_cat("corrupt PNG (checksum mismatch in chunk '", type, "')");
    if (type == "IEND") return {};
    pos += 12 + length;
  }
}

// Plain 16-bit grey (IHDR bit depth 16, colour type 0), the one PNG layout
// whose conversion differs between PIL and libpng's strip-16.
bool is_grey16_png(std::string_view data) {
  return data.size() >= 26 && data.substr(12, 4) == "IHDR" && byte_at(data, 24) == 16 && byte_at(data, 25) == 0;
}

}  // namespace

cv::Mat read_rgb(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) fail_missing(path, ": cannot read image: no such file");
  if (fs::is_directory(status)) fail(path, ": cannot read image: it is a directory");
  return decode_rgb(read_file(path), path);
}

std::optional<std::pair<int64_t, int64_t>> image_dimensions(std::string_view data) {
  if (data.substr(0, kPngSignature.size()) == kPngSignature) {
    if (data.size() < 24 || data.substr(12, 4) != "IHDR") return std::nullopt;
    return std::make_pair(static_cast<int64_t>(big_endian(data, 16, 4)), static_cast<int64_t>(big_endian(data, 20, 4)));
  }
  if (data.substr(0, kJpegSignature.size()) != kJpegSignature) return std::nullopt;
  // The first start-of-frame marker (C0-CF but C4, C8, CC) holds height and width.
  for (size_t pos = 2; pos + 9 <= data.size();) {
    if (byte_at(data, pos) != 0xFF) return std::nullopt;
    const unsigned marker = byte_at(data, pos + 1);
    if (marker == 0xFF) {
      ++pos;
      continue;
    }
    if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC)
      return std::make_pair(static_cast<int64_t>(big_endian(data, pos + 7, 2)),
                            static_cast<int64_t>(big_endian(data, pos + 5, 2)));
    pos += 2 + big_endian(data, pos + 2, 2);
  }
  return std::nullopt;
}

cv::Mat decode_rgb(std::string_view bytes, const std::string& path) {
  if (bytes.empty()) fail(path, ": cannot read image: the file is empty");
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    fail(path, ": cannot read image: the file is larger than 2 GiB");

  const std::string_view data = bytes;
  std::string problem;
  bool grey16 = false;
  if (data.substr(0, kJpegSignature.size()) == kJpegSignature) {
    problem = jpeg_problem(data);
  } else if (data.substr(0, kPngSignature.size()) == kPngSignature) {
    problem = png_problem(data);
    grey16 = is_grey16_png(data);
  }
  if (!problem.empty()) fail(path, ": cannot read image: ", problem);

  const int flags = cv::IMREAD_IGNORE_ORIENTATION |
                    (grey16 ? cv::IMREAD_GRAYSCALE | cv::IMREAD_ANYDEPTH : cv::IMREAD_COLOR);
  cv::Mat decoded;
  try {
    const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));  // only read
    decoded = cv::imdecode(buffer, flags);
  } catch (const std::exception& e) {
    fail(path, ": cannot read image: the decoder failed: ", e.what());
  }
  if (decoded.empty()) fail(path, ": cannot read image: not a supported image format, or corrupt data");

  cv::Mat rgb;
  if (grey16) {
    cv::Mat grey8;
    decoded.convertTo(grey8, CV_8U);  // saturating: values above 255 clip, as PIL's I->RGB
    cv::cvtColor(grey8, rgb, cv::COLOR_GRAY2RGB);
  } else {
    cv::cvtColor(decoded, rgb, cv::COLOR_BGR2RGB);
  }
  return rgb;
}

}  // namespace albef::vision
