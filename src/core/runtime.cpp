#include "albef/core/runtime.h"

#include "albef/core/error.h"
#include "core/dnnl_bf16_gemm.h"
#include "core/tensor_heap.h"

#include <ATen/Parallel.h>
#include "core/autocast.h"
#include <ATen/Context.h>
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <thread>

namespace albef {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::Fp32;
  if (name == "bf16") return Precision::Bf16;
  if (name == "int8") return Precision::Int8;
  fail("unknown precision '", name, "' (use fp32, bf16 or int8)");
}

c10::Device parse_device(const std::string& name) {
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    fail("unknown device '", name, "' (use cpu or cuda)");
  }
  if (device.is_cuda() && !at::hasCUDA())
    fail("device '", name, "' requested, but this LibTorch was built without CUDA (or no GPU is visible)");
  if (!device.is_cpu() && !device.is_cuda()) fail("unsupported device '", name, "' (use cpu or cuda)");
  return device;
}

namespace {
constexpr int kKeepInHeapBytes = 1 << 30;
std::atomic<bool> g_keep_in_heap{false};
}  // namespace

void init_runtime(int threads) {
  // Keep big freed blocks in the heap: glibc would otherwise mmap/munmap
  // every large tensor, paying page faults on each element-wise op.
  mallopt(M_MMAP_THRESHOLD, kKeepInHeapBytes);
  g_keep_in_heap = true;
  mallopt(M_TRIM_THRESHOLD, kKeepInHeapBytes);
  install_tensor_heap();
  if (threads <= 0) {
    // OMP_NUM_THREADS when set (albef launch gives each process its share
    // of the cores), else every core: LibTorch's own default here is one.
    const char* omp = std::getenv("OMP_NUM_THREADS");
    threads = omp && std::atoi(omp) > 0 ? std::atoi(omp)
                                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
#ifdef __SANITIZE_THREAD__
  // libgomp is not instrumented: ThreadSanitizer cannot see its barriers and
  // would report every parallel_for. The TSan build checks the threads albef
  // starts itself (loaders, the service, collectives) beside one OpenMP thread.
  threads = 1;
#endif
  at::set_num_threads(threads);
}

TransientBuffersToOs::TransientBuffersToOs() {
  if (g_keep_in_heap) mallopt(M_MMAP_THRESHOLD, static_cast<int>(kLargeTensorBytes));
  if (TensorHeap* heap = tensor_heap()) heap->begin_bypass();
}

TransientBuffersToOs::~TransientBuffersToOs() {
  if (g_keep_in_heap) mallopt(M_MMAP_THRESHOLD, kKeepInHeapBytes);
  if (TensorHeap* heap = tensor_heap()) heap->end_bypass();
}

// oneDNN implements its bf16 GEMM only with AVX-512 and answers
// dnnl_unimplemented elsewhere (an AVX2-only CPU, say): one 1x1x1 product asks, once.
bool dnnl_bf16_gemm_available() {
#ifdef ALBEF_WITH_DNNL_BF16_GEMM
  static const bool runs = [] {
    const uint16_t one = 0x3f80;  // 1.0 in bfloat16
    float product = 0.0f;
    return dnnl_gemm_bf16bf16f32('N', 'N', 1, 1, 1, 1.0f, &one, 1, &one, 1, 0.0f, &product, 1) == dnnl_success &&
           product == 1.0f;
  }();
  return runs;
#else
  return false;
#endif
}

PrecisionGuard::PrecisionGuard(Precision precision, c10::Device device) {
  const bool int8_with_bf16 = precision == Precision::Int8 && device.is_cpu() && dnnl_bf16_gemm_available();
  if (precision != Precision::Bf16 && !int8_with_bf16) return;
  active_ = true;
  cpu_before_ = autocast::enabled(c10::DeviceType::CPU);
  cuda_before_ = autocast::enabled(c10::DeviceType::CUDA);
  autocast::set_dtype(device.type(), at::kBFloat16);
  autocast::set_enabled(device.type(), true);
}

PrecisionGuard::~PrecisionGuard() {
  if (!active_) return;
  autocast::set_enabled(c10::DeviceType::CPU, cpu_before_);
  autocast::set_enabled(c10::DeviceType::CUDA, cuda_before_);
  at::autocast::clear_cache();
}

AutocastOff::AutocastOff()
    : cpu_before_(autocast::enabled(c10::DeviceType::CPU)), cuda_before_(autocast::enabled(c10::DeviceType::CUDA)) {
  autocast::set_enabled(c10::DeviceType::CPU, false);
  autocast::set_enabled(c10::DeviceType::CUDA, false);
}

AutocastOff::~AutocastOff() {
  autocast::set_enabled(c10::DeviceType::CPU, cpu_before_);
  autocast::set_enabled(c10::DeviceType::CUDA, cuda_before_);
}

}  // namespace albef
