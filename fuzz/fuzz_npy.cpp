// The .npy reader (features users pass to albef index, grit-group, ...).
#include "albef/io/npy.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const albef::fuzz::InputFile input(data, size);
  albef::fuzz::expect_success_or_albef_error("read_npy", [&] { albef::io::read_npy(input.path()); });
  return 0;
}
