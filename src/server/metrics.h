#pragma once
// The service's counters, in Prometheus's text exposition format.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace albef::server {

class Metrics {
 public:
  /// One answered request: its endpoint, status and seconds taken.
  void request(const std::string& endpoint, int status, double seconds);
  /// One forward pass of a batcher, with its item count.
  void batch(const std::string& kind, size_t items);
  void set_model_load_seconds(double seconds) { model_load_seconds_ = seconds; }
  /// The text of GET /metrics; `queue_depth` is read by the caller.
  std::string render(int64_t queue_depth) const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<int64_t> counts;  // per bound, not cumulative; one more for +Inf
    double sum = 0;
    int64_t total = 0;
    void observe(double value);
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  std::map<std::string, Histogram> latency_;
  std::map<std::string, Histogram> batch_size_;
  double model_load_seconds_ = 0;
};

/// Resident set size of this process in bytes (/proc/self/statm), 0 if unknown.
int64_t resident_bytes();

}  // namespace albef::server
