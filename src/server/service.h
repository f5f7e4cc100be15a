#pragma once
// `albef serve`: the models behind an HTTP API and a web page, with dynamic
// batching, a bounded queue, request limits and an optional API key.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace albef::server {

struct ServeOptions {
  std::string config;      ///< the retrieval (or pretraining) model's config
  std::string checkpoint;  ///< its checkpoint: embeddings, scores, search, Grad-CAM
  std::string text_encoder;
  std::string index;           ///< an `albef index` gallery for /v1/search (optional)
  std::string vqa_config;      ///< the VQA model's config (default: config)
  std::string vqa_checkpoint;  ///< a VQA checkpoint for /v1/vqa (optional)
  std::string api_key_file;    ///< when set, requests need `Authorization: Bearer <key>`
  std::string host = "127.0.0.1";
  int port = 8080;  ///< 0: any free port (printed)
  int threads = 0;
  std::string precision = "fp32";
  std::string device = "cpu";
  int64_t max_batch = 32;       ///< items in one forward pass
  int64_t max_wait_ms = 5;      ///< how long the first request of a batch waits for company
  int64_t max_queue = 256;      ///< requests queued or running; beyond it 503
  int64_t max_body_bytes = 32 << 20;
  int64_t max_pixels = 40'000'000;  ///< per image, width x height
  int64_t max_text_chars = 2000;    ///< bytes of one caption, query or question
  int64_t max_items = 64;           ///< texts, images or pairs in one request
  int http_threads = 64;            ///< connections served at once
  int64_t gradcam_block = -1;       ///< fusion layer Grad-CAM reads (-1: fusion_layer + 2, Grounding.py's 8)
};

class Service {
 public:
  /// Loads the models and the gallery; errors name the file.
  explicit Service(const ServeOptions& options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;
  /// Binds and serves until stop(); `on_listening` gets the port once bound.
  /// Returns after every request in flight has been answered.
  void run(const std::function<void(int port)>& on_listening);
  /// Stops accepting; run() returns once the requests in flight are answered.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace albef::server
