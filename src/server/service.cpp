#include "server/service.h"

#include "albef/api/inference.h"
#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/core/web.h"
#include "albef/serve/gallery.h"
#include "albef/serve/image_index.h"
#include "albef/tasks/grounding.h"
#include "albef/tasks/vqa.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/image.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "server/requests.h"
#include "tasks/grounding/heatmap.h"

#include <ATen/ATen.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

// The page at GET / (src/server/web/index.html, compiled in).
extern const char albef_serve_index_html[];
extern const std::size_t albef_serve_index_html_size;

namespace albef::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Equal keys compare in time that depends on their length only.
bool same_key(const std::string& given, const std::string& expected) {
  unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i)
    difference |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  return difference == 0;
}

std::string trimmed(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t first = 0;
  while (first < text.size() && std::isspace(static_cast<unsigned char>(text[first]))) ++first;
  return text.substr(first);
}

// cpp-httplib listens with a backlog of 5: a burst of new connections (more
// clients connecting at once than that) would have SYNs dropped and wait a
// second for the retransmission, or fail. Listening again on the bound
// socket raises the backlog (Linux); the socket is the listening one on `port`.
void raise_listen_backlog(int port) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    int fd = -1;
    try {
      fd = std::stoi(entry.path().filename().string());
    } catch (const std::exception&) {
      continue;
    }
    int listening = 0;
    socklen_t length = sizeof(listening);
    sockaddr_storage address{};
    socklen_t address_length = sizeof(address);
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0 || !listening) continue;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) != 0) continue;
    const int bound = address.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port)
                                                    : ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
    if (bound == port) ::listen(fd, SOMAXCONN);
  }
}

struct GradcamResult {
  at::Tensor map;  // [g, g]
  std::vector<unsigned char> png;
};

std::vector<json> feature_rows(const at::Tensor& features) {
  const at::Tensor rows = features.contiguous();
  std::vector<json> out;
  for (int64_t i = 0; i < rows.size(0); ++i) {
    const float* data = rows[i].data_ptr<float>();
    out.emplace_back(std::vector<float>(data, data + rows.size(1)));
  }
  return out;
}

}  // namespace

struct Service::Impl {
  ServeOptions options;
  std::string api_key;
  std::unique_ptr<AlbefInference> albef;
  std::unique_ptr<VqaAnswerer> vqa;
  std::unique_ptr<serve::ImageIndex> index;
  std::unique_ptr<RequestReader> requests;
  GradcamOptions gradcam;
  json model_info, vqa_info;
  Metrics metrics;
  Load load;
  std::mutex compute;  // one forward pass at a time, whatever its kind
  std::unique_ptr<Batcher<std::string, json>> embed_text;
  std::unique_ptr<Batcher<at::Tensor, json>> embed_image;
  std::unique_ptr<Batcher<std::pair<at::Tensor, std::string>, PairScore>> score;
  std::unique_ptr<Batcher<SearchRequest, std::vector<serve::SearchResult>>> search;
  std::unique_ptr<Batcher<VqaRequest, std::vector<VqaAnswerer::Answer>>> answer;
  std::unique_ptr<Batcher<GradcamRequest, GradcamResult>> explain;
  httplib::Server http;
  // stop() and run() meet through these: a stop (SIGTERM while the model
  // loads) that comes before httplib listens must not be lost.
  std::atomic<bool> stop_requested{false}, run_started{false}, run_ended{false};

  explicit Impl(const ServeOptions& o) : options(o), load(o.max_queue) {}

  json with_model(json out, const json& info) const {
    out["model"] = info;
    return out;
  }

  // ---- the batched work -----------------------------------------------------

