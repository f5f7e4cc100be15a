#pragma once
/// @file npy.h
/// @brief NumPy `.npy` files (format 1.0/2.0, little-endian, C order).

#include <ATen/core/Tensor.h>

#include <string>

namespace albef::io {

/// Reads a `.npy` file of float32/float64/int64/int32/uint8/bool.
at::Tensor read_npy(const std::string& path);

/// Writes a tensor as `.npy` (made contiguous, on CPU), atomically.
void write_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace albef::io
