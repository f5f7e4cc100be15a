#pragma once
/// @file fs.h
/// @brief Small file helpers shared by every writer.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>

namespace albef {

/// Reads a whole file; throws albef::Error naming it when it cannot.
std::string read_file(const std::string& path);

/// Calls `write(tmp_path)` to fill a temporary file beside `path`, then
/// renames it over `path`, so a reader never sees a half-written file. The
/// temporary file is removed if `write` throws.
void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write);

/// For a file name as write_atomically names its temporaries (`NAME.tmp.PID`,
/// left behind by a process killed while writing): NAME and the writer's PID;
/// nullopt for any other name. For the cleanups of interrupted runs.
std::optional<std::pair<std::string, int64_t>> atomic_temporary_target(const std::string& file_name);

/// Checks, before any work is done, that folder `dir` exists or can be
/// created and that a file can be written in it; leaves the file system as it
/// was (a command that fails later writes nothing). Throws albef::Error naming
/// `what` (the flag, e.g. "--out") and the path when it cannot, so a long run
/// never fails only at its end.
void check_output_dir(const std::string& dir, const std::string& what);

/// check_output_dir, then creates the folder (and its parents).
void prepare_output_dir(const std::string& dir, const std::string& what);

/// prepare_output_dir for the folder that will hold the file `path`.
void prepare_output_file(const std::string& path, const std::string& what);

}  // namespace albef
