#pragma once
/// @file rows.h
/// @brief A batch computed a part of its rows at a time, written into one tensor.

#include <ATen/ATen.h>

#include <vector>

namespace albef {

/// Writes `part` into rows [begin, begin + part.size(0)) of `all`, which the
/// first call makes [rows, ...] with `part`'s other sizes and options: the
/// parts end in one tensor without a concatenation holding them twice.
inline void write_rows(at::Tensor& all, int64_t rows, int64_t begin, const at::Tensor& part) {
  if (!all.defined()) {
    std::vector<int64_t> sizes = part.sizes().vec();
    sizes[0] = rows;
    all = at::empty(sizes, part.options());
  }
  all.slice(0, begin, begin + part.size(0)).copy_(part);
}

}  // namespace albef
