#pragma once
/// @file web.h
/// @brief What self-contained HTML pages need: base64 data and escaped text.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace albef {

/// RFC 4648 base64 (with padding), for `data:` URIs.
std::string base64(const std::vector<unsigned char>& bytes);

/// The bytes of RFC 4648 base64 text (padding optional, whitespace and a
/// leading `data:...;base64,` ignored); nullopt when it is not base64.
std::optional<std::string> base64_decode(std::string_view text);

/// `text` with & < > " escaped, for HTML text and attribute values.
std::string html_escape(const std::string& text);

}  // namespace albef
