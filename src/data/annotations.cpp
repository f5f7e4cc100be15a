// Streaming parse of ALBEF's annotation files and the datasets built from
// them (dataset/caption_dataset.py).

#include "albef/data/annotations.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/text/tokenizer.h"
#include "data/json_entries.h"
#include "core/paths.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <unordered_map>

namespace albef::data {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// "caption" as a non-empty list of strings (a string is a list of one).
std::vector<std::string> captions_field(const json& entry, const std::string& file, size_t index) {
  const auto it = entry.find("caption");
  if (it == entry.end()) fail(file, ": entry ", index, ": missing \"caption\"");
  if (it->is_string()) return {it->get<std::string>()};
  if (!it->is_array())
    fail(file, ": entry ", index, ": \"caption\" must be a string or a list of strings, found ", it->type_name());
  if (it->empty()) fail(file, ": entry ", index, ": \"caption\" is an empty list");
  std::vector<std::string> captions;
  captions.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const json& caption = (*it)[i];
    if (!caption.is_string())
      fail(file, ": entry ", index, ": \"caption\"[", i, "] must be a string, found ", caption.type_name());
    captions.push_back(caption.get<std::string>());
  }
  return captions;
}

// A key equal for image ids Python's dict treats as equal: the same string,
// or numbers of the same value (1 and 1.0).
std::string image_id_key(const json& entry, const std::string& file, size_t index) {
  const auto it = entry.find("image_id");
  if (it == entry.end()) fail(file, ": entry ", index, ": missing \"image_id\"");
  if (it->is_string()) return "s" + it->get<std::string>();
  if (it->is_number_float()) {
    const double value = it->get<double>();
    if (value == std::floor(value) && std::fabs(value) < 0x1p53)
      return "n" + std::to_string(static_cast<int64_t>(value));
    return "n" + it->dump();
  }
  if (it->is_number()) return "n" + it->dump();
  fail(file, ": entry ", index, ": \"image_id\" must be a string or a number, found ", it->type_name());
}

uint32_t file_number(size_t i) {
  ALBEF_CHECK(i <= std::numeric_limits<uint32_t>::max(), "too many annotation files");
  return static_cast<uint32_t>(i);
}

}  // namespace

// A parser callback drops every entry once visited, so only one
// entry is ever held in memory, and a wrong top level fails at once.
void for_each_entry(const std::string& file, const std::function<void(size_t, const json&)>& visit) {
  const std::string text = read_file(file);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) fail(file, ": the annotation file is empty");
  size_t index = 0;
  const json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    using Event = json::parse_event_t;
    if (depth == 0) {
      if (event == Event::object_start) fail(file, ": expected a JSON list of entries, found an object");
      if (event == Event::value) fail(file, ": expected a JSON list of entries, found ", parsed.type_name());
      return true;
    }
    if (depth != 1) return true;
    switch (event) {
      case Event::object_end:
        visit(index++, parsed);
        return false;  // discard: the entry has been consumed
      case Event::array_start:
        fail(file, ": entry ", index, ": expected an object, found an array");
      case Event::value:
        fail(file, ": entry ", index, ": expected an object, found ", parsed.type_name());
      default:
        return true;
    }
  };
  try {
    // Every entry is dropped once visited: what remains is an empty list.
    [[maybe_unused]] const json emptied = json::parse(text, callback);
  } catch (const json::exception& e) {
    fail(file, ": invalid JSON: ", e.what());
  }
  if (index == 0) fail(file, ": the list of entries is empty");
}

// The string at `key` of an entry.
std::string string_field(const json& entry, const char* key, const std::string& file, size_t index) {
  const auto it = entry.find(key);
  if (it == entry.end()) fail(file, ": entry ", index, ": missing \"", key, "\"");
  if (!it->is_string()) fail(file, ": entry ", index, ": \"", key, "\" must be a string, found ", it->type_name());
  return it->get<std::string>();
}

std::string join_path(const std::string& root, const std::string& path) {
  if (root.empty() || (!path.empty() && path.front() == '/')) return path;
  if (root.back() == '/') return root + path;
  return root + "/" + path;
}

std::string resolve_image_path(const std::string& path, const std::string& annotation_file) {
  const fs::path as_written(path);
  if (as_written.is_absolute() || paths::exists(as_written)) return path;
  const fs::path folder = fs::path(annotation_file).parent_path();
  if (folder.empty()) return path;
  const fs::path beside = folder / as_written;
  return paths::exists(beside) ? beside.string() : path;
}

