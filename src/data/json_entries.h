#pragma once
// Reading annotation files entry by entry, with errors that name the file,
// the entry and the key: what every task's dataset is parsed with.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <functional>
#include <string>

namespace albef::data {

/// Calls `visit(index, entry)` for each object of the top-level list of
/// `file`, holding one entry in memory at a time. An empty file, invalid
/// JSON, a top level that is not a list, an empty list or an entry that is
/// not an object is an albef::Error naming the file (and the entry).
void for_each_entry(const std::string& file, const std::function<void(size_t, const nlohmann::json&)>& visit);

/// The string at `key` of entry `index` of `file`; missing or not a string
/// is an error naming all three.
std::string string_field(const nlohmann::json& entry, const char* key, const std::string& file, size_t index);

}  // namespace albef::data