  void start_batchers() {
    const auto wait = std::chrono::microseconds(options.max_wait_ms * 1000);
    const auto batch = static_cast<size_t>(options.max_batch);
    auto observe = [this](const char* kind) { return [this, kind](size_t items) { metrics.batch(kind, items); }; };
    embed_text = std::make_unique<Batcher<std::string, json>>(
        [this](const std::vector<std::string>& texts) { return feature_rows(albef->text_features(texts)); }, batch,
        wait, compute, load, observe("embed_text"));
    embed_image = std::make_unique<Batcher<at::Tensor, json>>(
        [this](const std::vector<at::Tensor>& images) { return feature_rows(albef->image_features(at::stack(images))); },
        batch, wait, compute, load, observe("embed_image"));
    score = std::make_unique<Batcher<std::pair<at::Tensor, std::string>, PairScore>>(
        [this](const std::vector<std::pair<at::Tensor, std::string>>& pairs) {
          std::vector<at::Tensor> images;
          std::vector<int64_t> rows;
          std::vector<std::string> texts;
          for (const auto& [image, text] : pairs) {
            rows.push_back(static_cast<int64_t>(images.size()));
            images.push_back(image);
            texts.push_back(text);
          }
          return albef->score_images(at::stack(images), rows, texts);
        },
        batch, wait, compute, load, observe("score"));
    search = std::make_unique<Batcher<SearchRequest, std::vector<serve::SearchResult>>>(
        [this](const std::vector<SearchRequest>& requests) { return run_search(requests); }, batch, wait, compute,
        load, observe("search"));
    // One image each: VQA ranks answers for one image, Grad-CAM differentiates one pair.
    answer = std::make_unique<Batcher<VqaRequest, std::vector<VqaAnswerer::Answer>>>(
        [this](const std::vector<VqaRequest>& requests) {
          std::vector<std::vector<VqaAnswerer::Answer>> out;
          for (const VqaRequest& r : requests) out.push_back(vqa->answer(r.image, {r.question}, r.top).front());
          return out;
        },
        1, wait, compute, load, observe("vqa"));
    explain = std::make_unique<Batcher<GradcamRequest, GradcamResult>>(
        [this](const std::vector<GradcamRequest>& requests) {
          std::vector<GradcamResult> out;
          for (const GradcamRequest& r : requests) out.push_back(run_gradcam(r));
          return out;
        },
        1, wait, compute, load, observe("gradcam"));
  }

