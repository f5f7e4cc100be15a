// The unpickler alone (pickles inside checkpoints and REFER's refs(unc).p),
// with a storage loader that hands out what each reference asks for, as the
// checkpoint reader does after checking the reference against the file.
#include "fuzz_input.h"
#include "io/unpickler.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/ScalarType.h>
#include <c10/core/StorageImpl.h>

#include <algorithm>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto load = [](const albef::io::StorageRef& ref) {
    // A reference larger than any real input is refused by the readers before
    // allocating; here the fuzzer's references get a small storage instead.
    const int64_t bytes = std::min<int64_t>(ref.numel, 1 << 16) * c10::elementSize(ref.dtype);
    return c10::Storage(c10::Storage::use_byte_size_t(), bytes, c10::GetCPUAllocator(), false);
  };
  albef::fuzz::expect_success_or_albef_error("unpickle", [&] {
    size_t pos = 0;
    albef::io::unpickle(albef::fuzz::as_text(data, size), pos, "fuzz input", load);
  });
  return 0;
}
