#pragma once
// Questions about a path that answer "no" instead of throwing. The plain
// std::filesystem overloads throw on a name longer than the system allows or a
// folder that cannot be searched; such a path written in a config or an
// annotation file is bad input, reported by the caller as not found.

#include <filesystem>
#include <system_error>

namespace albef::paths {

inline bool exists(const std::filesystem::path& path) {
  std::error_code ignored;
  return std::filesystem::exists(path, ignored);
}

inline bool is_file(const std::filesystem::path& path) {
  std::error_code ignored;
  return std::filesystem::is_regular_file(path, ignored);
}

inline bool is_folder(const std::filesystem::path& path) {
  std::error_code ignored;
  return std::filesystem::is_directory(path, ignored);
}

}  // namespace albef::paths