  std::vector<std::vector<serve::SearchResult>> run_search(const std::vector<SearchRequest>& requests) {
    std::vector<std::vector<serve::SearchResult>> out(requests.size());
    std::vector<std::string> plain;  // ITC only: one text pass and one index search for all
    std::vector<size_t> plain_of;
    int64_t k = 1;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (requests[i].rerank > 0) {
        out[i] = serve::search_gallery(*albef, *index, {requests[i].query}, {requests[i].k, requests[i].rerank}).front();
        continue;
      }
      plain.push_back(requests[i].query);
      plain_of.push_back(i);
      k = std::max(k, requests[i].k);
    }
    if (plain.empty()) return out;
    const auto hits = index->search(albef->text_features(plain), k);
    for (size_t q = 0; q < plain.size(); ++q) {
      const SearchRequest& request = requests[plain_of[q]];
      for (const serve::IndexHit& hit : hits[q]) {
        if (static_cast<int64_t>(out[plain_of[q]].size()) >= request.k) break;
        serve::SearchResult result;
        result.id = hit.id;
        result.path = index->path(hit.id);
        result.itc = hit.score;
        out[plain_of[q]].push_back(result);
      }
    }
    return out;
  }

  GradcamResult run_gradcam(const GradcamRequest& request) {
    const std::string caption = text::pre_caption(request.text, 30);
    const text::BatchEncoding encoding = albef->tokenizer().encode_batch(
        {caption}, static_cast<int>(albef->config().bert.max_position_embeddings), text::Padding::Longest);
    const c10::Device device = albef->device();
    Gradcam cam;
    {
      PrecisionGuard guard(albef->options().precision, device);
      cam = compute_gradcam(albef->model(), request.image.tensor.unsqueeze(0).to(device),
                            encoding.input_ids.to(device), encoding.attention_mask.to(device), gradcam);
    }
    GradcamResult result;
    result.map = cam.token_maps[0].mean(0).to(at::kCPU, at::kFloat);  // one sentence: its own tokens, [CLS] included
    cv::Mat overlay = grounding::overlay_heatmap(request.image.rgb, result.map);
    grounding::annotate_heatmap(overlay, caption);
    result.png = grounding::encode_png(overlay);
    return result;
  }

  // ---- routes ---------------------------------------------------------------

  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  Handler route(const std::string& endpoint, bool needs_key, Handler handler) {
    return [this, endpoint, needs_key, handler](const httplib::Request& request, httplib::Response& response) {
      const auto start = Clock::now();
      try {
        if (needs_key && !api_key.empty()) {
          const std::string header = request.get_header_value("Authorization");
          const std::string prefix = "Bearer ";
          if (header.rfind(prefix, 0) != 0 || !same_key(header.substr(prefix.size()), api_key))
            throw HttpError(401, "this server needs 'Authorization: Bearer <key>' (the key of --api_key_file)");
        }
        handler(request, response);
        if (response.status == -1) response.status = 200;
      } catch (const HttpError& e) {
        response.status = e.status;
        response.set_content(json{{"error", e.what()}}.dump(), "application/json");
      } catch (const Overloaded& e) {
        response.status = 503;
        response.set_header("Retry-After", "1");
        response.set_content(json{{"error", e.what()}}.dump(), "application/json");
      } catch (const std::exception& e) {
        response.status = 500;
        response.set_content(json{{"error", e.what()}}.dump(), "application/json");
      }
      metrics.request(endpoint, response.status, std::chrono::duration<double>(Clock::now() - start).count());
    };
  }

  void add_routes() {
    http.Get("/", route("/", false, [](const httplib::Request&, httplib::Response& response) {
      response.set_content(std::string(albef_serve_index_html, albef_serve_index_html_size), "text/html; charset=utf-8");
    }));
    http.Get("/health", route("/health", false, [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(json{{"status", "ok"},
                                {"model", model_info},
                                {"vqa", vqa ? vqa_info : json()},
                                {"gallery", index ? json(index->size()) : json()},
                                {"api_key", !api_key.empty()}}
                               .dump(),
                           "application/json");
    }));
    http.Get("/metrics", route("/metrics", true, [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(metrics.render(load.count()), "text/plain; version=0.0.4");
    }));
    http.Post("/v1/embed/text", route("/v1/embed/text", true, [this](const httplib::Request& request,
                                                                      httplib::Response& response) {
      response.set_content(with_model({{"embeddings", embed_text->submit(requests->texts(request))}}, model_info).dump(),
                           "application/json");
    }));
    http.Post("/v1/embed/image", route("/v1/embed/image", true, [this](const httplib::Request& request,
                                                                        httplib::Response& response) {
      response.set_content(with_model({{"embeddings", embed_image->submit(requests->images(request))}}, model_info).dump(),
                           "application/json");
    }));
    http.Post("/v1/score", route("/v1/score", true, [this](const httplib::Request& request, httplib::Response& response) {
      json scores = json::array();
      for (const PairScore& s : score->submit(requests->pairs(request)))
        scores.push_back({{"itc", s.itc}, {"itm", s.itm_match}});
      response.set_content(with_model({{"scores", scores}}, model_info).dump(), "application/json");
    }));
    http.Post("/v1/search", route("/v1/search", true, [this](const httplib::Request& request,
                                                              httplib::Response& response) {
      if (!index) throw HttpError(404, "this server has no gallery (start it with --index)");
      const SearchRequest query = requests->search(request);
      json results = json::array();
      int64_t rank = 1;
      const std::vector<serve::SearchResult> hits = search->submit({query}).front();
      for (const serve::SearchResult& hit : hits) {
        json entry = {{"rank", rank++}, {"id", hit.id}, {"path", hit.path}, {"itc", hit.itc},
                      {"thumbnail", "/v1/thumbnail/" + std::to_string(hit.id)}};
        if (hit.itm_match) entry["itm"] = *hit.itm_match;
        results.push_back(std::move(entry));
      }
      response.set_content(with_model({{"query", query.query}, {"results", results}}, model_info).dump(),
                           "application/json");
    }));
    http.Get(R"(/v1/thumbnail/(\d+))", route("/v1/thumbnail", true, [this](const httplib::Request& request,
                                                                           httplib::Response& response) {
      if (!index) throw HttpError(404, "this server has no gallery (start it with --index)");
      int64_t id = -1;
      try {
        id = std::stoll(request.matches[1]);
      } catch (const std::exception&) {
      }
      if (id < 0 || id >= index->size()) throw HttpError(404, "no image " + std::string(request.matches[1]) + " in the gallery");
      cv::Mat rgb;
      try {
        rgb = vision::read_rgb(index->path(id));
      } catch (const Error& e) {
        throw HttpError(404, e.what());
      }
      const double scale = 256.0 / std::max(rgb.rows, rgb.cols);
      if (scale < 1) cv::resize(rgb, rgb, cv::Size(), scale, scale, cv::INTER_AREA);
      cv::Mat bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      std::vector<unsigned char> jpeg;
      cv::imencode(".jpg", bgr, jpeg, {cv::IMWRITE_JPEG_QUALITY, 85});
      response.set_content(std::string(jpeg.begin(), jpeg.end()), "image/jpeg");
    }));
    http.Post("/v1/vqa", route("/v1/vqa", true, [this](const httplib::Request& request, httplib::Response& response) {
      if (!vqa) throw HttpError(404, "this server has no VQA model (start it with --vqa_checkpoint)");
      json answers = json::array();
      const std::vector<VqaAnswerer::Answer> found = answer->submit({requests->vqa(request)}).front();
      for (const VqaAnswerer::Answer& a : found)
        answers.push_back({{"answer", a.answer}, {"probability", a.probability}});
      response.set_content(with_model({{"answers", answers}}, vqa_info).dump(), "application/json");
    }));
    http.Post("/v1/gradcam", route("/v1/gradcam", true, [this](const httplib::Request& request,
                                                                httplib::Response& response) {
      const GradcamResult result = explain->submit({requests->gradcam(request)}).front();
      if (request.get_header_value("Accept").find("application/json") != std::string::npos) {
        const at::Tensor map = result.map.contiguous();
        json rows = json::array();
        for (int64_t r = 0; r < map.size(0); ++r)
          rows.push_back(std::vector<float>(map[r].data_ptr<float>(), map[r].data_ptr<float>() + map.size(1)));
        response.set_content(with_model({{"png", base64(result.png)}, {"map", rows}, {"block_num", gradcam.block_num}},
                                        model_info)
                                 .dump(),
                             "application/json");
        return;
      }
      response.set_header("X-Albef-Model", model_info.dump());
      response.set_content(std::string(result.png.begin(), result.png.end()), "image/png");
    }));
  }
};

