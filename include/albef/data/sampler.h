#pragma once
/// @file sampler.h
/// @brief torch.utils.data.DistributedSampler and the batching of the
/// official training loaders.

#include <cstdint>
#include <vector>

namespace albef::data {

/// `DistributedSampler(dataset, num_replicas=world_size, rank=rank,
/// shuffle=shuffle, seed=seed)` with `drop_last=False`, index for index:
/// each epoch the dataset order is `torch.randperm(n)` from a CPU generator
/// seeded with `seed + epoch` (or 0..n-1 without shuffle), padded by
/// repeating it from its head to `total_size()` = ceil(n / world_size) *
/// world_size, of which this rank takes positions rank, rank + world_size, ...
/// The ranks' shares are disjoint before padding and cover the dataset.
class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, int64_t world_size = 1, int64_t rank = 0, bool shuffle = true,
                     uint64_t seed = 0);

  /// `set_epoch`: selects the permutation of the following `indices()` calls.
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }

  /// This rank's dataset indices for the current epoch (`num_samples()` of them).
  std::vector<int64_t> indices() const;

  /// Indices per rank and epoch: ceil(dataset_size / world_size).
  int64_t num_samples() const { return num_samples_; }
  /// num_samples() * world_size.
  int64_t total_size() const { return num_samples_ * world_size_; }
  int64_t dataset_size() const { return dataset_size_; }
  int64_t world_size() const { return world_size_; }
  int64_t rank() const { return rank_; }

 private:
  int64_t dataset_size_, world_size_, rank_;
  bool shuffle_;
  uint64_t seed_;
  int64_t epoch_ = 0;
  int64_t num_samples_;
};

/// Splits `indices` into consecutive batches of `batch_size`, as a
/// DataLoader with that sampler order: the last, short batch is dropped when
/// `drop_last` (the official training loaders) and kept otherwise.
std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& indices, int64_t batch_size,
                                               bool drop_last);

}  // namespace albef::data
