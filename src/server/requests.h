#pragma once
// The service's request bodies, read and checked before any model sees them:
// a JSON object or a multipart form, each endpoint's fields, the limits on
// texts, items and pixels, and the uploaded images decoded. Whatever a client
// gets wrong ends in HttpError with a 4xx status (fuzz/fuzz_request.cpp holds
// the reader to that); it needs no model, only the image size to resize to.

#include <ATen/core/Tensor.h>
#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace httplib {
struct Request;
}

namespace albef::server {

/// A request the service refuses, with its HTTP status.
struct HttpError : std::runtime_error {
  HttpError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

struct RequestLimits {
  int64_t max_pixels = 40'000'000;  ///< per image, width x height
  int64_t max_text_chars = 2000;    ///< bytes of one caption, query or question
  int64_t max_items = 64;           ///< texts, images or pairs in one request
  int64_t image_res = 384;          ///< the model's input size: uploads are resized to it
};

/// An uploaded image, decoded and checked, and its test transform.
struct Upload {
  cv::Mat rgb;
  at::Tensor tensor;  // uint8 [3, R, R]: held as 8-bit pixels while it waits; the image encoder normalises them
};

struct SearchRequest {
  std::string query;
  int64_t k = 10, rerank = 0;
};

struct VqaRequest {
  at::Tensor image;
  std::string question;
  int64_t top = 5;
};

struct GradcamRequest {
  Upload image;
  std::string text;
};

/// Reads each endpoint's body: JSON, or a multipart form whose file parts
/// named image/images stand for base64 strings and whose k/rerank/top parts
/// are integers, so both forms go through the same checks.
class RequestReader {
 public:
  explicit RequestReader(RequestLimits limits) : limits_(limits) {}

  /// POST /v1/embed/text: {"texts": [string...]}
  std::vector<std::string> texts(const httplib::Request& request) const;
  /// POST /v1/embed/image: {"images": [base64...]} or {"image": base64}
  std::vector<at::Tensor> images(const httplib::Request& request) const;
  /// POST /v1/score: {"pairs": [{"image", "text"}...]} or {"image", "text"}
  std::vector<std::pair<at::Tensor, std::string>> pairs(const httplib::Request& request) const;
  /// POST /v1/search: {"query", "k" in [1, 1000], "rerank" in [0, max_items]}
  SearchRequest search(const httplib::Request& request) const;
  /// POST /v1/vqa: {"image", "question", "top" in [1, 100]}
  VqaRequest vqa(const httplib::Request& request) const;
  /// POST /v1/gradcam: {"image", "text"}
  GradcamRequest gradcam(const httplib::Request& request) const;

 private:
  RequestLimits limits_;
};

}  // namespace albef::server
