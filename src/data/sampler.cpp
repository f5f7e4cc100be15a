// DistributedSampler on LibTorch's CPU generator, so the permutations are
// torch's own.

#include "albef/data/sampler.h"

#include "albef/core/error.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/randperm.h>

namespace albef::data {

DistributedSampler::DistributedSampler(int64_t dataset_size, int64_t world_size, int64_t rank, bool shuffle,
                                       uint64_t seed)
    : dataset_size_(dataset_size), world_size_(world_size), rank_(rank), shuffle_(shuffle), seed_(seed) {
  ALBEF_CHECK(dataset_size > 0, "the dataset is empty");
  ALBEF_CHECK(world_size > 0, "world size must be positive, got ", world_size);
  ALBEF_CHECK(rank >= 0 && rank < world_size, "rank ", rank, " out of range [0, ", world_size, ")");
  num_samples_ = (dataset_size + world_size - 1) / world_size;
}

void DistributedSampler::set_epoch(int64_t epoch) {
  ALBEF_CHECK(epoch >= 0, "epoch must not be negative, got ", epoch);
  epoch_ = epoch;
}

std::vector<int64_t> DistributedSampler::indices() const {
  std::vector<int64_t> order(static_cast<size_t>(dataset_size_));
  if (shuffle_) {
    at::Generator generator = at::detail::createCPUGenerator(seed_ + static_cast<uint64_t>(epoch_));
    const at::Tensor permutation = at::randperm(dataset_size_, generator, at::kLong);
    const int64_t* values = permutation.data_ptr<int64_t>();
    order.assign(values, values + dataset_size_);
  } else {
    for (int64_t i = 0; i < dataset_size_; ++i) order[static_cast<size_t>(i)] = i;
  }
  // Position p of the padded order is order[p % n]: the head repeated as
  // often as needed, as the official padding does.
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(num_samples_));
  for (int64_t p = rank_; p < total_size(); p += world_size_)
    mine.push_back(order[static_cast<size_t>(p % dataset_size_)]);
  return mine;
}

std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& indices, int64_t batch_size,
                                               bool drop_last) {
  ALBEF_CHECK(batch_size > 0, "batch size must be positive, got ", batch_size);
  std::vector<std::vector<int64_t>> batches;
  const auto n = static_cast<int64_t>(indices.size());
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t end = std::min(begin + batch_size, n);
    if (end - begin < batch_size && drop_last) break;
    batches.emplace_back(indices.begin() + begin, indices.begin() + end);
  }
  return batches;
}

}  // namespace albef::data
