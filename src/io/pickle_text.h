#pragma once
// The text literals of pickle protocols 0 and 1 (what Python 2's
// pickle.dump writes by default, as REFER's refs(unc).p files are): each
// opcode's argument is one line. Internal to src/io; every function returns
// nullopt on malformed input and the unpickler names the byte.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace albef::io::pickle_text {

/// INT / LONG / PUT / GET argument: an optional sign and decimal digits (a
/// trailing 'L' allowed with `long_suffix`).
std::optional<int64_t> parse_int(std::string_view line, bool long_suffix = false);
/// FLOAT argument: Python's repr of a float.
std::optional<double> parse_float(std::string_view line);
/// STRING argument: a Python 2 str literal in quotes ('...' or "..."), with
/// its backslash escapes decoded. Bytes that are not UTF-8 are read as
/// Latin-1 (pickle.load(encoding='latin1')).
std::optional<std::string> parse_string(std::string_view line);
/// UNICODE argument: raw-unicode-escape (\uXXXX, \UXXXXXXXX; every other
/// byte is a Latin-1 code point), returned as UTF-8.
std::optional<std::string> parse_unicode(std::string_view line);
/// The bytes protocol 2 stores as the Latin-1 decoding of their text, UTF-8
/// encoded (_codecs.encode(text, 'latin1')): the text encoded back to Latin-1.
std::optional<std::string> latin1_bytes(std::string_view utf8);

}  // namespace albef::io::pickle_text
