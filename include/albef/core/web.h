#pragma once
/// @file web.h
/// @brief What self-contained HTML pages need: base64 data and escaped text.

#include <cstdint>
#include <string>
#include <vector>

namespace albef {

/// RFC 4648 base64 (with padding), for `data:` URIs.
std::string base64(const std::vector<unsigned char>& bytes);

/// `text` with & < > " escaped, for HTML text and attribute values.
std::string html_escape(const std::string& text);

}  // namespace albef
