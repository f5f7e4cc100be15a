#include "albef/ops/dropout.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/PhiloxRNGEngine.h>

#include <mutex>

namespace albef::ops {
namespace {

// Entries per Philox stream: a block is also the unit of parallel work.
constexpr int64_t kBlock = 1 << 14;

uint64_t seed_from_default_generator() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get<at::CPUGeneratorImpl>()->random64();
}

// Writes `kept` or `dropped` to each of the tensor's entries, `kept` with
// probability `keep`: an entry is kept when its 32 random bits fall below
// keep * 2^32.
template <typename T>
at::Tensor draw(at::IntArrayRef sizes, at::ScalarType dtype, double keep, T kept, T dropped) {
  ALBEF_CHECK(keep >= 0.0 && keep <= 1.0, "keep probability must be in [0, 1], got ", keep);
  at::Tensor result = at::empty(sizes, at::TensorOptions().dtype(dtype));
  const int64_t count = result.numel();
  if (count == 0) return result;
  const uint64_t seed = seed_from_default_generator();
  const uint64_t threshold = static_cast<uint64_t>(keep * 4294967296.0);
  T* out = result.data_ptr<T>();
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      at::Philox4_32 engine(seed, /*subsequence=*/static_cast<uint64_t>(block), /*offset=*/0);
      const int64_t end = std::min(count, (block + 1) * kBlock);
      for (int64_t i = block * kBlock; i < end; ++i) out[i] = static_cast<uint64_t>(engine()) < threshold ? kept : dropped;
    }
  });
  return result;
}

}  // namespace

at::Tensor draw_keep_mask(at::IntArrayRef sizes, double keep) { return draw(sizes, at::kBool, keep, true, false); }

at::Tensor dropout(const at::Tensor& input, double p, bool train) {
  ALBEF_CHECK(p >= 0.0 && p < 1.0, "dropout probability must be in [0, 1), got ", p);
  if (!train || p == 0.0) return input;
  if (!input.device().is_cpu()) return at::dropout(input, p, train);
  // The noise is 0 or 1 / (1 - p), as at::dropout's; float32 then the input's dtype (bf16 under autocast).
  at::Tensor noise = draw(input.sizes(), at::kFloat, 1.0 - p, static_cast<float>(1.0 / (1.0 - p)), 0.0f);
  if (input.scalar_type() != at::kFloat) noise = noise.to(input.scalar_type());
  return input * noise;
}

}  // namespace albef::ops
