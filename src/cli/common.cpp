#include "cli/common.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

namespace albef::cli {
namespace fs = std::filesystem;

void ModelFlags::add_to(CLI::App& command) {
  command.add_option("--config", config, "Task config YAML (official keys)")->required();
  command.add_option("--checkpoint", checkpoint, "Model checkpoint (.pth, official or albef)")->required();
  command.add_option("--batch-size", batch_size, "Images or texts per forward pass")->check(CLI::PositiveNumber);
  compute.add_to(command);
}

InferenceOptions ModelFlags::options() const {
  InferenceOptions options;
  options.config_path = config;
  options.checkpoint_path = checkpoint;
  compute.apply_to(options);
  options.batch_size = batch_size;
  return options;
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
  if (fs::is_directory(list_or_dir)) {
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
    if (!fs::path(path).is_absolute() && !fs::exists(path) && fs::exists(base / path)) path = (base / path).string();
  return paths;
}

}  // namespace albef::cli
