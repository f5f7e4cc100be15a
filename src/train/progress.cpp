#include "train/progress.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace albef {

void MetricLogger::update(const std::string& name, double value) {
  auto [it, inserted] = meters_.try_emplace(name);
  if (inserted) order_.push_back(name);
  Meter& meter = it->second;
  meter.sum += value;
  meter.count += 1;
  meter.window.push_back(value);
  if (meter.window.size() > 50) meter.window.pop_front();
}

double MetricLogger::global_avg(const std::string& name) const {
  const auto it = meters_.find(name);
  return it == meters_.end() || it->second.count == 0 ? 0.0 : it->second.sum / it->second.count;
}

double MetricLogger::window_avg(const std::string& name) const {
  const auto it = meters_.find(name);
  if (it == meters_.end() || it->second.window.empty()) return 0.0;
  double sum = 0.0;
  for (double v : it->second.window) sum += v;
  return sum / it->second.window.size();
}

nlohmann::json MetricLogger::epoch_stats() const {
  nlohmann::json stats = nlohmann::json::object();
  char text[64];
  for (const auto& name : order_) {
    std::snprintf(text, sizeof(text), "%.3f", global_avg(name));
    stats[name] = text;
  }
  return stats;
}

MeterSums MetricLogger::sums() const {
  MeterSums out;
  for (const auto& [name, meter] : meters_) out[name] = {meter.sum, meter.count};
  return out;
}

void MetricLogger::restore(const MeterSums& sums) {
  meters_.clear();
  order_.clear();
  for (const auto& [name, sum_count] : sums) {
    order_.push_back(name);
    meters_[name].sum = sum_count.first;
    meters_[name].count = sum_count.second;
  }
}

ProgressPrinter::ProgressPrinter(int64_t steps_in_epoch, int64_t print_every)
    : steps_(steps_in_epoch), print_every_(std::max<int64_t>(1, print_every)), terminal_(::isatty(STDOUT_FILENO)) {
  start_ = std::chrono::steady_clock::now();
}

void ProgressPrinter::report(int64_t epoch, int64_t step, const MetricLogger& meters,
                             const std::vector<std::string>& names, double lr) {
  if (first_step_ < 0) first_step_ = step;
  const bool last = step + 1 == steps_;
  if (!terminal_ && step % print_every_ != 0 && !last) return;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double done = static_cast<double>(step + 1 - first_step_);
  const double rate = seconds > 0 ? done / seconds : 0.0;
  const double eta = rate > 0 ? (steps_ - step - 1) / rate : 0.0;
  std::ostringstream line;
  line << "epoch " << epoch << " [" << step + 1 << "/" << steps_ << "]";
  char buffer[64];
  for (const auto& name : names) {
    std::snprintf(buffer, sizeof(buffer), "  %s %.4f", name.c_str(), meters.window_avg(name));
    line << buffer;
  }
  std::snprintf(buffer, sizeof(buffer), "  lr %.2e  %.2f it/s  eta %d:%02d", lr, rate, static_cast<int>(eta) / 60,
                static_cast<int>(eta) % 60);
  line << buffer;
  if (terminal_)
    std::printf("\r%s\033[K", line.str().c_str());
  else
    std::printf("%s\n", line.str().c_str());
  std::fflush(stdout);
}

void ProgressPrinter::finish() {
  if (terminal_) std::printf("\n");
  std::fflush(stdout);
}

int64_t step_tick_interval(int64_t steps) {
  for (int64_t decade = 1;; decade *= 10)
    for (int64_t multiple : {1, 2, 5})
      if (steps <= 8 * multiple * decade) return multiple * decade;
}

