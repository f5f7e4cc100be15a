#include "albef/core/fs.h"

#include "albef/core/error.h"
#include "core/paths.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>
#include <unistd.h>

namespace albef {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in && errno == ENOENT) fail_missing(path, ": cannot open (", std::strerror(errno), ")");
  if (!in) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(path, ": read error");
  return buffer.str();
}

namespace {
constexpr char kTemporaryInfix[] = ".tmp.";
}  // namespace

void write_atomically(const std::string& path,
                      const std::function<void(const std::string&)>& write) {
  const std::string tmp = str_cat(path, kTemporaryInfix, ::getpid());
  try {
    write(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    fail(path, ": cannot write (", reason, ")");
  }
}

std::optional<std::pair<std::string, int64_t>> atomic_temporary_target(const std::string& file_name) {
  const size_t at = file_name.rfind(kTemporaryInfix);
  if (at == std::string::npos || at == 0) return std::nullopt;
  const std::string digits = file_name.substr(at + sizeof(kTemporaryInfix) - 1);
  int64_t writer = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), writer);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() || writer <= 0) return std::nullopt;
  return std::make_pair(file_name.substr(0, at), writer);
}

void check_output_dir(const std::string& dir, const std::string& what) {
  namespace fs = std::filesystem;
  const fs::path folder = dir.empty() ? fs::path(".") : fs::path(dir);
  std::vector<fs::path> missing;  // created for the check, removed after it
  for (fs::path at = fs::absolute(folder); !at.empty() && !paths::exists(at); at = at.parent_path()) {
    missing.push_back(at);
    if (at == at.parent_path()) break;
  }
  const auto remove_missing = [&] {
    std::error_code ignored;
    for (const fs::path& created : missing) fs::remove(created, ignored);
  };
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) {
    remove_missing();
    fail(what, " ", folder.string(), ": cannot create the folder (", error.message(), ")");
  }
  if (!paths::is_folder(folder)) fail(what, " ", folder.string(), ": exists and is not a folder");
  const std::string probe = (folder / str_cat(".albef-write-check.", ::getpid())).string();
  std::FILE* file = std::fopen(probe.c_str(), "w");
  const int open_error = errno;
  if (file) {
    std::fclose(file);
    std::remove(probe.c_str());
  }
  remove_missing();
  if (!file) fail(what, " ", folder.string(), ": cannot write there (", std::strerror(open_error), ")");
}

void prepare_output_dir(const std::string& dir, const std::string& what) {
  check_output_dir(dir, what);
  std::filesystem::create_directories(dir.empty() ? "." : dir);
}

void prepare_output_file(const std::string& path, const std::string& what) {
  if (paths::is_folder(path)) fail(what, " ", path, ": is a folder, expected a file name");
  const std::string folder = std::filesystem::path(path).parent_path().string();
  prepare_output_dir(folder.empty() ? "." : folder, what);
}

}  // namespace albef
