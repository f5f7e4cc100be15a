#include "albef/io/npy.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"

#include <ATen/ATen.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <regex>

namespace albef::io {
namespace {

struct NpyType {
  const char* descr;
  at::ScalarType scalar;
};

constexpr NpyType kTypes[] = {
    {"<f4", at::kFloat}, {"<f8", at::kDouble}, {"<i8", at::kLong}, {"<i4", at::kInt},
    {"|u1", at::kByte},  {"|b1", at::kBool},   {"<f2", at::kHalf}, {"|i1", at::kChar},
    {"<i2", at::kShort},
};

at::ScalarType scalar_from_descr(const std::string& descr, const std::string& path) {
  for (const auto& type : kTypes)
    if (descr == type.descr) return type.scalar;
  fail(path, ": unsupported .npy dtype '", descr, "'");
}

const char* descr_from_scalar(at::ScalarType scalar) {
  for (const auto& type : kTypes)
    if (scalar == type.scalar) return type.descr;
  fail("write_npy: unsupported tensor dtype ", c10::toString(scalar));
}

}  // namespace

at::Tensor read_npy(const std::string& path) {
  // The header is read first, then the data straight into the tensor: no second copy of a large array.
  std::ifstream in(path, std::ios::binary);
  if (!in && errno == ENOENT) fail_missing(path, ": cannot open (", std::strerror(errno), ")");
  if (!in) fail(path, ": cannot open (", std::strerror(errno), ")");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  std::string prefix(12, '\0');
  in.read(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  prefix.resize(static_cast<size_t>(in.gcount()));
  if (prefix.size() < 10 || prefix.compare(0, 6, "\x93NUMPY") != 0) fail(path, ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(prefix[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(prefix[8]) | (static_cast<unsigned char>(prefix[9]) << 8);
    offset = 10;
  } else {
    if (prefix.size() < 12) fail(path, ": truncated .npy header");
    uint32_t len32;
    std::memcpy(&len32, prefix.data() + 8, 4);
    header_len = len32;
    offset = 12;
  }
  if (offset + header_len > file_size) fail(path, ": truncated .npy header");
  std::string header(header_len, '\0');
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  std::smatch match;
  if (!std::regex_search(header, match, std::regex("'descr':\\s*'([^']+)'")))
    fail(path, ": .npy header has no descr");
  const at::ScalarType scalar = scalar_from_descr(match[1], path);
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True")))
    fail(path, ": Fortran-ordered .npy files are not supported");
  if (!std::regex_search(header, match, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    fail(path, ": .npy header has no shape");
  std::vector<int64_t> shape;
  const std::string dims = match[1];
  const std::regex number("[0-9]+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
    const std::string digits = it->str();
    int64_t dim = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), dim);
    if (error != std::errc()) fail(path, ": .npy shape dimension ", digits, " is out of range");
    shape.push_back(dim);
  }
  const size_t data_offset = offset + header_len;
  size_t nbytes = c10::elementSize(scalar);
  for (const int64_t dim : shape)
    if (__builtin_mul_overflow(nbytes, static_cast<size_t>(dim), &nbytes))
      fail(path, ": .npy shape (", dims, ") is larger than any file");
  if (data_offset > file_size) fail(path, ": .npy header runs past the end of the file");
  if (file_size - data_offset != nbytes)
    fail(path, ": .npy data has ", file_size - data_offset, " bytes, expected ", nbytes);
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(scalar));
  in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(nbytes));
  if (!in && nbytes > 0) fail(path, ": read failed");
  return tensor;
}

void write_npy(const std::string& path, const at::Tensor& tensor) {
  const at::Tensor data = tensor.to(at::kCPU).contiguous();
  std::string header = str_cat("{'descr': '", descr_from_scalar(data.scalar_type()),
                               "', 'fortran_order': False, 'shape': (");
  for (int64_t d = 0; d < data.dim(); ++d) header += str_cat(data.size(d), data.dim() == 1 ? "," : (d + 1 < data.dim() ? ", " : ""));
  header += "), }";
  // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) fail(path, ": cannot open for writing");
    out.write("\x93NUMPY\x01\x00", 8);
    const uint16_t len = static_cast<uint16_t>(header.size());
    out.put(static_cast<char>(len & 0xff));
    out.put(static_cast<char>(len >> 8));
    out << header;
    out.write(static_cast<const char*>(data.data_ptr()), data.numel() * data.element_size());
    if (!out) fail(path, ": write failed");
  });
}

}  // namespace albef::io
