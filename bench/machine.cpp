#include "bench/machine.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace albef::bench {
namespace {

// "key\t: value" lines of the first processor in /proc/cpuinfo.
std::string cpuinfo_field(const std::string& text, const std::string& key) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) break;  // the first processor's block ends
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name == key) return line.substr(std::min(line.size(), colon + 2));
  }
  return "";
}

}  // namespace

nlohmann::json machine_description() {
  std::ifstream in("/proc/cpuinfo");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string flags = " " + cpuinfo_field(text, "flags") + " ";
  nlohmann::json features = nlohmann::json::array();
  for (const char* feature : {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"})
    if (flags.find(std::string(" ") + feature + " ") != std::string::npos) features.push_back(feature);
  nlohmann::json cpu = {{"model_name", cpuinfo_field(text, "model name")},
                        {"family", cpuinfo_field(text, "cpu family")},
                        {"model", cpuinfo_field(text, "model")},
                        {"features", features}};
  // LibTorch reaches OpenBLAS through libblas.so.3; where it is another BLAS the symbol is absent.
  using CoreName = const char* (*)();
  const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  return {{"cpu", cpu},
          {"openblas_core", core_name ? core_name() : "not loaded"},
          {"openblas_coretype", coretype && *coretype ? coretype : "unset"}};
}

std::string describe_machine(const nlohmann::json& machine) {
  const nlohmann::json& cpu = machine["cpu"];
  std::string line = cpu["model_name"].get<std::string>() + " (family " + cpu["family"].get<std::string>() +
                     ", model " + cpu["model"].get<std::string>() + "):";
  for (const auto& feature : cpu["features"]) line += " " + feature.get<std::string>();
  return line + "; OpenBLAS kernels " + machine["openblas_core"].get<std::string>() + " (OPENBLAS_CORETYPE " +
         machine["openblas_coretype"].get<std::string>() + ")";
}

}  // namespace albef::bench
