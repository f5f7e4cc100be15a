#pragma once
/// @file fs.h
/// @brief Small file helpers shared by every writer.

#include <functional>
#include <string>

namespace albef {

/// Reads a whole file; throws albef::Error naming it when it cannot.
std::string read_file(const std::string& path);

/// Calls `write(tmp_path)` to fill a temporary file beside `path`, then
/// renames it over `path`, so a reader never sees a half-written file. The
/// temporary file is removed if `write` throws.
void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write);

}  // namespace albef
