#pragma once
// Autocast state per device type. LibTorch 2.4 replaced the per-device
// functions (is_cpu_enabled, set_autocast_gpu_dtype, ...) by ones taking the
// device type and made the old ones warn on every call; LibTorch 1.13 (Debian)
// has only the old ones. albef builds against both.

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace albef::autocast {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline bool enabled(c10::DeviceType device) { return at::autocast::is_autocast_enabled(device); }
inline void set_enabled(c10::DeviceType device, bool on) { at::autocast::set_autocast_enabled(device, on); }
inline at::ScalarType dtype(c10::DeviceType device) { return at::autocast::get_autocast_dtype(device); }
inline void set_dtype(c10::DeviceType device, at::ScalarType type) { at::autocast::set_autocast_dtype(device, type); }
#else
inline bool enabled(c10::DeviceType device) {
  return device == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
inline void set_enabled(c10::DeviceType device, bool on) {
  device == c10::DeviceType::CPU ? at::autocast::set_cpu_enabled(on) : at::autocast::set_enabled(on);
}
inline at::ScalarType dtype(c10::DeviceType device) {
  return device == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                        : at::autocast::get_autocast_gpu_dtype();
}
inline void set_dtype(c10::DeviceType device, at::ScalarType type) {
  device == c10::DeviceType::CPU ? at::autocast::set_autocast_cpu_dtype(type)
                                 : at::autocast::set_autocast_gpu_dtype(type);
}
#endif

}  // namespace albef::autocast
