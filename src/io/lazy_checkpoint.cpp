// LazyCheckpoint: tensor data read from the file only on demand (fetch, release, CRC-checked read_into).
#include "albef/io/checkpoint.h"

#include "albef/core/error.h"
#include "io/checkpoint_internal.h"
#include "io/zip_layout.h"

#include <caffe2/serialize/inline_container.h>
#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace albef::io {
namespace {

/// Reads `n` bytes at `offset`, or nothing when the file is shorter.
std::optional<std::string> read_at(std::ifstream& in, size_t offset, size_t n) {
  std::string bytes(n, '\0');
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  if (!in) return std::nullopt;
  return bytes;
}

uint64_t little_endian(std::string_view bytes, size_t at, int width) {
  uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = value << 8 | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

/// The CRC-32 of the zip record whose data starts at `data_offset`, if it is
/// stored uncompressed with exactly `nbytes` bytes (as torch.save writes every
/// record). The local header ends right at the data (30 fixed bytes, the name,
/// then an extra field torch.save uses to align the data to 64 bytes), so a
/// short window before the data holds it. Files written by a stream put the
/// CRC and sizes in a descriptor after the data instead (flag bit 3).
std::optional<uint32_t> stored_record_crc(std::ifstream& in, size_t data_offset, size_t nbytes) {
  constexpr size_t kFixed = 30, kWindow = 4096;
  const size_t begin = data_offset > kWindow ? data_offset - kWindow : 0;
  const std::optional<std::string> window = read_at(in, begin, data_offset - begin);
  if (!window || window->size() < kFixed) return std::nullopt;
  for (size_t p = window->size() - kFixed + 1; p-- > 0;) {
    if (window->compare(p, 4, "PK\x03\x04") != 0 ||
        begin + p + kFixed + little_endian(*window, p + 26, 2) + little_endian(*window, p + 28, 2) != data_offset)
      continue;
    const uint64_t flags = little_endian(*window, p + 6, 2), method = little_endian(*window, p + 8, 2);
    if (method != 0) return std::nullopt;  // compressed
    if ((flags & 0x8) == 0) {
      if (little_endian(*window, p + 18, 4) != nbytes || little_endian(*window, p + 22, 4) != nbytes)
        return std::nullopt;
      return static_cast<uint32_t>(little_endian(*window, p + 14, 4));
    }
    // Data descriptor: [signature] CRC-32, then both sizes in 4 or (zip64) 8 bytes.
    const std::optional<std::string> after = read_at(in, data_offset + nbytes, 24);
    if (!after) return std::nullopt;
    const size_t crc_at = after->compare(0, 4, "PK\x07\x08") == 0 ? 4 : 0;
    for (const int width : {4, 8})
      if (little_endian(*after, crc_at + 4, width) == nbytes && little_endian(*after, crc_at + 4 + width, width) == nbytes)
        return static_cast<uint32_t>(little_endian(*after, crc_at, 4));
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

struct LazyCheckpoint::Impl {
  std::string path;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;  // zip files only
  struct Record {
    std::string name;
    size_t nbytes;
  };
  std::unordered_map<const c10::StorageImpl*, Record> records;  // hollow storages and where their data is
  PyObjectPtr root;
  std::ifstream file;  // for read_into, opened on first use
};

LazyCheckpoint::LazyCheckpoint(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  detail::reading(path, [&] {
    if (!detail::is_zip(path)) {
      impl_->root = detail::read_legacy(path);
      return;
    }
    detail::check_zip_layout(path);
    impl_->reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    impl_->root = detail::read_zip_pickle(*impl_->reader, path, [&](const std::string& record, size_t nbytes) {
      // Sized but without data: tensors can be built on it, and fetch() fills it.
      c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, at::DataPtr(nullptr, at::Device(at::kCPU)),
                           nullptr, false);
      impl_->records.emplace(storage.unsafeGetStorageImpl(), Impl::Record{record, nbytes});
      return storage;
    });
  });
}

LazyCheckpoint::~LazyCheckpoint() = default;

const PyObjectPtr& LazyCheckpoint::root() const { return impl_->root; }
const std::string& LazyCheckpoint::path() const { return impl_->path; }

void LazyCheckpoint::fetch(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  const auto it = impl_->records.find(storage);
  if (it == impl_->records.end() || storage->data() != nullptr || it->second.nbytes == 0) return;
  storage->set_data_ptr_noswap(detail::reading(impl_->path, [&] {
    return detail::read_record(*impl_->reader, impl_->path, it->second.name, it->second.nbytes);
  }));
}

void LazyCheckpoint::release(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  if (impl_->records.count(storage)) storage->set_data_ptr_noswap(at::DataPtr(nullptr, at::Device(at::kCPU)));
}

bool LazyCheckpoint::read_into(const at::Tensor& tensor, at::Tensor& destination) {
  if (!impl_->reader) return false;
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  const auto it = impl_->records.find(storage);
  if (it == impl_->records.end() || storage->data() != nullptr) return false;
  const Impl::Record& record = it->second;
  if (!destination.device().is_cpu() || destination.scalar_type() != tensor.scalar_type() ||
      destination.sizes() != tensor.sizes() || !destination.is_contiguous() || !tensor.is_contiguous() ||
      tensor.storage_offset() != 0 || tensor.nbytes() != record.nbytes || record.nbytes == 0)
    return false;
  const std::string& path = impl_->path;
  const size_t offset = detail::reading(path, [&] { return impl_->reader->getRecordOffset(record.name); });
  if (!impl_->file.is_open()) impl_->file.open(path, std::ios::binary);
  // Compressed records (which torch.save does not write) take the reader's path.
  const std::optional<uint32_t> expected_crc = stored_record_crc(impl_->file, offset, record.nbytes);
  if (!expected_crc) return false;
  auto* data = static_cast<char*>(destination.data_ptr());
  impl_->file.clear();
  impl_->file.seekg(static_cast<std::streamoff>(offset));
  impl_->file.read(data, static_cast<std::streamsize>(record.nbytes));
  if (!impl_->file) fail(path, ": storage record '", record.name, "' is cut short");
  const uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data), record.nbytes);
  if (crc != *expected_crc) fail(path, ": storage record '", record.name, "' is corrupt (CRC-32 mismatch)");
  return true;
}

}  // namespace albef::io
