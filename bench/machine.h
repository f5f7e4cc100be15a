#pragma once
// What a bench run ran on, kept in its report beside the figures. Ratios against PyTorch depend on the
// host as much as on albef: PyTorch's float32 products go through the system OpenBLAS, whose kernel set
// follows the CPU it detects or OPENBLAS_CORETYPE (on one AVX-512 host its AVX2 "Haswell" kernels ran at
// half oneDNN's rate, on another its AVX-512 "Cooperlake" ones at 90%).

#include <nlohmann/json.hpp>

#include <string>

namespace albef::bench {

/// The CPU ("cpu": model name, family and model as /proc/cpuinfo gives them, and which of the
/// instruction sets the products use it has) and the BLAS ("openblas_core": the kernel set OpenBLAS
/// chose, "not loaded" without it; "openblas_coretype": the variable, "unset" without it).
nlohmann::json machine_description();

/// One line of it for the printed table.
std::string describe_machine(const nlohmann::json& machine);

}  // namespace albef::bench
