#include "core/tensor_heap.h"

#include "albef/core/error.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <iterator>

namespace albef {
namespace {

constexpr size_t kPage = 4096;

size_t round_to_pages(size_t bytes) { return (bytes + kPage - 1) / kPage * kPage; }

// The heaps alive, for the deleter: c10's raw interface needs a plain
// function whose only argument is the pointer.
std::array<std::atomic<TensorHeap*>, 8> g_heaps{};
TensorHeap* g_process_heap = nullptr;  // never destroyed: tensors may outlive static destruction

}  // namespace

TensorHeap::TensorHeap(size_t reserve_bytes, size_t large_from, size_t large_until)
    : reserved_(round_to_pages(reserve_bytes)), large_from_(std::max(large_from, kPage)), large_until_(large_until) {
  void* range = mmap(nullptr, reserved_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ALBEF_CHECK(range != MAP_FAILED, "cannot reserve ", reserved_ >> 20, " MiB of address space for tensor buffers");
  base_ = static_cast<char*>(range);
  for (auto& slot : g_heaps) {
    TensorHeap* empty = nullptr;
    if (slot.compare_exchange_strong(empty, this)) return;
  }
  munmap(base_, reserved_);
  fail("more than ", g_heaps.size(), " tensor heaps at once");
}

TensorHeap::~TensorHeap() {
  for (auto& slot : g_heaps) {
    TensorHeap* self = this;
    slot.compare_exchange_strong(self, nullptr);
  }
  munmap(base_, reserved_);
}

bool TensorHeap::owns(const void* pointer) const {
  const char* p = static_cast<const char*>(pointer);
  return p >= base_ && p < base_ + reserved_;
}

void* TensorHeap::take(size_t bytes) const {
  const size_t size = round_to_pages(bytes);
  const std::lock_guard<std::mutex> lock(mutex_);
  if (bypass_depth_ > 0) return nullptr;
  size_t offset;
  const auto fit = free_by_size_.lower_bound({size, 0});
  if (fit != free_by_size_.end()) {
    const auto [block_size, block_offset] = *fit;
    free_by_size_.erase(fit);
    free_by_offset_.erase(block_offset);
    offset = block_offset;
    if (block_size > size) {
      free_by_offset_.emplace(offset + size, block_size - size);
      free_by_size_.emplace(block_size - size, offset + size);
    }
  } else {
    if (top_ + size > reserved_) return nullptr;
    offset = top_;
    top_ += size;
    touched_ = std::max(touched_, top_);
  }
  live_by_offset_.emplace(offset, size);
  in_use_ += size;
  return base_ + offset;
}

void TensorHeap::give_back(char* block) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  size_t offset = static_cast<size_t>(block - base_);
  const auto live = live_by_offset_.find(offset);
  ALBEF_CHECK(live != live_by_offset_.end(), "tensor heap: freeing ", static_cast<void*>(block),
              ", which is not a live block");
  size_t size = live->second;
  live_by_offset_.erase(live);
  in_use_ -= size;
  // Merge with the free neighbours, so that the next large request fits.
  auto next = free_by_offset_.find(offset + size);
  if (next != free_by_offset_.end()) {
    free_by_size_.erase({next->second, next->first});
    size += next->second;
    free_by_offset_.erase(next);
  }
  auto after = free_by_offset_.lower_bound(offset);
  if (after != free_by_offset_.begin()) {
    auto previous = std::prev(after);
    if (previous->first + previous->second == offset) {
      free_by_size_.erase({previous->second, previous->first});
      offset = previous->first;
      size += previous->second;
      free_by_offset_.erase(previous);
    }
  }
  if (offset + size == top_) {
    top_ = offset;  // the pages stay resident for the next blocks, as glibc's top does under init_runtime
  } else {
    free_by_offset_.emplace(offset, size);
    free_by_size_.emplace(size, offset);
  }
}

void TensorHeap::release(void* pointer) {
  if (!pointer) return;
  for (const auto& slot : g_heaps) {
    const TensorHeap* heap = slot.load();
    if (heap && heap->owns(pointer)) return heap->give_back(static_cast<char*>(pointer));
  }
  c10::free_cpu(pointer);
}

c10::DataPtr TensorHeap::allocate(size_t bytes) const {
  void* data = bytes >= large_from_ && bytes < large_until_ ? take(bytes) : nullptr;
  if (!data && bytes > 0) data = c10::alloc_cpu(bytes);
  return {data, data, &TensorHeap::release, c10::Device(c10::DeviceType::CPU)};
}

c10::DeleterFnPtr TensorHeap::raw_deleter() const { return &TensorHeap::release; }

void TensorHeap::release_free_pages() {
  const std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [offset, size] : free_by_offset_) madvise(base_ + offset, size, MADV_DONTNEED);
  if (touched_ > top_) madvise(base_ + top_, touched_ - top_, MADV_DONTNEED);
  touched_ = top_;
}

void TensorHeap::begin_bypass() {
  const std::lock_guard<std::mutex> lock(mutex_);
  ++bypass_depth_;
}

void TensorHeap::end_bypass() {
  const std::lock_guard<std::mutex> lock(mutex_);
  bypass_depth_ = std::max(0, bypass_depth_ - 1);
}

TensorHeap::Stats TensorHeap::stats() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  Stats stats;
  stats.in_use = in_use_;
  stats.top = top_;
  stats.free_blocks = free_by_offset_.size();
  for (const auto& block : free_by_offset_) stats.free += block.second;
  return stats;
}

TensorHeap* tensor_heap() { return g_process_heap; }

void give_back_free_pages() {
  malloc_trim(0);
  if (g_process_heap != nullptr) g_process_heap->release_free_pages();
}

void install_tensor_heap() {
#ifdef __SANITIZE_ADDRESS__
  return;  // AddressSanitizer checks buffers its own allocator made: the tensors' too
#endif
  static std::once_flag once;
  std::call_once(once, [] {
    const size_t memory = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
    try {
      g_process_heap = new TensorHeap(2 * memory);
    } catch (const std::exception&) {
      return;  // no range to reserve: glibc's heap serves every block, as before
    }
    pthread_atfork([] { g_process_heap->lock_for_fork(); }, [] { g_process_heap->unlock_after_fork(); },
                   [] { g_process_heap->unlock_after_fork(); });
    c10::SetCPUAllocator(g_process_heap);
  });
}

}  // namespace albef
