#pragma once
/// @file progress.h
/// @brief Training logs: the official MetricLogger averages, a live progress
/// line, one JSON line per step, and a loss-curve plot.

#include "albef/train/checkpointing.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace albef {

/// Per-meter averages over a sliding window (50, as the official
/// SmoothedValue) and over the whole epoch (what log.txt records).
class MetricLogger {
 public:
  void update(const std::string& name, double value);
  double global_avg(const std::string& name) const;
  double window_avg(const std::string& name) const;
  /// The epoch's stats as the official train() returns them: each meter's
  /// global average formatted "%.3f" (strings), keyed by meter name.
  nlohmann::json epoch_stats() const;
  /// Sums and counts, for checkpoints; restore() continues from them.
  MeterSums sums() const;
  void restore(const MeterSums& sums);

 private:
  struct Meter {
    double sum = 0.0;
    int64_t count = 0;
    std::deque<double> window;
  };
  std::map<std::string, Meter> meters_;
  std::vector<std::string> order_;
};

/// Prints progress: a live line rewritten in place on a terminal, else a
/// plain line every `print_every` steps (and at the epoch's last step).
class ProgressPrinter {
 public:
  ProgressPrinter(int64_t steps_in_epoch, int64_t print_every);
  void report(int64_t epoch, int64_t step, const MetricLogger& meters, const std::vector<std::string>& names,
              double lr);
  void finish();

 private:
  int64_t steps_, print_every_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = -1;
};

/// The step axis's tick spacing: the smallest 1, 2 or 5 x 10^k that puts at
/// most 8 ticks on `steps` steps (1,000 steps: every 200).
int64_t step_tick_interval(int64_t steps);

/// Draws the per-step losses of `steps_jsonl` (one JSON object per line with
/// "epoch", "step" and loss keys) into a PNG, one colour per loss, with a
/// moving average, step ticks, a dashed line where each epoch starts and
/// labelled axes. Returns false when there is nothing to draw.
bool write_loss_plot(const std::string& steps_jsonl, const std::string& png_path,
                     const std::vector<std::string>& loss_names);

}  // namespace albef
