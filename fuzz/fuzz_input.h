#pragma once
// What every fuzz target shares: the input as a file the reader under test
// opens by path, and the rule the targets check.
//
// The rule: a reader either succeeds or refuses with albef::Error (whose
// message names the file). Any other exception escaping it, an abort, a
// sanitizer report, a hang or running out of memory is a defect that libFuzzer
// reports with the input that caused it.

#include "albef/core/error.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

namespace albef::fuzz {

/// The input bytes in an anonymous in-memory file, opened by its
/// /proc/self/fd path (the readers take paths; nothing touches the disk).
class InputFile {
 public:
  InputFile(const uint8_t* data, size_t size) : fd_(memfd_create("fuzz-input", 0)) {
    if (fd_ < 0) std::abort();
    for (size_t done = 0; done < size;) {
      const ssize_t n = write(fd_, data + done, size - done);
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~InputFile() { close(fd_); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Runs `read`; albef::Error is the accepted refusal, anything else aborts
/// with what escaped (libFuzzer then keeps the input as a crash).
template <typename Read>
void expect_success_or_albef_error(const char* reader, Read&& read) {
  try {
    read();
  } catch (const albef::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s let a non-albef exception escape: %s\n", reader, e.what());
    std::abort();
  }
}

}  // namespace albef::fuzz
