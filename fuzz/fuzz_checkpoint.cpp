// Checkpoint reader: zip (torch.save >= 1.6) and legacy streams, then the
// state_dict view every command takes of the result.
#include "albef/io/checkpoint.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const albef::fuzz::InputFile input(data, size);
  albef::fuzz::expect_success_or_albef_error("read_torch_file", [&] {
    const albef::io::PyObjectPtr root = albef::io::read_torch_file(input.path());
    albef::io::state_dict_from(root, input.path());
  });
  return 0;
}
