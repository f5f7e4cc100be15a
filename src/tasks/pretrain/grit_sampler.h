#pragma once
// GRIT-VLP's grouped mini-batch sampling (models/GRIT_utils.py and
// dataset/sampler_for_grit.py of jaeseokbyun/GRIT-VLP): each step's
// detached ITC features and dataset indices enter a queue; whenever it
// fills, it is shuffled and cut into search spaces, in each of which a
// greedy image -> text -> image chain of argmax picks orders the pairs, so
// that similar pairs (hard negatives) end up in the same mini-batch. The
// epoch's order, shuffled as whole mini-batches, is the next epoch's order.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace albef::grit {

/// The random choices of the grouping, in the order they are made.
class Draws {
 public:
  virtual ~Draws() = default;
  /// example_level_shuffle: torch.randperm(n).
  virtual std::vector<int64_t> permutation(int64_t n) = 0;
  /// grouping's first pair: torch.randint(0, n - 1), so never the last pair
  /// (the official quirk); n >= 2.
  virtual int64_t start(int64_t n) = 0;
  /// mini_batch_level_shuffle: the order of n mini-batches (Python's
  /// random.shuffle of 0..n-1 in the official code).
  virtual std::vector<int64_t> chunk_order(int64_t n) = 0;
};

/// albef's own draws, from one CPU generator that belongs to the sampler
/// (its state goes into the checkpoint for an exact resume).
class GeneratorDraws : public Draws {
 public:
  explicit GeneratorDraws(uint64_t seed);
  std::vector<int64_t> permutation(int64_t n) override;
  int64_t start(int64_t n) override;
  std::vector<int64_t> chunk_order(int64_t n) override;
  at::Tensor state() const;
  void set_state(const at::Tensor& state);

 private:
  at::Generator generator_;
};

/// Recorded draws, as the sampler cases of the GRIT fixtures hold them:
/// `phases[k].randperm` (each shuffle's permutation), `grouping_calls[k].start`
/// and `chunk_order`. Each is consumed in order; running out, or a size
/// that differs from the one asked for, is an error naming `source`.
class RecordedDraws : public Draws {
 public:
  RecordedDraws(const nlohmann::json& draws, std::string source);
  std::vector<int64_t> permutation(int64_t n) override;
  int64_t start(int64_t n) override;
  std::vector<int64_t> chunk_order(int64_t n) override;

 private:
  std::vector<std::vector<int64_t>> permutations_;
  std::vector<int64_t> starts_;
  std::vector<int64_t> chunk_order_;
  size_t next_permutation_ = 0, next_start_ = 0;
  bool chunk_order_used_ = false;
  std::string source_;
};

/// `grouping` of one search space of n pairs: image_feat and text_feat
/// [n, D] (row = pair). A = softmax(img @ txt^T / temp) and B =
/// softmax(txt @ img^T / temp) row-wise with zero diagonals; from `start`,
/// (n-1)/2 times: the text t = argmax A[i], zero row and column i in A and
/// B, the image i = argmax B[t], zero row and column t; the pairs of t then
/// i are appended; one more text when n-1 is odd. Returns the order as
/// positions 0..n-1 (float32 as the official code; a permutation unless
/// live softmax entries underflow to 0 at a tiny temp).
std::vector<int64_t> group_search_space(const at::Tensor& image_feat, const at::Tensor& text_feat, float temp,
                                        int64_t start);

/// Settings of the grouping (GRIT's Pretrain.yaml), checked as the official
/// asserts: queue_size and search_space multiples of batch_size,
/// queue_size a multiple of search_space.
struct GroupingOptions {
  int64_t queue_size = 48000;
  int64_t search_space = 1920;
  int64_t batch_size = 128;
  int64_t embed_dim = 256;
  /// Names the settings' origin in errors (the config file).
  std::string source = "the GRIT settings";
  void check() const;
};

/// One epoch of GRIT's first three phases on one process (the official
/// `GRIT` object, made anew each epoch): collect(), step by step, fills the
/// grouped order of the epoch's num_steps * batch_size samples.
class EpochGrouper {
 public:
  EpochGrouper(GroupingOptions options, int64_t num_steps);

  /// Step `step` (0-based) of the epoch: the batch's features [B, D] and
  /// dataset indices [B] enter the queue (indices stored in float32, as the
  /// official queue: exact below 2^24); a full queue is shuffled and
  /// grouped; at the last step what the queue holds is shuffled and
  /// grouped (full search spaces, then the rest: when that rest is empty,
  /// where the official code crashes, nothing is grouped). `temp`: the
  /// model's temperature after the step's update.
  void collect(int64_t step, const at::Tensor& image_feat, const at::Tensor& text_feat, const at::Tensor& indices,
               float temp, Draws& draws);

  /// The grouped order (G_index_set): dataset indices, complete once the
  /// last step is collected.
  const std::vector<int64_t>& grouped() const { return grouped_; }

  /// Everything collect() depends on, as tensors (for checkpoints).
  std::vector<at::Tensor> state() const;
  /// Restores state() (same options and num_steps); `source` names the checkpoint in errors.
  void restore(const std::vector<at::Tensor>& state, const std::string& source);

 private:
  void group_queue(int64_t length, Draws& draws, float temp);

  GroupingOptions options_;
  int64_t num_steps_;
  at::Tensor image_queue_, text_queue_, idx_queue_;  // [Q, D], [Q, D], [Q] float32
  int64_t ptr_ = 0;
  std::vector<int64_t> grouped_;
  int64_t groups_done_ = 0;  // G_idx
};

/// mini_batch_level_shuffle: `order` cut into chunks of batch_size (the
/// last may be shorter), concatenated in the order draws.chunk_order gives.
std::vector<int64_t> shuffle_mini_batches(const std::vector<int64_t>& order, int64_t batch_size, Draws& draws);

/// Sampler_for_GRIT: rank `rank`'s contiguous share of the epoch order,
/// [rank * n / world, (rank + 1) * n / world).
std::vector<int64_t> rank_share(const std::vector<int64_t>& order, int64_t world_size, int64_t rank);

}  // namespace albef::grit
