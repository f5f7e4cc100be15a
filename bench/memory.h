#pragma once
// Peak resident memory of this process, from /proc/self/status.

#include <cstdint>

namespace albef::bench {

/// Peak resident set size in bytes since the process started (VmHWM).
int64_t peak_resident_bytes();

/// Resident set size in bytes now (VmRSS).
int64_t resident_bytes();

/// The file-backed part of it (RssFile): mapped library code and data, which
/// grows as kernels run for the first time.
int64_t resident_file_bytes();

}  // namespace albef::bench
