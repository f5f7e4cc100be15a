#include "bench/memory.h"

#include <fstream>
#include <string>

namespace albef::bench {

namespace {

int64_t status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stoll(line.substr(field.size())) * 1024;
  return 0;
}

}  // namespace

int64_t peak_resident_bytes() { return status_bytes("VmHWM:"); }
int64_t resident_bytes() { return status_bytes("VmRSS:"); }
int64_t resident_file_bytes() { return status_bytes("RssFile:"); }

}  // namespace albef::bench
