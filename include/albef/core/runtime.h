#pragma once
/// @file runtime.h
/// @brief Process-wide compute settings: threads, allocator, device and the
/// one switch that selects the compute precision.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>

namespace albef {

/// Compute precision of matmuls and convolutions.
enum class Precision {
  Fp32,  ///< everything in float32
  Bf16,  ///< autocast: matmul/conv in bfloat16, LayerNorm, softmax and the residual stream in float32
  /// Inference only: the encoders' linear layers in int8 (weights per output
  /// channel, activations per row, int32 accumulation); everything else float32,
  /// or as in Bf16 where the CPU has oneDNN's bf16 GEMM (dnnl_bf16_gemm_available).
  Int8,
};

/// True when albef was built with oneDNN's bf16 GEMM and this CPU runs it
/// (oneDNN needs AVX-512 for it; elsewhere bf16 products go to autocast's
/// ATen kernels).
bool dnnl_bf16_gemm_available();

/// Parses "fp32" / "bf16" / "int8"; anything else is an error naming the value.
Precision parse_precision(const std::string& name);
/// Parses "cpu" / "cuda" / "cuda:N"; "cuda" on a LibTorch without CUDA is an error.
c10::Device parse_device(const std::string& name);

/// Sets the intra-op thread count (0 = OMP_NUM_THREADS if set, else every
/// core; LibTorch's own default here is one thread) and keeps freed large
/// blocks instead of returning them to the OS on every free, which makes
/// element-wise ops several times faster: tensor buffers of 256 KB and more
/// in a region of their own (core/tensor_heap.h), where the small objects
/// glibc's heap also holds cannot pin the holes they leave; the rest in
/// glibc's heap. Call once at start-up.
void init_runtime(int threads = 0);

/// For its scope, blocks of 256 KB and more are mapped from the OS and given
/// back when freed, instead of staying in the heaps init_runtime arranges.
/// For one-off buffers (a checkpoint's tensors on their way into a model;
/// the plain weights of a bf16 or int8 model, which packing replaces: a
/// 768 x 768 int8 layer's 576 KB freed into glibc's heap stayed resident
/// beside its packed copy), which would otherwise fragment the heap.
class TransientBuffersToOs {
 public:
  TransientBuffersToOs();
  ~TransientBuffersToOs();
  TransientBuffersToOs(const TransientBuffersToOs&) = delete;
  TransientBuffersToOs& operator=(const TransientBuffersToOs&) = delete;
};

/// Enables autocast for its scope when `precision` is Bf16 (CPU: bfloat16;
/// CUDA: bfloat16 too), restoring the previous state on exit. Int8 on a CPU
/// with oneDNN's bf16 GEMM too: what int8 leaves in floating point (attention,
/// the projections, the patch embedding) then runs on bf16 operands, and the
/// int8 layers read and write bf16 activations (32 images on Zen 5: 1.3x the
/// rate int8 had with float32 activations).
class PrecisionGuard {
 public:
  PrecisionGuard(Precision precision, c10::Device device);
  ~PrecisionGuard();
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  bool cpu_before_ = false, cuda_before_ = false;
  bool active_ = false;
};

/// Turns autocast off for its scope (restoring it on exit), for the few
/// products whose float32 precision matters even in bf16 training: the
/// contrastive similarities, whose small differences drive ITC learning.
class AutocastOff {
 public:
  AutocastOff();
  ~AutocastOff();
  AutocastOff(const AutocastOff&) = delete;
  AutocastOff& operator=(const AutocastOff&) = delete;

 private:
  bool cpu_before_, cuda_before_;
};

}  // namespace albef
