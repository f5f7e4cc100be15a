#pragma once
/// @file rows.h
/// @brief A batch's rows: computed a part at a time into one tensor, or shaped
/// back as the input they were computed from.

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

/// Rows [M, N] computed from an input [..., K], as [..., N]. Rows handed over
/// fresh (moved in, nothing else holding them) take the shape themselves: a
/// view would keep them alive as its base outside inference mode (no_grad
/// included), and ops::add_into could then never write a residual sum over them.
inline at::Tensor rows_in_shape(at::Tensor rows, at::IntArrayRef input_sizes) {
  if (input_sizes.size() == 2) return rows;
  std::vector<int64_t> sizes = input_sizes.vec();
  sizes.back() = rows.size(1);
  if (rows.use_count() > 1 || rows.storage().use_count() > 1 || !rows.is_contiguous() || rows.requires_grad())
    return rows.view(sizes);
  rows.unsafeGetTensorImpl()->set_sizes_contiguous(sizes);
  return rows;
}

}  // namespace albef
