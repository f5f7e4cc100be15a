// The region that holds large tensor buffers apart from glibc's heap
// (core/tensor_heap.h): best fit, merged neighbours, pages given back, blocks
// it does not take, and threads allocating at once.
#include "albef/core/runtime.h"
#include "core/tensor_heap.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

namespace {

using albef::TensorHeap;

constexpr size_t KiB = 1024, MiB = 1024 * 1024;

TEST(TensorHeap, FreedBlocksAreReusedBestFit) {
  TensorHeap heap(64 * MiB);
  c10::DataPtr large = heap.allocate(MiB);
  c10::DataPtr gap1 = heap.allocate(256 * KiB);
  c10::DataPtr medium = heap.allocate(512 * KiB);
  c10::DataPtr gap2 = heap.allocate(256 * KiB);
  void* const large_at = large.get();
  void* const medium_at = medium.get();
  large.clear();
  medium.clear();
  EXPECT_EQ(heap.stats().free_blocks, 2u);
  // 400 KB fits both free blocks: the smaller one serves it, the 1 MB block stays whole.
  c10::DataPtr request = heap.allocate(400 * KiB);
  EXPECT_EQ(request.get(), medium_at);
  c10::DataPtr whole = heap.allocate(MiB);
  EXPECT_EQ(whole.get(), large_at);
}

TEST(TensorHeap, FreeNeighboursMergeAndTheTopComesDown) {
  TensorHeap heap(64 * MiB);
  c10::DataPtr first = heap.allocate(512 * KiB), second = heap.allocate(512 * KiB);
  c10::DataPtr keeps_top = heap.allocate(256 * KiB);
  void* const first_at = first.get();
  first.clear();
  second.clear();
  EXPECT_EQ(heap.stats().free_blocks, 1u);
  EXPECT_EQ(heap.stats().free, MiB);
  c10::DataPtr joined = heap.allocate(MiB);
  EXPECT_EQ(joined.get(), first_at);  // one block again, where the two were
  joined.clear();
  keeps_top.clear();
  const TensorHeap::Stats empty = heap.stats();
  EXPECT_EQ(empty.top, 0u);
  EXPECT_EQ(empty.in_use, 0u);
  EXPECT_EQ(empty.free_blocks, 0u);
}

TEST(TensorHeap, BlocksAreWholePagesAndRoundsOfTheSameSizeReuseThem) {
  TensorHeap heap(64 * MiB);
  c10::DataPtr block = heap.allocate(300 * KiB + 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(block.get()) % 4096, 0u);
  EXPECT_EQ(heap.stats().in_use, 304 * KiB);
  void* const at = block.get();
  block.clear();
  for (int round = 0; round < 3; ++round) {
    c10::DataPtr again = heap.allocate(300 * KiB + 1);
    EXPECT_EQ(again.get(), at);
  }
}

TEST(TensorHeap, SmallHugeAndBypassedBlocksComeFromC10) {
  TensorHeap heap(8 * MiB, /*large_from=*/256 * KiB, /*large_until=*/4 * MiB);
  c10::DataPtr small = heap.allocate(4 * KiB);
  c10::DataPtr huge = heap.allocate(5 * MiB);
  c10::DataPtr empty = heap.allocate(0);
  EXPECT_EQ(heap.stats().in_use, 0u);
  EXPECT_NE(small.get(), nullptr);
  EXPECT_NE(huge.get(), nullptr);
  EXPECT_EQ(empty.get(), nullptr);
  std::memset(huge.get(), 1, 5 * MiB);
  heap.begin_bypass();
  heap.begin_bypass();
  heap.end_bypass();
  c10::DataPtr bypassed = heap.allocate(MiB);  // still within the outer bypass
  EXPECT_EQ(heap.stats().in_use, 0u);
  heap.end_bypass();
  c10::DataPtr taken = heap.allocate(MiB);
  EXPECT_EQ(heap.stats().in_use, MiB);
  // Once the range is full, blocks come from c10 and still work.
  c10::DataPtr more = heap.allocate(3 * MiB + 512 * KiB), fills = heap.allocate(3 * MiB);
  EXPECT_EQ(heap.stats().in_use, 7 * MiB + 512 * KiB);
  c10::DataPtr overflow = heap.allocate(MiB);
  EXPECT_EQ(heap.stats().in_use, 7 * MiB + 512 * KiB);
  std::memset(overflow.get(), 2, MiB);
}

TEST(TensorHeap, ReleasedPagesComeBackZeroed) {
  TensorHeap heap(64 * MiB);
  c10::DataPtr block = heap.allocate(MiB);
  c10::DataPtr keeps_top = heap.allocate(256 * KiB);
  void* const at = block.get();
  std::memset(block.get(), 0xab, MiB);
  block.clear();
  heap.release_free_pages();
  c10::DataPtr again = heap.allocate(MiB);
  ASSERT_EQ(again.get(), at);
  const auto* bytes = static_cast<const unsigned char*>(again.get());
  for (size_t i = 0; i < MiB; i += 4096) ASSERT_EQ(bytes[i], 0) << "page at " << i << " kept its old contents";
}

TEST(TensorHeap, ThreadsAllocatingAtOnceGetBlocksOfTheirOwn) {
  TensorHeap heap(512 * MiB);
  auto work = [&heap](unsigned seed) {
    std::mt19937 random(seed);
    std::vector<std::pair<c10::DataPtr, unsigned char>> held;
    for (int i = 0; i < 400; ++i) {
      if (held.size() > 6 || (random() % 3 == 0 && !held.empty())) {
        const size_t pick = random() % held.size();
        // Every byte it wrote is still its own: no other block overlapped it.
        const auto* bytes = static_cast<const unsigned char*>(held[pick].first.get());
        for (size_t j = 0; j < 256 * KiB; j += 512) ASSERT_EQ(bytes[j], held[pick].second);
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(pick));
        continue;
      }
      const size_t size = 256 * KiB + (random() % 16) * 64 * KiB;
      const auto mark = static_cast<unsigned char>(random());
      c10::DataPtr block = heap.allocate(size);
      std::memset(block.get(), mark, size);
      held.emplace_back(std::move(block), mark);
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 4; ++t) threads.emplace_back(work, 17 + t);
  for (auto& thread : threads) thread.join();
  const TensorHeap::Stats after = heap.stats();
  EXPECT_EQ(after.in_use, 0u);
  EXPECT_EQ(after.top, 0u);
}

// The process's heap, as init_runtime installs it.
class ProcessTensorHeap : public ::testing::Test {
 protected:
  void SetUp() override {
    albef::init_runtime(at::get_num_threads());
#ifdef __SANITIZE_ADDRESS__
    GTEST_SKIP() << "AddressSanitizer builds keep tensors in its own allocator";
#endif
    heap = albef::tensor_heap();
    ASSERT_NE(heap, nullptr);
  }
  TensorHeap* heap = nullptr;
};

TEST_F(ProcessTensorHeap, InitRuntimeServesLargeTensorsFromIt) {
  const size_t before = heap->stats().in_use;
  {
    at::Tensor large = at::ones({512, 1024});  // 2 MiB
    EXPECT_EQ(heap->stats().in_use, before + 2 * MiB);
    EXPECT_EQ(large.sum().item<float>(), 512.0f * 1024.0f);
    at::Tensor small = at::ones({16});
    EXPECT_EQ(heap->stats().in_use, before + 2 * MiB);
  }
  EXPECT_EQ(heap->stats().in_use, before);
  {
    const albef::TransientBuffersToOs transient;
    at::Tensor one_off = at::ones({512, 1024});
    EXPECT_EQ(heap->stats().in_use, before);
  }
}

TEST_F(ProcessTensorHeap, TransientBuffersOfAQuarterMegabyteGoBackToTheOsWhenFreed) {
  // A 768 x 768 int8 layer (576 KiB), as a bf16 or int8 model is built before packing replaces it: kept in
  // glibc's heap once freed, its pages stayed resident beside the packed copy.
#ifdef __SANITIZE_THREAD__
  GTEST_SKIP() << "ThreadSanitizer serves malloc from its own allocator: glibc's counts do not see it";
#endif
  const albef::TransientBuffersToOs transient;
  // glibc maps a block from the OS only when no free block of its heap holds it: in a process where other
  // tests ran first (one gtest run of every test), freed blocks may serve it. CTest runs each test alone.
  if (mallinfo2().fordblks >= 768 * 768)
    GTEST_SKIP() << "the heap holds " << mallinfo2().fordblks << " free bytes that may serve the block";
  const size_t mapped = mallinfo2().hblkhd;
  {
    at::Tensor weight = at::empty({768, 768}, at::kChar);
    EXPECT_GE(mallinfo2().hblkhd, mapped + 768 * 768);
  }
  EXPECT_EQ(mallinfo2().hblkhd, mapped);
}

TEST_F(ProcessTensorHeap, AForkedChildAllocatesWhileItsParentsThreadsDo) {
  std::atomic<bool> stop{false};
  std::thread busy([&stop] {
    while (!stop) at::Tensor block = at::empty({1 << 20});  // 4 MiB, from the heap, over and over
  });
  for (int round = 0; round < 20; ++round) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // The lock was not inherited mid-allocation: the child's own blocks come and go.
      c10::DataPtr block = heap->allocate(4 * MiB);
      std::memset(block.get(), 1, 4 * MiB);
      block.clear();
      _exit(0);
    }
    int status = 0;
    for (int waited = 0; waited < 500 && waitpid(child, &status, WNOHANG) == 0; ++waited) usleep(10000);
    if (waitpid(child, &status, WNOHANG) == 0) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      stop = true;
      busy.join();
      FAIL() << "the child did not finish within 5 s (a lock inherited mid-allocation?)";
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  stop = true;
  busy.join();
}

}  // namespace
