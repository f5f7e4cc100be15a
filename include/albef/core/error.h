#pragma once
/// @file error.h
/// @brief The one exception type of albef-cpp and the precondition macro.
///
/// Two kinds of failure share `albef::Error`:
///  - bad input (a file, a key, a caption): the message names the file, line
///    or key and the problem, and is meant to be printed to the user as is;
///  - a broken precondition inside the library (wrong shapes, misuse of an
///    API): `ALBEF_CHECK` adds the function, source file and line.

#include <sstream>
#include <stdexcept>
#include <string>

namespace albef {

/// Every error albef-cpp throws on purpose.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// A file or folder the caller named does not exist (the Python module
/// raises FileNotFoundError for it); the message names the path.
class FileNotFound : public Error {
 public:
  using Error::Error;
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& out, const T& first, const Rest&... rest) {
  out << first;
  append_all(out, rest...);
}
}  // namespace detail

/// Joins the arguments with operator<< into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream out;
  detail::append_all(out, args...);
  return out.str();
}

/// Throws albef::Error with the arguments joined (for bad user input).
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str_cat(args...));
}

/// Throws FileNotFound with the arguments joined.
template <typename... Args>
[[noreturn]] void fail_missing(const Args&... args) {
  throw FileNotFound(str_cat(args...));
}

}  // namespace albef

/// Precondition check: throws albef::Error naming function, file and line.
#define ALBEF_CHECK(cond, ...)                                                       \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      throw ::albef::Error(::albef::str_cat(__func__, " (", __FILE__, ":", __LINE__, \
                                            "): check '", #cond, "' failed: ",       \
                                            __VA_ARGS__));                           \
    }                                                                                \
  } while (0)
