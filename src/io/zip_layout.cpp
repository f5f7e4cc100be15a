#include "io/zip_layout.h"

#include "albef/core/error.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace albef::io::detail {
namespace {

constexpr uint64_t kMax32 = 0xffffffffu;

class FileBytes {
 public:
  explicit FileBytes(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) fail(path, ": cannot open");
    in_.seekg(0, std::ios::end);
    size_ = static_cast<uint64_t>(in_.tellg());
  }
  uint64_t size() const { return size_; }
  /// `n` bytes at `offset`; an archive whose structures point past the end is corrupt.
  std::string read(uint64_t offset, uint64_t n, const char* what) {
    if (offset > size_ || n > size_ - offset)
      fail(path_, ": corrupt zip archive: ", what, " at byte ", offset, " runs past the end of the file (", size_,
           " bytes)");
    std::string bytes(n, '\0');
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(bytes.data(), static_cast<std::streamsize>(n));
    if (static_cast<uint64_t>(in_.gcount()) != n) fail(path_, ": read failed");
    return bytes;
  }

 private:
  const std::string& path_;
  std::ifstream in_;
  uint64_t size_ = 0;
};

uint64_t little_endian(const std::string& bytes, size_t at, size_t width) {
  uint64_t value = 0;
  for (size_t i = 0; i < width; ++i) value |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return value;
}

struct Directory {
  uint64_t entries = 0, size = 0, offset = 0, end = 0;  // end: where the central directory must stop
};

Directory find_directory(FileBytes& file, const std::string& path) {
  // The end-of-central-directory record: 22 bytes plus a comment of up to 65,535.
  const uint64_t tail_size = std::min<uint64_t>(file.size(), 22 + 65535);
  const std::string tail = file.read(file.size() - tail_size, tail_size, "the end of the archive");
  const size_t at = tail.size() < 22 ? std::string::npos : tail.rfind(std::string("PK\x05\x06", 4), tail.size() - 22);
  if (at == std::string::npos) fail(path, ": corrupt zip archive: no end-of-central-directory record");
  const uint64_t eocd = file.size() - tail_size + at;
  Directory dir{little_endian(tail, at + 10, 2), little_endian(tail, at + 12, 4), little_endian(tail, at + 16, 4), eocd};
  if (dir.entries == 0xffff || dir.size == kMax32 || dir.offset == kMax32) {  // zip64
    if (eocd < 20) fail(path, ": corrupt zip archive: zip64 locator missing");
    const std::string locator = file.read(eocd - 20, 20, "the zip64 locator");
    if (locator.compare(0, 4, "PK\x06\x07", 4) != 0) fail(path, ": corrupt zip archive: zip64 locator missing");
    const uint64_t record_at = little_endian(locator, 8, 8);
    const std::string record = file.read(record_at, 56, "the zip64 end-of-central-directory record");
    if (record.compare(0, 4, "PK\x06\x06", 4) != 0) fail(path, ": corrupt zip archive: bad zip64 end record");
    dir = {little_endian(record, 32, 8), little_endian(record, 40, 8), little_endian(record, 48, 8), record_at};
  }
  if (dir.offset > dir.end || dir.size > dir.end - dir.offset)
    fail(path, ": corrupt zip archive: the central directory (", dir.size, " bytes at ", dir.offset,
         ") overlaps the records after it");
  return dir;
}

}  // namespace

void check_zip_layout(const std::string& path) {
  FileBytes file(path);
  const Directory dir = find_directory(file, path);
  const std::string central = file.read(dir.offset, dir.size, "the central directory");
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [local header, end of data) of each entry
  size_t at = 0;
  for (uint64_t i = 0; i < dir.entries; ++i) {
    if (central.size() - at < 46 || central.compare(at, 4, "PK\x01\x02", 4) != 0)
      fail(path, ": corrupt zip archive: central directory entry ", i, " is malformed");
    uint64_t compressed = little_endian(central, at + 20, 4);
    uint64_t local = little_endian(central, at + 42, 4);
    const size_t name_length = little_endian(central, at + 28, 2), extra_length = little_endian(central, at + 30, 2),
                 comment_length = little_endian(central, at + 32, 2);
    if (central.size() - at - 46 < name_length + extra_length + comment_length)
      fail(path, ": corrupt zip archive: central directory entry ", i, " runs past the directory");
    const std::string name = central.substr(at + 46, name_length);
    // Zip64: the sizes and offset that do not fit in 32 bits follow in extra field 0x0001, in this order.
    for (size_t extra = at + 46 + name_length, end = extra + extra_length; extra + 4 <= end;) {
      const uint64_t id = little_endian(central, extra, 2), size = little_endian(central, extra + 2, 2);
      if (extra + 4 + size > end) break;
      if (id == 1) {
        size_t field = extra + 4;
        auto take = [&](uint64_t& value) {
          if (value != kMax32) return;
          if (field + 8 > extra + 4 + size) fail(path, ": corrupt zip archive: entry '", name, "' has a short zip64 field");
          value = little_endian(central, field, 8);
          field += 8;
        };
        uint64_t uncompressed = little_endian(central, at + 24, 4);
        take(uncompressed);
        take(compressed);
        take(local);
      }
      extra += 4 + size;
    }
    const std::string header = file.read(local, 30, ("the local header of '" + name + "'").c_str());
    if (header.compare(0, 4, "PK\x03\x04", 4) != 0)
      fail(path, ": corrupt zip archive: entry '", name, "' points at byte ", local, ", which is not a local header");
    const uint64_t local_name_length = little_endian(header, 26, 2), local_extra_length = little_endian(header, 28, 2);
    if (file.read(local + 30, local_name_length, "a local header's name") != name)
      fail(path, ": corrupt zip archive: entry '", name, "' points at the local header of another record");
    const uint64_t data_end = local + 30 + local_name_length + local_extra_length + compressed;
    if (data_end > dir.offset)
      fail(path, ": corrupt zip archive: the data of '", name, "' runs into the central directory");
    spans.emplace_back(local, data_end);
    at += 46 + name_length + extra_length + comment_length;
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      fail(path, ": corrupt zip archive: two entries share bytes (at ", spans[i].first, ")");
}

}  // namespace albef::io::detail
