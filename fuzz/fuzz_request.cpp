// The service's request reader (src/server/requests.cpp): every endpoint's
// body, as JSON or as a multipart form whose parts the input spells out. The
// rule here is the service's: a request is served or refused with HttpError
// (a 4xx status); anything else escaping would be a 500 or worse.
#include "server/requests.h"

#include <fuzzer/FuzzedDataProvider.h>
#include <httplib.h>

#include <cstdio>
#include <cstdlib>

namespace {

using albef::server::HttpError;
using albef::server::RequestReader;

// Form part names the endpoints read, and a few they do not.
const char* const kPartNames[] = {"texts", "images", "image", "text", "query", "question", "k", "rerank", "top", "x"};

httplib::Request make_request(FuzzedDataProvider& input) {
  httplib::Request request;
  if (!input.ConsumeBool()) {
    request.body = input.ConsumeRemainingBytesAsString();
    return request;
  }
  request.set_header("Content-Type", "multipart/form-data; boundary=fuzz");
  while (input.remaining_bytes() > 0) {
    httplib::MultipartFormData part;
    part.name = input.ConsumeBool() ? kPartNames[input.ConsumeIntegralInRange<size_t>(0, std::size(kPartNames) - 1)]
                                    : input.ConsumeRandomLengthString(16);
    if (input.ConsumeBool()) part.filename = "upload.jpg";  // a file part: its bytes, not text
    part.content = input.ConsumeRandomLengthString(input.remaining_bytes());
    request.files.emplace(part.name, part);
  }
  return request;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Small limits, so the checks on them are reached by small inputs.
  static const RequestReader reader(albef::server::RequestLimits{4096, 64, 4, 16});
  FuzzedDataProvider input(data, size);
  const int endpoint = input.ConsumeIntegralInRange(0, 5);
  const httplib::Request request = make_request(input);
  try {
    switch (endpoint) {
      case 0: reader.texts(request); break;
      case 1: reader.images(request); break;
      case 2: reader.pairs(request); break;
      case 3: reader.search(request); break;
      case 4: reader.vqa(request); break;
      default: reader.gradcam(request); break;
    }
  } catch (const HttpError& e) {
    if (e.status < 400 || e.status > 499) {
      std::fprintf(stderr, "a refusal with status %d: %s\n", e.status, e.what());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "the request reader let a non-HttpError exception escape: %s\n", e.what());
    std::abort();
  }
  return 0;
}
