#pragma once
/// @file zip_layout.h
/// @brief The structural check of a zip checkpoint made before miniz reads it (internal to src/io).

#include <string>

namespace albef::io::detail {

/// Checks that every entry of the zip archive at `path` lies inside the file,
/// that its local header names the record the central directory names, and
/// that no two entries' bytes overlap. LibTorch's miniz is built without CRC
/// checks, so a crafted archive would otherwise hand one record's bytes out as
/// another's (silently wrong weights) or read past the end. Throws
/// albef::Error naming `path` and the entry.
void check_zip_layout(const std::string& path);

}  // namespace albef::io::detail
