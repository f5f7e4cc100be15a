#include "ops/dropout.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <mutex>

namespace albef::ops {
namespace {

uint64_t seed_from_default_generator() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get<at::CPUGeneratorImpl>()->random64();
}

// SplitMix64's output function over a Weyl sequence: the 64 random bits of
// counter `index` for a stream `seed`, with no state carried from one index
// to the next, so any thread can produce any part of the mask.
inline uint64_t random_bits(uint64_t seed, uint64_t index) {
  uint64_t z = seed + index * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Writes `kept` or `dropped` to each of the tensor's entries, `kept` with
// probability `keep`: entry i is kept when its 32 random bits (one half of
// counter i / 2's 64) fall below keep * 2^32.
template <typename T>
at::Tensor draw(at::IntArrayRef sizes, at::ScalarType dtype, double keep, T kept, T dropped) {
  ALBEF_CHECK(keep >= 0.0 && keep <= 1.0, "keep probability must be in [0, 1], got ", keep);
  at::Tensor result = at::empty(sizes, at::TensorOptions().dtype(dtype));
  const int64_t count = result.numel();
  if (count == 0) return result;
  const uint64_t seed = seed_from_default_generator();
  const uint64_t threshold = static_cast<uint64_t>(keep * 4294967296.0);
  T* out = result.data_ptr<T>();
  at::parallel_for(0, (count + 1) / 2, 1 << 15, [&](int64_t first, int64_t last) {
    for (int64_t pair = first; pair < last; ++pair) {
      const uint64_t bits = random_bits(seed, static_cast<uint64_t>(pair));
      out[2 * pair] = (bits & 0xffffffffu) < threshold ? kept : dropped;
      if (2 * pair + 1 < count) out[2 * pair + 1] = (bits >> 32) < threshold ? kept : dropped;
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
