#pragma once
// Shared helpers for the test suite: where the bundled data is, and tensor
// comparisons that report the offending values.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/types.h>

#include <string>
#include <vector>

namespace albef::testing {

inline std::string data_path(const std::string& relative) {
  return std::string(ALBEF_TEST_DATA_DIR) + "/" + relative;
}

inline std::string source_path(const std::string& relative) {
  return std::string(ALBEF_SOURCE_DIR) + "/" + relative;
}

/// A fresh empty folder under the build tree's temp space.
std::string make_temp_dir(const std::string& name);

/// Runs a shell command, returns its exit code; its output goes to `output`.
int run_command(const std::string& command, std::string* output = nullptr);

/// Writes dir/tiny.yaml: the tiny fixture's Pretrain.yaml with absolute
/// paths, training on `train_file`. Returns its path.
std::string write_tiny_pretrain_config(const std::string& dir, const std::string& train_file);

/// Writes dir/Retrieval_tiny.yaml: Retrieval_coco.yaml's keys for the tiny
/// model, with the bundled COCO set (26 images, 130 captions) as train, val
/// and test, batches of 16, k_test 4, 3 epochs. Returns its path.
std::string write_tiny_retrieval_config(const std::string& dir);

/// Starts `args` (argv, stdout to /dev/null) without waiting; its pid, or -1.
pid_t spawn_quietly(const std::vector<std::string>& args);

/// Starts `args` (argv, stdout to /dev/null), waits until `marker` exists
/// (at most `timeout_seconds`), then SIGKILLs it and reaps it. Returns
/// whether the marker appeared.
bool run_until_file_then_kill(const std::vector<std::string>& args, const std::string& marker,
                              int timeout_seconds = 120);

/// The JSON lines of a log file; lines that are not JSON objects (such as
/// Retrieval.py's closing "best epoch: N") are skipped.
std::vector<nlohmann::json> read_json_lines(const std::string& path);

/// Two runs of one training, one of them interrupted and resumed: the same
/// per-step lines in train_steps.jsonl (epoch and step where logged, each of
/// `keys` to 1e-6; `steps` of them when non-zero) and the same log.txt.
void expect_same_training(const std::string& straight_dir, const std::string& resumed_dir,
                          const std::vector<std::string>& keys, size_t steps = 0);

/// Max abs difference between two tensors of the same shape (as float64).
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e30;
  if (a.numel() == 0) return 0.0;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace albef::testing

#define EXPECT_TENSOR_NEAR(actual, expected, atol)                                  \
  do {                                                                              \
    const double albef_diff_ = ::albef::testing::max_abs_diff((actual), (expected)); \
    EXPECT_LE(albef_diff_, (atol)) << #actual << " vs " << #expected;               \
  } while (0)
