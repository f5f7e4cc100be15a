// LazyCheckpoint: tensor data read from the file only on demand (fetch, release, CRC-checked read_into
// and read_in_rows).
#include "albef/io/checkpoint.h"

#include "albef/core/error.h"
#include "io/checkpoint_internal.h"
#include "io/zip_layout.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

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
  std::ifstream file;  // for read_into and read_in_rows, opened on first use

  struct Placement;
  std::optional<Placement> place(const at::Tensor& tensor);
  void read_next(const Placement& placement, char* data, size_t n, uLong& crc);
  void check_crc(const Placement& placement, uLong crc) const;
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

// Where a hollow tensor's record lies in the file, for reading it straight
// from there: only for a contiguous tensor spanning an uncompressed record.
struct LazyCheckpoint::Impl::Placement {
  const Record* record;
  size_t offset;
  uint32_t crc;
};

std::optional<LazyCheckpoint::Impl::Placement> LazyCheckpoint::Impl::place(const at::Tensor& tensor) {
  if (!reader) return std::nullopt;
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  const auto it = records.find(storage);
  if (it == records.end() || storage->data() != nullptr) return std::nullopt;
  const Record& record = it->second;
  if (!tensor.is_contiguous() || tensor.storage_offset() != 0 || tensor.nbytes() != record.nbytes || record.nbytes == 0)
    return std::nullopt;
  const size_t offset = detail::reading(path, [&] { return reader->getRecordOffset(record.name); });
  if (!file.is_open()) file.open(path, std::ios::binary);
  // Compressed records (which torch.save does not write) take the reader's path.
  const std::optional<uint32_t> crc = stored_record_crc(file, offset, record.nbytes);
  if (!crc) return std::nullopt;
  file.clear();
  file.seekg(static_cast<std::streamoff>(offset));
  return Placement{&record, offset, *crc};
}

// Reads the next `n` bytes of the placed record into `data`, adding them to `crc`.
void LazyCheckpoint::Impl::read_next(const Placement& placement, char* data, size_t n, uLong& crc) {
  file.read(data, static_cast<std::streamsize>(n));
  if (!file) fail(path, ": storage record '", placement.record->name, "' is cut short");
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(data), n);
}

void LazyCheckpoint::Impl::check_crc(const Placement& placement, uLong crc) const {
  if (crc != placement.crc) fail(path, ": storage record '", placement.record->name, "' is corrupt (CRC-32 mismatch)");
}

bool LazyCheckpoint::read_into(const at::Tensor& tensor, at::Tensor& destination) {
  if (!destination.device().is_cpu() || destination.scalar_type() != tensor.scalar_type() ||
      destination.sizes() != tensor.sizes() || !destination.is_contiguous())
    return false;
  const std::optional<Impl::Placement> placement = impl_->place(tensor);
  if (!placement) return false;
  uLong crc = crc32_z(0L, Z_NULL, 0);
  impl_->read_next(*placement, static_cast<char*>(destination.data_ptr()), placement->record->nbytes, crc);
  impl_->check_crc(*placement, crc);
  return true;
}

bool LazyCheckpoint::read_in_rows(const at::Tensor& tensor, int64_t rows_per_block,
                                  const std::function<void(const at::Tensor& block, int64_t first_row)>& take) {
  if (tensor.dim() < 1 || tensor.size(0) == 0) return false;
  const std::optional<Impl::Placement> placement = impl_->place(tensor);
  if (!placement) return false;
  const int64_t rows = tensor.size(0), per_block = std::min(rows, std::max<int64_t>(1, rows_per_block));
  const size_t row_bytes = placement->record->nbytes / static_cast<size_t>(rows);
  std::vector<int64_t> block_shape = tensor.sizes().vec();
  block_shape[0] = per_block;
  const at::Tensor block = at::empty(block_shape, tensor.options());
  uLong crc = crc32_z(0L, Z_NULL, 0);
  for (int64_t begin = 0; begin < rows; begin += per_block) {
    const at::Tensor part = block.slice(0, 0, std::min(per_block, rows - begin));
    impl_->read_next(*placement, static_cast<char*>(part.data_ptr()), static_cast<size_t>(part.size(0)) * row_bytes, crc);
    take(part, begin);
  }
  impl_->check_crc(*placement, crc);
  return true;
}

}  // namespace albef::io