bool write_loss_plot(const std::string& steps_jsonl, const std::string& png_path,
                     const std::vector<std::string>& loss_names) {
  std::ifstream in(steps_jsonl);
  std::vector<std::vector<double>> series(loss_names.size());
  std::vector<int64_t> epochs;  // of each step
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded()) continue;  // a line cut by a kill: skip it
    for (size_t k = 0; k < loss_names.size(); ++k)
      series[k].push_back(record.value(loss_names[k], std::nan("")));
    epochs.push_back(record.value("epoch", int64_t{0}));
  }
  if (series.empty() || series[0].size() < 2) return false;
  const int width = 900, height = 500, left = 60, right = 20, top = 40, bottom = 50;
  cv::Mat canvas(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  double high = 0.0;
  for (const auto& values : series)
    for (double v : values)
      if (std::isfinite(v)) high = std::max(high, v);
  if (high <= 0) high = 1.0;
  const size_t n = series[0].size();
  auto to_point = [&](size_t i, double v) {
    const double x = left + (width - left - right) * static_cast<double>(i) / static_cast<double>(n - 1);
    const double y = height - bottom - (height - top - bottom) * std::clamp(v / high, 0.0, 1.0);
    return cv::Point(static_cast<int>(x), static_cast<int>(y));
  };
  cv::rectangle(canvas, {left, top}, {width - right, height - bottom}, cv::Scalar(180, 180, 180));
  for (int tick = 0; tick <= 4; ++tick) {
    const double value = high * tick / 4.0;
    char label[32];
    std::snprintf(label, sizeof(label), "%.2f", value);
    const cv::Point at = to_point(0, value);
    cv::putText(canvas, label, {5, at.y + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(80, 80, 80));
    cv::line(canvas, {left, at.y}, {width - right, at.y}, cv::Scalar(230, 230, 230));
  }
  // Step ticks and a dashed line where each epoch starts: the picture says how far the run got.
  const cv::Scalar ink(80, 80, 80);
  const int64_t interval = step_tick_interval(static_cast<int64_t>(n));
  for (int64_t tick = 0; tick < static_cast<int64_t>(n); tick += interval) {
    const int x = to_point(static_cast<size_t>(tick), 0).x;
    cv::line(canvas, {x, height - bottom}, {x, height - bottom + 5}, ink);
    const std::string label = std::to_string(tick);
    cv::putText(canvas, label, {x - 4 * static_cast<int>(label.size()), height - bottom + 18}, cv::FONT_HERSHEY_SIMPLEX,
                0.4, ink);
  }
  for (size_t i = 1; i < epochs.size(); ++i) {
    if (epochs[i] == epochs[i - 1]) continue;
    const int x = to_point(i, 0).x;
    for (int y = top; y < height - bottom; y += 8) cv::line(canvas, {x, y}, {x, std::min(y + 4, height - bottom)}, ink);
    cv::putText(canvas, "epoch " + std::to_string(epochs[i]), {x + 3, top + 12}, cv::FONT_HERSHEY_SIMPLEX, 0.35, ink);
  }
  const cv::Scalar colours[] = {{200, 80, 30}, {40, 150, 40}, {30, 60, 210}, {160, 40, 160}};  // BGR
  const size_t window = std::max<size_t>(1, n / 50);
  for (size_t k = 0; k < series.size(); ++k) {
    const cv::Scalar colour = colours[k % 4];
    const cv::Scalar faint = (colour + cv::Scalar(255, 255, 255) * 2) / 3;
    double running = 0.0;
    std::deque<double> recent;
    cv::Point previous, previous_avg;
    for (size_t i = 0; i < n; ++i) {
      const double v = std::isfinite(series[k][i]) ? series[k][i] : 0.0;
      recent.push_back(v);
      running += v;
      if (recent.size() > window) {
        running -= recent.front();
        recent.pop_front();
      }
      const cv::Point point = to_point(i, v), avg = to_point(i, running / recent.size());
      if (i > 0) {
        cv::line(canvas, previous, point, faint, 1, cv::LINE_AA);
        cv::line(canvas, previous_avg, avg, colour, 2, cv::LINE_AA);
      }
      previous = point;
      previous_avg = avg;
    }
    cv::putText(canvas, loss_names[k], {left + 10 + 150 * static_cast<int>(k), 20}, cv::FONT_HERSHEY_SIMPLEX, 0.5,
                colour, 1, cv::LINE_AA);
  }
  cv::putText(canvas, "step (" + std::to_string(n) + " in " + std::to_string(epochs.empty() ? 0 : epochs.back() - epochs.front() + 1) + " epoch(s))",
              {width / 2 - 80, height - 12}, cv::FONT_HERSHEY_SIMPLEX, 0.45, ink);
  cv::putText(canvas, "loss", {5, top - 8}, cv::FONT_HERSHEY_SIMPLEX, 0.45, ink);
  write_atomically(png_path, [&](const std::string& tmp) {
    std::vector<uchar> bytes;
    if (!cv::imencode(".png", canvas, bytes)) fail(png_path, ": cannot encode the plot");
    std::ofstream out(tmp, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) fail(png_path, ": write failed");
  });
  return true;
}

}  // namespace albef