std::string TrainDataset::image_path(int64_t index) const {
  ALBEF_CHECK(index >= 0 && index < size(), "sample ", index, " out of range [0, ", size(), ")");
  const TrainSample& sample = samples[static_cast<size_t>(index)];
  return resolve_image_path(sample.image, annotation_files.at(sample.file));
}

TrainDataset load_pretrain_dataset(const std::vector<std::string>& annotation_files) {
  ALBEF_CHECK(!annotation_files.empty(), "no pretraining annotation file given");
  TrainDataset dataset;
  dataset.annotation_files = annotation_files;
  for (size_t f = 0; f < annotation_files.size(); ++f) {
    const std::string& file = annotation_files[f];
    for_each_entry(file, [&](size_t index, const json& entry) {
      TrainSample sample;
      sample.image = string_field(entry, "image", file, index);
      sample.captions = captions_field(entry, file, index);
      sample.file = file_number(f);
      dataset.samples.push_back(std::move(sample));
    });
  }
  return dataset;
}

TrainDataset load_retrieval_train_dataset(const std::vector<std::string>& annotation_files,
                                          const std::string& image_root) {
  ALBEF_CHECK(!annotation_files.empty(), "no retrieval training annotation file given");
  TrainDataset dataset;
  dataset.annotation_files = annotation_files;
  std::unordered_map<std::string, int64_t> image_idx;
  for (size_t f = 0; f < annotation_files.size(); ++f) {
    const std::string& file = annotation_files[f];
    for_each_entry(file, [&](size_t index, const json& entry) {
      const std::string image = join_path(image_root, string_field(entry, "image", file, index));
      std::vector<std::string> captions = captions_field(entry, file, index);
      const auto [it, added] =
          image_idx.try_emplace(image_id_key(entry, file, index), static_cast<int64_t>(image_idx.size()));
      for (std::string& caption : captions) {
        TrainSample sample;
        sample.image = image;
        sample.captions = {std::move(caption)};
        sample.image_idx = it->second;
        sample.file = file_number(f);
        dataset.samples.push_back(std::move(sample));
      }
    });
  }
  dataset.num_images = static_cast<int64_t>(image_idx.size());
  return dataset;
}

std::string RetrievalEvalDataset::image_path(int64_t index) const {
  ALBEF_CHECK(index >= 0 && index < num_images(), "image ", index, " out of range [0, ", num_images(), ")");
  return resolve_image_path(join_path(image_root, image[static_cast<size_t>(index)]), annotation_file);
}

std::vector<std::string> RetrievalEvalDataset::image_paths() const {
  std::vector<std::string> paths;
  paths.reserve(image.size());
  for (int64_t i = 0; i < num_images(); ++i) paths.push_back(image_path(i));
  return paths;
}

RetrievalEvalDataset load_retrieval_eval_dataset(const std::string& annotation_file,
                                                 const std::string& image_root, int max_words) {
  RetrievalEvalDataset dataset;
  dataset.annotation_file = annotation_file;
  dataset.image_root = image_root;
  for_each_entry(annotation_file, [&](size_t index, const json& entry) {
    const auto img_id = static_cast<int64_t>(dataset.image.size());
    dataset.image.push_back(string_field(entry, "image", annotation_file, index));
    std::vector<int64_t>& texts = dataset.img2txt.emplace_back();
    for (const std::string& caption : captions_field(entry, annotation_file, index)) {
      texts.push_back(static_cast<int64_t>(dataset.text.size()));
      dataset.text.push_back(text::pre_caption(caption, max_words));
      dataset.txt2img.push_back(img_id);
    }
  });
  return dataset;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
  }
  return lines;
}

std::vector<std::string> image_paths_from(const std::string& list_or_dir) {
  if (paths::is_folder(list_or_dir)) {
    static const std::set<std::string> kExtensions = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"};
    std::vector<std::string> paths;
    for (const auto& entry : fs::directory_iterator(list_or_dir)) {
      std::string ext = entry.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (entry.is_regular_file() && kExtensions.count(ext)) paths.push_back(entry.path().string());
    }
    std::sort(paths.begin(), paths.end());
    return paths;
  }
  const fs::path base = fs::path(list_or_dir).parent_path();
  std::vector<std::string> paths = read_lines(list_or_dir);
  for (auto& path : paths)
    if (!fs::path(path).is_absolute() && !paths::exists(path) && paths::exists(base / path)) path = (base / path).string();
  return paths;
}

}  // namespace albef::data