Service::Service(const ServeOptions& options) : impl_(new Impl(options)) {
  Impl& m = *impl_;
  if (options.api_key_file.size()) {
    m.api_key = trimmed(read_file(options.api_key_file));
    if (m.api_key.empty()) fail(options.api_key_file, ": the API key file is empty");
  }
  // OpenCV refuses to allocate images over this many pixels (formats whose
  // size the header check cannot read: a decompression bomb stays small).
  ::setenv("OPENCV_IO_MAX_IMAGE_PIXELS", std::to_string(options.max_pixels).c_str(), 1);
  const auto start = Clock::now();
  InferenceOptions inference;
  inference.config_path = options.config;
  inference.checkpoint_path = options.checkpoint;
  inference.text_encoder = options.text_encoder;
  inference.threads = options.threads;
  inference.precision = parse_precision(options.precision);
  inference.device = options.device;
  inference.batch_size = options.max_batch;
  m.albef = std::make_unique<AlbefInference>(inference);
  m.model_info = {{"config", options.config}, {"checkpoint", options.checkpoint}, {"precision", options.precision}};
  const BertConfig& bert = m.albef->config().bert;
  m.gradcam.block_num = options.gradcam_block >= 0 ? options.gradcam_block
                                                   : std::min(bert.fusion_layer + 2, bert.num_hidden_layers - 1);
  check_gradcam_block(m.albef->config(), m.gradcam, "--gradcam_block");
  m.requests = std::make_unique<RequestReader>(RequestLimits{
      options.max_pixels, options.max_text_chars, options.max_items, m.albef->config().image_res});
  if (!options.index.empty()) {
    m.index = std::make_unique<serve::ImageIndex>(serve::ImageIndex::load(options.index));
    if (m.index->dim() != m.albef->config().embed_dim)
      fail(options.index, ": the gallery holds ", m.index->dim(), "-d features but ", options.config, " embeds in ",
           m.albef->config().embed_dim);
  }
  if (!options.vqa_checkpoint.empty()) {
    const std::string vqa_config = options.vqa_config.empty() ? options.config : options.vqa_config;
    m.vqa = std::make_unique<VqaAnswerer>(vqa_config, options.vqa_checkpoint, "", options.text_encoder,
                                          options.device, inference.precision);
    m.vqa_info = {{"config", vqa_config}, {"checkpoint", options.vqa_checkpoint}, {"precision", options.precision}};
  }
  m.metrics.set_model_load_seconds(std::chrono::duration<double>(Clock::now() - start).count());
  m.start_batchers();
  m.add_routes();
  const auto threads = static_cast<size_t>(std::max(1, options.http_threads));
  m.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  m.http.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  // httplib closes a keep-alive connection after 5 requests by default; under
  // load the reconnections then overflow its listen backlog of 5 and stall
  // clients for a SYN retransmission (1 s). Keep connections for good.
  m.http.set_keep_alive_max_count(1 << 20);
  // Small JSON answers on kept-alive connections: without TCP_NODELAY,
  // Nagle's algorithm and the client's delayed ACK add ~40-100 ms to each.
  m.http.set_tcp_nodelay(true);
  m.http.set_error_handler([this](const httplib::Request& request, httplib::Response& response) {
    if (!response.body.empty()) return;  // a route's own JSON error
    std::string message = "no such endpoint: " + request.method + " " + request.path;
    if (response.status == 413 && request.get_header_value("Content-Type") == "application/x-www-form-urlencoded")
      message = "form-encoded bodies stop at 8 KB: send JSON with 'Content-Type: application/json' (curl: -H)";
    else if (response.status == 413)
      message = "the request body is over --max_body_bytes " + std::to_string(impl_->options.max_body_bytes);
    else if (response.status != 404)
      message = "HTTP " + std::to_string(response.status);
    response.set_content(json{{"error", message}}.dump(), "application/json");
    impl_->metrics.request(request.path.rfind("/v1/", 0) == 0 ? "unknown" : "other", response.status, 0);
  });
}

// The batchers drain their queues as they are destroyed (after the HTTP server).
Service::~Service() = default;

void Service::run(const std::function<void(int port)>& on_listening) {
  Impl& m = *impl_;
  struct MarkEnded {
    std::atomic<bool>& ended;
    ~MarkEnded() { ended = true; }
  } mark_ended{m.run_ended};
  m.run_started = true;
  if (m.stop_requested) return;
  const int port = m.options.port == 0 ? m.http.bind_to_any_port(m.options.host) : m.options.port;
  if (m.options.port != 0 && !m.http.bind_to_port(m.options.host, port))
    fail("serve: cannot listen on ", m.options.host, ":", port, " (in use, or not an address of this machine)");
  if (port < 0) fail("serve: cannot listen on ", m.options.host);
  raise_listen_backlog(port);
  on_listening(port);
  m.http.listen_after_bind();
}

void Service::stop() {
  Impl& m = *impl_;
  m.stop_requested = true;
  // httplib ignores a stop before it listens: wait for that (or for run() to
  // end, failing to bind) where run() has begun; one not yet begun sees the flag.
  while (m.run_started && !m.run_ended && !m.http.is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  m.http.stop();
}

}  // namespace albef::server
