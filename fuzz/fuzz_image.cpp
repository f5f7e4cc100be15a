// The image decoder (files in datasets, uploads to albef serve) and the
// header probe that bounds an image's size before it is decoded.
#include "albef/vision/image.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = albef::fuzz::as_text(data, size);
  albef::fuzz::expect_success_or_albef_error("image_dimensions", [&] { albef::vision::image_dimensions(bytes); });
  albef::fuzz::expect_success_or_albef_error("decode_rgb", [&] { albef::vision::decode_rgb(bytes, "fuzz input"); });
  return 0;
}
