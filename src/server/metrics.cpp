#include "server/metrics.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

namespace albef::server {
namespace {

const std::vector<double> kLatencyBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const std::vector<double> kBatchBounds = {1, 2, 4, 8, 16, 32, 64, 128};

void write_histogram(std::ostringstream& out, const std::string& name, const std::string& labels,
                     const std::vector<double>& bounds, const std::vector<int64_t>& counts, double sum,
                     int64_t total) {
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    cumulative += counts[i];
    out << name << "_bucket{" << labels << ",le=\"" << bounds[i] << "\"} " << cumulative << "\n";
  }
  out << name << "_bucket{" << labels << ",le=\"+Inf\"} " << total << "\n";
  out << name << "_sum{" << labels << "} " << sum << "\n";
  out << name << "_count{" << labels << "} " << total << "\n";
}

}  // namespace

void Metrics::Histogram::observe(double value) {
  if (counts.empty()) counts.assign(bounds.size() + 1, 0);
  size_t i = 0;
  while (i < bounds.size() && value > bounds[i]) ++i;
  ++counts[i];
  sum += value;
  ++total;
}

void Metrics::request(const std::string& endpoint, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{endpoint, status}];
  Histogram& histogram = latency_[endpoint];
  if (histogram.bounds.empty()) histogram.bounds = kLatencyBounds;
  histogram.observe(seconds);
}

void Metrics::batch(const std::string& kind, size_t items) {
  std::lock_guard<std::mutex> lock(mutex_);
  Histogram& histogram = batch_size_[kind];
  if (histogram.bounds.empty()) histogram.bounds = kBatchBounds;
  histogram.observe(static_cast<double>(items));
}

std::string Metrics::render(int64_t queue_depth) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream out;
  out << "# HELP albef_requests_total Requests answered, by endpoint and status.\n"
      << "# TYPE albef_requests_total counter\n";
  for (const auto& [key, count] : requests_)
    out << "albef_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << count << "\n";
  out << "# HELP albef_request_seconds Time from a request's arrival to its answer.\n"
      << "# TYPE albef_request_seconds histogram\n";
  for (const auto& [endpoint, h] : latency_)
    write_histogram(out, "albef_request_seconds", "endpoint=\"" + endpoint + "\"", h.bounds, h.counts, h.sum, h.total);
  out << "# HELP albef_batch_items Items in each forward pass, by kind of work.\n"
      << "# TYPE albef_batch_items histogram\n";
  for (const auto& [kind, h] : batch_size_)
    write_histogram(out, "albef_batch_items", "kind=\"" + kind + "\"", h.bounds, h.counts, h.sum, h.total);
  out << "# HELP albef_queue_depth Requests queued or running.\n# TYPE albef_queue_depth gauge\n"
      << "albef_queue_depth " << queue_depth << "\n";
  out << "# HELP albef_model_load_seconds Time taken to load the models at start.\n"
      << "# TYPE albef_model_load_seconds gauge\nalbef_model_load_seconds " << model_load_seconds_ << "\n";
  out << "# HELP albef_resident_memory_bytes Resident set size of the process.\n"
      << "# TYPE albef_resident_memory_bytes gauge\nalbef_resident_memory_bytes " << resident_bytes() << "\n";
  return out.str();
}

int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace albef::server
