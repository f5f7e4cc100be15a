// DALL-E's encoder.pkl as SIMLA's pretraining reads it: a whole pickled
// nn.Module read as data (only the encoder's and torch.nn's classes named in
// the allow-list), then the encoder built from the sizes and weights it holds.
#include "albef/model/dvae.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const albef::fuzz::InputFile input(data, size);
  albef::fuzz::expect_success_or_albef_error("load_dvae_encoder", [&] { albef::load_dvae_encoder(input.path()); });
  return 0;
}
