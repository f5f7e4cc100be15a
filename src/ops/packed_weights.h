#pragma once
/// @file packed_weights.h
/// @brief Linear weights reordered once into the blocked layout oneDNN's
/// fastest matmul kernels read, kept while the layer lives.
#ifdef ALBEF_WITH_DNNL
#include <ATen/core/Tensor.h>
#include <oneapi/dnnl/dnnl.hpp>

namespace albef::ops {

/// The weights [N, K] (int8 or bf16, contiguous) as `packed` describes them
/// for an [M, K] x [K, N] matmul. The first call for a layer and layout
/// reorders them; later calls return the same memory until the weights are
/// written in place (their version counter moves: a checkpoint loaded into
/// the layer). An entry holds a weak reference to the weights' storage: a
/// freed model takes its packed copies with it at the next packing (its
/// address may be reused). The copy is memory beside the weights.
dnnl::memory packed_weights(const at::Tensor& weights, const dnnl::memory::desc& packed, const dnnl::engine& engine);

/// The layout oneDNN's matmul asks for the weights of an [M, K] x [K, N]
/// product with these source and destination descriptions, decided once a
/// shape; `as_stored` (the weights [N, K] read as W^T) where oneDNN asks for
/// a plain matrix and has a kernel reading them as they are, so that no
/// copy doubles the weights' memory.
dnnl::memory::desc chosen_weights_layout(const dnnl::memory::desc& src_md, const dnnl::memory::desc& dst_md,
                                         const dnnl::memory::desc& as_stored, const dnnl::engine& engine);

}  // namespace albef::ops
#endif
