#pragma once
// Resident memory of this process, from /proc/self/status.

#include <cstdint>

namespace albef::bench {

/// Current resident set size in bytes (VmRSS).
int64_t resident_bytes();
/// Peak resident set size in bytes since start or the last reset (VmHWM).
int64_t peak_resident_bytes();
/// Starts a new peak measurement (Linux: writes 5 to /proc/self/clear_refs).
void reset_peak_resident();

}  // namespace albef::bench
