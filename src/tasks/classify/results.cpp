#include "tasks/classify/results.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

namespace albef::classify {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// RFC 4180: quoted when it holds a comma, quote or line break.
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string number(double value) {
  if (std::isnan(value)) return "";
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

// The fields of one CSV line (no line breaks inside fields: classify writes none).
std::vector<std::string> split_csv(const std::string& line, const std::string& file, size_t number) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  if (quoted) fail(file, ": line ", number, ": unterminated quote");
  return fields;
}

}  // namespace

std::vector<std::string> csv_header(int64_t top, bool rerank) {
  std::vector<std::string> header = {"image"};
  for (int64_t i = 1; i <= top; ++i) {
    header.push_back("label_" + std::to_string(i));
    header.push_back("probability_" + std::to_string(i));
    if (rerank) header.push_back("match_" + std::to_string(i));
  }
  return header;
}

std::string csv_row(const Classified& result, int64_t top, bool rerank) {
  std::string row = csv_field(result.image);
  for (int64_t i = 0; i < top; ++i) {
    const bool present = i < static_cast<int64_t>(result.labels.size());
    row += "," + (present ? csv_field(result.labels[static_cast<size_t>(i)]) : std::string());
    row += "," + (present ? number(result.probabilities[static_cast<size_t>(i)]) : std::string());
    if (rerank) row += "," + (present ? number(result.match[static_cast<size_t>(i)]) : std::string());
  }
  return row + "\n";
}

