#pragma once
// Large tensor buffers in a region of their own, apart from glibc's heap.
//
// With init_runtime keeping freed blocks in glibc's heap (against page faults
// on every large tensor), small long-lived objects made between passes (oneDNN
// primitives cached on first use, tensor metadata) land in the holes that
// freed activations leave and pin them: at int8's peak for 32 images, 30 MiB
// of the heap were such holes. Here blocks of 256 KB and more are placed best
// fit, page-aligned, in a reserved range that holds nothing else, and a freed
// block merges with its free neighbours.

#include <c10/core/Allocator.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <set>
#include <utility>

namespace albef {

/// Where a tensor buffer counts as large: the process's region takes blocks
/// from this size, and TransientBuffersToOs maps them from the OS.
constexpr size_t kLargeTensorBytes = 256 << 10;

class TensorHeap final : public c10::Allocator {
 public:
  /// Reserves `reserve_bytes` of address space (no memory until touched).
  /// Blocks of [large_from, large_until) bytes come from it; others, and any
  /// once the range is full or while bypassed, from c10::alloc_cpu (glibc, as
  /// c10's default CPU allocator). Throws when the range cannot be reserved
  /// (strict overcommit, say).
  TensorHeap(size_t reserve_bytes, size_t large_from = kLargeTensorBytes, size_t large_until = size_t{1} << 30);
  ~TensorHeap() override;
  TensorHeap(const TensorHeap&) = delete;
  TensorHeap& operator=(const TensorHeap&) = delete;

  c10::DataPtr allocate(size_t bytes) const override;
  c10::DeleterFnPtr raw_deleter() const override;

  /// Gives the pages of the free blocks (and of the range above the highest
  /// block in use) back to the OS; they come back zeroed when reused.
  void release_free_pages();

  /// Between these calls (they nest) blocks bypass the region: for
  /// TransientBuffersToOs's one-off buffers, which glibc then maps from the OS
  /// and unmaps when freed.
  void begin_bypass();
  void end_bypass();

  /// Held across fork() (install_tensor_heap registers them): a child must
  /// not inherit the lock in the middle of another thread's allocation.
  void lock_for_fork() const { mutex_.lock(); }
  void unlock_after_fork() const { mutex_.unlock(); }

  struct Stats {
    size_t in_use = 0;      ///< bytes in live blocks
    size_t free = 0;        ///< bytes in free blocks below the top
    size_t top = 0;         ///< end of the highest block in use
    size_t free_blocks = 0;
  };
  Stats stats() const;

 private:
  void* take(size_t bytes) const;
  void give_back(char* block) const;
  bool owns(const void* pointer) const;
  static void release(void* pointer);

  char* base_ = nullptr;
  size_t reserved_ = 0, large_from_, large_until_;
  mutable std::mutex mutex_;
  mutable size_t top_ = 0, touched_ = 0, in_use_ = 0;
  int bypass_depth_ = 0;
  mutable std::map<size_t, size_t> free_by_offset_, live_by_offset_;
  mutable std::set<std::pair<size_t, size_t>> free_by_size_;  // (size, offset): best fit is lower_bound
};

/// The process's heap, made by install_tensor_heap (nullptr before, where the
/// range could not be reserved, and in AddressSanitizer builds).
TensorHeap* tensor_heap();

/// Returns the pages of freed heap blocks (glibc's and the process's
/// TensorHeap's) to the OS: between phases whose passes differ in shape (the
/// loading's buffers and the model's; a gallery's encoding and its
/// re-ranking), where one phase's free blocks would otherwise stay resident
/// beside the next one's.
void give_back_free_pages();

/// Makes a TensorHeap c10's CPU allocator, once, for the rest of the process
/// (its blocks may be freed at exit); the range is twice the machine's memory.
/// Called by init_runtime; not in AddressSanitizer builds.
void install_tensor_heap();

}  // namespace albef
