#include "pickle_text.h"

#include <cerrno>
#include <cstdlib>

namespace albef::io::pickle_text {
namespace {

void append_utf8(std::string& out, uint32_t code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xc0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xe0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (code & 0x3f));
  }
}

bool valid_utf8(const std::string& bytes) {
  for (size_t i = 0; i < bytes.size();) {
    const auto c = static_cast<uint8_t>(bytes[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > bytes.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<uint8_t>(bytes[i + k]) >> 6) != 2) return false;
    i += n;
  }
  return true;
}

std::string latin1_to_utf8(const std::string& bytes) {
  std::string out;
  for (char c : bytes) append_utf8(out, static_cast<uint8_t>(c));
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<uint32_t> parse_hex(std::string_view digits) {
  uint32_t value = 0;
  for (char c : digits) {
    const int v = hex_value(c);
    if (v < 0) return std::nullopt;
    value = value * 16 + static_cast<uint32_t>(v);
  }
  return value;
}

}  // namespace

std::optional<int64_t> parse_int(std::string_view line, bool long_suffix) {
  if (long_suffix && !line.empty() && line.back() == 'L') line.remove_suffix(1);
  if (line.empty() || line.size() > 20) return std::nullopt;
  const std::string text(line);
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size()) return std::nullopt;
  return value;
}

std::optional<double> parse_float(std::string_view line) {
  if (line.empty() || line.size() > 64) return std::nullopt;
  const std::string text(line);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return std::nullopt;
  return value;
}

std::optional<std::string> parse_string(std::string_view line) {
  if (line.size() < 2 || (line.front() != '\'' && line.front() != '"') || line.back() != line.front())
    return std::nullopt;
  const std::string_view body = line.substr(1, line.size() - 2);
  std::string bytes;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\') {
      bytes += body[i];
      continue;
    }
    if (++i == body.size()) return std::nullopt;
    const char c = body[i];
    switch (c) {
      case 'n': bytes += '\n'; break;
      case 't': bytes += '\t'; break;
      case 'r': bytes += '\r'; break;
      case 'a': bytes += '\a'; break;
      case 'b': bytes += '\b'; break;
      case 'f': bytes += '\f'; break;
      case 'v': bytes += '\v'; break;
      case '\\': case '\'': case '"': bytes += c; break;
      case 'x': {
        if (i + 2 >= body.size()) return std::nullopt;
        const auto value = parse_hex(body.substr(i + 1, 2));
        if (!value) return std::nullopt;
        bytes += static_cast<char>(*value);
        i += 2;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {  // up to three octal digits
          uint32_t value = 0;
          size_t n = 0;
          while (n < 3 && i + n < body.size() && body[i + n] >= '0' && body[i + n] <= '7')
            value = value * 8 + static_cast<uint32_t>(body[i + n++] - '0');
          bytes += static_cast<char>(value & 0xff);
          i += n - 1;
        } else {
          bytes += '\\';  // Python keeps unknown escapes as written
          bytes += c;
        }
    }
  }
  return valid_utf8(bytes) ? bytes : latin1_to_utf8(bytes);
}

std::optional<std::string> parse_unicode(std::string_view line) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size() && (line[i + 1] == 'u' || line[i + 1] == 'U')) {
      const size_t digits = line[i + 1] == 'u' ? 4 : 8;
      if (i + 2 + digits > line.size()) return std::nullopt;
      const auto code = parse_hex(line.substr(i + 2, digits));
      if (!code || *code > 0x10ffff) return std::nullopt;
      append_utf8(out, *code);
      i += 1 + digits;
    } else {
      append_utf8(out, static_cast<uint8_t>(line[i]));
    }
  }
  return out;
}

std::optional<std::string> latin1_bytes(std::string_view utf8) {
  std::string bytes;
  for (size_t i = 0; i < utf8.size(); ++i) {
    const auto lead = static_cast<uint8_t>(utf8[i]);
    if (lead < 0x80) {
      bytes.push_back(static_cast<char>(lead));
    } else if ((lead == 0xc2 || lead == 0xc3) && i + 1 < utf8.size() &&
               (static_cast<uint8_t>(utf8[i + 1]) & 0xc0) == 0x80) {
      bytes.push_back(static_cast<char>(((lead & 0x03) << 6) | (static_cast<uint8_t>(utf8[++i]) & 0x3f)));
    } else {
      return std::nullopt;
    }
  }
  return bytes;
}

}  // namespace albef::io::pickle_text