std::vector<Classified> read_csv_for_append(const std::string& path, const std::vector<std::string>& header) {
  std::string data = read_file(path);
  if (!data.empty() && data.back() != '\n') {
    // The run was killed while writing this line: drop it, its image is done again.
    data.erase(data.rfind('\n') == std::string::npos ? 0 : data.rfind('\n') + 1);
    write_atomically(path, [&data](const std::string& tmp) { std::ofstream(tmp, std::ios::binary) << data; });
  }
  std::vector<Classified> rows;
  size_t begin = 0, number = 0;
  const bool with_match = std::any_of(header.begin(), header.end(),
                                      [](const std::string& column) { return column.rfind("match_", 0) == 0; });
  const size_t columns_per_label = with_match ? 3 : 2;
  while (begin < data.size()) {
    const size_t end = data.find('\n', begin);
    const std::string line = data.substr(begin, end - begin);
    begin = end + 1;
    ++number;
    const std::vector<std::string> fields = split_csv(line, path, number);
    if (number == 1) {
      if (fields != header)
        fail(path, ": its columns are not the ones this run writes (another --top or --rerank?); continue it with "
             "the flags that started it, or write a new file");
      continue;
    }
    if (fields.size() != header.size()) fail(path, ": line ", number, " has ", fields.size(), " fields, not ", header.size());
    Classified row;
    row.image = fields[0];
    for (size_t i = 1; i + columns_per_label - 1 < fields.size(); i += columns_per_label) {
      if (fields[i].empty()) break;
      row.labels.push_back(fields[i]);
      row.probabilities.push_back(std::stod(fields[i + 1]));
      if (columns_per_label == 3) row.match.push_back(fields[i + 2].empty() ? NAN : std::stod(fields[i + 2]));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string GroundTruth::label_of(const std::string& image) const {
  for (const auto& [key, label] : entries)
    if (key == image) return label;
  const std::string name = fs::path(image).filename().string();
  for (const auto& [key, label] : entries)
    if (fs::path(key).filename().string() == name) return label;
  return "";
}

GroundTruth read_ground_truth(const std::string& path, const std::vector<std::string>& labels) {
  GroundTruth truth;
  truth.file = path;
  json data;
  try {
    data = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!data.is_object()) fail(path, ": expected an object of image -> label");
  for (const auto& [image, label] : data.items()) {
    if (!label.is_string()) fail(path, ": \"", image, "\": the label must be a string");
    if (std::find(labels.begin(), labels.end(), label.get<std::string>()) == labels.end())
      fail(path, ": \"", image, "\" is labelled \"", label.get<std::string>(), "\", which is not one of the --labels");
    truth.entries.emplace_back(image, label.get<std::string>());
  }
  return truth;
}

namespace {

// Rows: true label; columns: predicted; each cell shaded by its share of the row.
void write_confusion_png(const std::vector<std::vector<int64_t>>& counts, const std::vector<std::string>& labels,
                         const std::string& png) {
  const int n = static_cast<int>(labels.size());
  const int cell = std::clamp(640 / std::max(n, 1), 4, 48);
  const bool named = cell >= 12;
  const int margin = named ? 160 : 40, top = 40;
  cv::Mat image(top + margin + n * cell, margin + n * cell + 20, CV_8UC3, cv::Scalar(255, 255, 255));
  for (int r = 0; r < n; ++r) {
    int64_t total = 0;
    for (int64_t c : counts[static_cast<size_t>(r)]) total += c;
    for (int c = 0; c < n; ++c) {
      const int64_t value = counts[static_cast<size_t>(r)][static_cast<size_t>(c)];
      const double share = total > 0 ? static_cast<double>(value) / static_cast<double>(total) : 0.0;
      const cv::Rect box(margin + c * cell, top + r * cell, cell, cell);
      cv::rectangle(image, box, cv::Scalar(255 - 200 * share, 255 - 140 * share, 255 - 40 * share), cv::FILLED);
      if (cell >= 24 && value > 0)
        cv::putText(image, std::to_string(value), {box.x + 2, box.y + cell / 2 + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.35,
                    share > 0.5 ? cv::Scalar(255, 255, 255) : cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
    }
  }
  cv::rectangle(image, {margin, top}, {margin + n * cell, top + n * cell}, cv::Scalar(0, 0, 0), 1);
  if (named) {
    for (int i = 0; i < n; ++i) {
      std::string name = labels[static_cast<size_t>(i)].substr(0, 20);
      cv::putText(image, name, {4, top + i * cell + cell / 2 + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0),
                  1, cv::LINE_AA);
      // Column names written downwards: drawn on a rotated strip.
      cv::Mat strip(cell, margin - 4, CV_8UC3, cv::Scalar(255, 255, 255));
      cv::putText(strip, name, {2, cell / 2 + 4}, cv::FONT_HERSHEY_SIMPLEX, 0.4, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
      cv::Mat rotated;
      cv::rotate(strip, rotated, cv::ROTATE_90_CLOCKWISE);
      rotated.copyTo(image(cv::Rect(margin + i * cell, top + n * cell + 4, cell, margin - 4)));
    }
  }
  cv::putText(image, "confusion: rows = true label, columns = predicted (top-1)", {4, 24}, cv::FONT_HERSHEY_SIMPLEX,
              0.5, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  cv::Mat bgr;
  cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
  write_atomically(png, [&bgr](const std::string& tmp) {
    std::vector<unsigned char> bytes;
    if (!cv::imencode(".png", bgr, bytes)) fail("cannot encode the confusion matrix PNG");
    std::ofstream(tmp, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                               static_cast<std::streamsize>(bytes.size()));
  });
}

}  // namespace

json accuracy(const std::vector<Classified>& results, const GroundTruth& truth, const std::vector<std::string>& labels,
              const std::string& png) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < labels.size(); ++i) index[labels[i]] = i;
  std::vector<std::vector<int64_t>> confusion(labels.size(), std::vector<int64_t>(labels.size(), 0));
  int64_t counted = 0, top1 = 0, top5 = 0;
  std::vector<int64_t> per_total(labels.size(), 0), per_correct(labels.size(), 0);
  for (const Classified& result : results) {
    const std::string truth_label = truth.label_of(result.image);
    if (truth_label.empty() || result.labels.empty()) continue;
    ++counted;
    const size_t t = index.at(truth_label);
    ++per_total[t];
    const bool hit = result.labels[0] == truth_label;
    top1 += hit;
    per_correct[t] += hit;
    const size_t depth = std::min<size_t>(5, result.labels.size());
    top5 += std::find(result.labels.begin(), result.labels.begin() + static_cast<std::ptrdiff_t>(depth),
                      truth_label) != result.labels.begin() + static_cast<std::ptrdiff_t>(depth);
    ++confusion[t][index.at(result.labels[0])];
  }
  json per_label = json::object();
  for (size_t i = 0; i < labels.size(); ++i)
    if (per_total[i] > 0)
      per_label[labels[i]] = {{"images", per_total[i]},
                              {"top1", static_cast<double>(per_correct[i]) / static_cast<double>(per_total[i])}};
  write_confusion_png(confusion, labels, png);
  const double n = std::max<double>(1.0, static_cast<double>(counted));
  return {{"images", counted},
          {"top1", static_cast<double>(top1) / n},
          {"top5", static_cast<double>(top5) / n},
          {"per_label", per_label},
          {"confusion_png", png}};
}

}  // namespace albef::classify
