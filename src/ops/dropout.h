#pragma once
/// @file dropout.h
/// @brief Dropout masks drawn on every thread.
///
/// LibTorch 1.13 built without MKL draws CPU bernoulli_ one element at a
/// time from the generator's mt19937 on one thread. A pretraining step at
/// batch 8 draws about 44 million dropout decisions (BERT's hidden and
/// attention-probability dropout, online and momentum encoders), which cost
/// about 0.4 s that way. Here one 64-bit seed comes from the default CPU
/// generator (so at::manual_seed and saved generator states still decide the
/// draw) and entry i's bits are a hash of the seed and i (SplitMix64's
/// output function over a counter): no state runs from one entry to the
/// next, so every thread draws its own part, and the mask depends on the
/// seed alone, not on how many threads drew it. 44 million draws take
/// about 40 ms on 2 threads instead of 360.

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

namespace albef::ops {

/// A contiguous bool tensor of `sizes` on the CPU, each entry true with
/// probability `keep` (in [0, 1]).
at::Tensor draw_keep_mask(at::IntArrayRef sizes, double keep);

/// Inverted dropout as at::dropout: in training each element is zeroed with
/// probability `p` and the rest scaled by 1 / (1 - p); otherwise `input`
/// itself. Differentiable in `input`. CPU tensors take the parallel mask;
/// others go to at::dropout.
at::Tensor dropout(const at::Tensor& input, double p, bool train);

}  // namespace albef::ops
