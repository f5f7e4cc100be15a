#include "bench/serve_bench.h"

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/core/web.h"
#include "albef/io/checkpoint.h"
#include "albef/model/albef.h"
#include "albef/serve/image_index.h"
#include "albef/tasks/retrieval.h"

#include <ATen/ATen.h>
#include <httplib.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

extern char** environ;

namespace albef::bench {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// The bundled images, absolute (the gallery's paths and the uploads).
std::vector<std::string> bundled_images() {
  std::vector<std::string> paths;
  for (const auto& entry : fs::directory_iterator("data/coco-by/images"))
    if (entry.path().extension() == ".jpg") paths.push_back(fs::absolute(entry.path()).string());
  std::sort(paths.begin(), paths.end());
  if (paths.empty()) fail("bench --suite serve: no images in data/coco-by/images (run it from the repository root)");
  return paths;
}

// Resident and peak resident memory of process `pid`, in MB.
std::pair<double, double> memory_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  double rss = 0, peak = 0;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stod(line.substr(6)) / 1024;
    if (line.rfind("VmHWM:", 0) == 0) peak = std::stod(line.substr(6)) / 1024;
  }
  return {rss, peak};
}

class Server {
 public:
  Server(const std::string& exe, const std::vector<std::string>& flags, const std::string& log) : log_(log) {
    std::vector<std::string> args = {exe, "serve", "--port", "0"};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) fail("bench: cannot start ", exe);
    posix_spawn_file_actions_destroy(&actions);
    const std::regex listening(R"(listening on http://[^:]+:(\d+)/)");
    const auto deadline = Clock::now() + std::chrono::minutes(5);
    while (port_ == 0) {
      const std::string text = read_file(log_);
      std::smatch match;
      if (std::regex_search(text, match, listening)) port_ = std::stoi(match[1]);
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) fail("bench: albef serve stopped at start:\n", text);
      if (Clock::now() > deadline) fail("bench: albef serve did not start within 5 minutes");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~Server() {
    if (pid_ > 0) stop();
  }
  int stop() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    return status;
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

 private:
  std::string log_;
  pid_t pid_ = 0;
  int port_ = 0;
};

// What one client sends: a body per endpoint, varied by a counter so the
// server cannot answer from a cache of its own.
struct Requests {
  std::vector<std::string> images_base64;
  std::string path(const std::string& endpoint) const {
    if (endpoint == "embed_text") return "/v1/embed/text";
    if (endpoint == "embed_image") return "/v1/embed/image";
    return "/v1/" + endpoint;
  }
  std::string body(const std::string& endpoint, int64_t n) const {
    const std::string caption = "a photo of " + std::to_string(n % 997) + " people riding bicycles in the park";
    const std::string& image = images_base64[static_cast<size_t>(n) % images_base64.size()];
    if (endpoint == "embed_text") return json{{"texts", {caption}}}.dump();
    if (endpoint == "embed_image") return json{{"images", {image}}}.dump();
    if (endpoint == "search") return json{{"query", caption}, {"k", 10}}.dump();
    return json{{"pairs", {{{"image", image}, {"text", caption}}}}}.dump();
  }
};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * static_cast<double>(values.size())))];
}

json measure(int port, const Requests& requests, const std::string& endpoint, int clients, double seconds) {
  std::vector<std::vector<double>> latencies(static_cast<size_t>(clients));
  std::atomic<int64_t> errors{0}, counter{0};
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(120, 0);
      client.set_keep_alive(true);  // as browsers and HTTP sessions do (httplib's client closes by default)
      client.set_tcp_nodelay(true);
      while (Clock::now() < end) {
        const std::string body = requests.body(endpoint, counter++);
        const auto start = Clock::now();
        const httplib::Result result = client.Post(requests.path(endpoint).c_str(), body, "application/json");
        latencies[static_cast<size_t>(c)].push_back(std::chrono::duration<double>(Clock::now() - start).count());
        if (!result || result->status != 200) ++errors;
      }
    });
  const auto start = Clock::now();
  for (auto& thread : threads) thread.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (const auto& each : latencies) all.insert(all.end(), each.begin(), each.end());
  return {{"endpoint", endpoint},
          {"clients", clients},
          {"requests", all.size()},
          {"rps", static_cast<double>(all.size()) / elapsed},
          {"p50_ms", 1000 * percentile(all, 0.50)},
          {"p95_ms", 1000 * percentile(all, 0.95)},
          {"p99_ms", 1000 * percentile(all, 0.99)},
          {"errors", errors.load()}};
}

// Good requests of every kind and bad ones (malformed JSON, a non-image, an
// oversized caption, an unknown endpoint) from 8 clients; the server's
// memory sampled every 10 s.
json soak(const Server& server, const Requests& requests, double seconds) {
  std::atomic<int64_t> good{0}, good_failed{0}, bad{0}, bad_wrong{0}, counter{0};
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  const std::vector<std::string> endpoints = {"embed_text", "search", "score", "embed_image"};
  std::vector<std::thread> threads;
  for (int c = 0; c < 8; ++c)
    threads.emplace_back([&] {
      httplib::Client client("127.0.0.1", server.port());
      client.set_read_timeout(120, 0);
      client.set_keep_alive(true);
      while (Clock::now() < end) {
        const int64_t n = counter++;
        if (n % 10 < 7) {
          const std::string& endpoint = endpoints[static_cast<size_t>(n) % endpoints.size()];
          const httplib::Result r = client.Post(requests.path(endpoint).c_str(), requests.body(endpoint, n), "application/json");
          ++good;
          if (!r || r->status != 200) ++good_failed;
          continue;
        }
        const int kind = static_cast<int>(n % 4);
        const int expected[] = {400, 422, 413, 404};
        const httplib::Result r =
            kind == 0   ? client.Post("/v1/embed/text", "{\"texts\": [", "application/json")
            : kind == 1 ? client.Post("/v1/embed/image", R"({"images": ["aGVsbG8="]})", "application/json")
            : kind == 2 ? client.Post("/v1/embed/text", json{{"texts", {std::string(100000, 'a')}}}.dump(), "application/json")
                        : client.Post("/v1/nowhere", "{}", "application/json");
        ++bad;
        if (!r || r->status != expected[kind]) ++bad_wrong;
      }
    });
  json samples = json::array();
  const auto start = Clock::now();
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    samples.push_back({{"s", std::chrono::duration<double>(Clock::now() - start).count()},
                       {"rss_mb", memory_of(server.pid()).first}});
  }
  for (auto& thread : threads) thread.join();
  // Growth: the last sample against the first after a minute of warm-up (allocator pools fill first).
  double first = 0, last = 0;
  for (const json& sample : samples) {
    if (first == 0 && sample["s"].get<double>() >= std::min(60.0, seconds / 2)) first = sample["rss_mb"];
    last = sample["rss_mb"];
  }
  return {{"seconds", seconds},          {"good_requests", good.load()},
          {"good_failed", good_failed.load()}, {"bad_requests", bad.load()},
          {"bad_wrong_status", bad_wrong.load()}, {"rss_samples", samples},
          {"rss_growth_percent", first > 0 ? 100 * (last - first) / first : 0.0}};
}

}  // namespace

json run_serve_bench(const ServeBenchOptions& options, const std::string& self_exe) {
  const bool temporary = options.workdir.empty();
  const std::string dir = temporary ? (fs::temp_directory_path() / ("albef_serve_bench_" + std::to_string(::getpid()))).string()
                                    : options.workdir;
  fs::create_directories(dir);
  const Config config = load_config(options.config);
  std::string weights = options.checkpoint;
  if (weights.empty()) {
    weights = dir + "/retrieval_random.pth";
    at::manual_seed(0);
    AlbefModel model(config, retrieval_model_options(false));
    model->init_weights();
    io::write_torch_file(weights, io::state_dict_to_object(state_dict(*model)));
  }
  const std::vector<std::string> images = bundled_images();
  {
    // A gallery of random normalised features, its paths the bundled images in turn.
    at::manual_seed(1);
    const at::Tensor random = at::randn({options.gallery, config.embed_dim});
    const at::Tensor features = random / random.norm(2, 1, /*keepdim=*/true);
    std::vector<std::string> paths;
    for (int64_t i = 0; i < options.gallery; ++i) paths.push_back(images[static_cast<size_t>(i) % images.size()]);
    serve::ImageIndex index(config.embed_dim, serve::IndexKind::Flat, options.gallery);
    index.add(features, paths);
    index.save(dir + "/gallery.index");
  }
  Requests requests;
  for (const std::string& path : images) {
    const std::string bytes = read_file(path);
    requests.images_base64.push_back(base64(std::vector<unsigned char>(bytes.begin(), bytes.end())));
  }
  const std::vector<std::string> flags = {"--config", options.config, "--checkpoint", weights, "--index",
                                          dir + "/gallery.index", "--precision", options.precision};
  json report = {{"config", options.config}, {"gallery", options.gallery}, {"precision", options.precision},
                 {"seconds_per_cell", options.seconds}};
  json cells = json::array();
  {
    Server server(self_exe, flags, dir + "/serve.log");
    report["server_rss_mb_after_load"] = memory_of(server.pid()).first;
    for (const std::string& endpoint : options.endpoints) {
      measure(server.port(), requests, endpoint, 1, 1.0);  // warm-up
      for (int clients : options.clients) {
        json cell = measure(server.port(), requests, endpoint, clients, options.seconds);
        std::printf("  %-12s %3d clients: %8.1f req/s  p50 %8.1f ms  p99 %8.1f ms  errors %lld\n", endpoint.c_str(),
                    clients, cell["rps"].get<double>(), cell["p50_ms"].get<double>(), cell["p99_ms"].get<double>(),
                    static_cast<long long>(cell["errors"].get<int64_t>()));
        std::fflush(stdout);
        cells.push_back(std::move(cell));
      }
    }
    report["cells"] = cells;
    if (options.soak_seconds > 0) report["soak"] = soak(server, requests, options.soak_seconds);
    const auto [rss, peak] = memory_of(server.pid());
    report["server_rss_mb"] = rss;
    report["server_peak_rss_mb"] = peak;
    const int status = server.stop();
    report["server_exit_code"] = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  {
    // The gain of batching: text embedding at the most clients, one caption per forward pass.
    std::vector<std::string> unbatched = flags;
    unbatched.insert(unbatched.end(), {"--max_batch", "1"});
    Server server(self_exe, unbatched, dir + "/serve_unbatched.log");
    const int clients = options.clients.back();
    measure(server.port(), requests, "embed_text", 1, 1.0);
    const json alone = measure(server.port(), requests, "embed_text", clients, options.seconds);
    double batched = 0;
    for (const json& cell : cells)
      if (cell["endpoint"] == "embed_text" && cell["clients"] == clients) batched = cell["rps"];
    report["batching"] = {{"clients", clients},
                          {"batched_rps", batched},
                          {"max_batch_1_rps", alone["rps"]},
                          {"gain", alone["rps"].get<double>() > 0 ? batched / alone["rps"].get<double>() : 0.0}};
  }
  if (temporary) fs::remove_all(dir);
  return report;
}

void print_serve_table(const json& report) {
  std::printf("albef serve, %s, %s, gallery %lld (flat), %.0f s per cell\n", report["config"].get<std::string>().c_str(),
              report["precision"].get<std::string>().c_str(), static_cast<long long>(report["gallery"].get<int64_t>()),
              report["seconds_per_cell"].get<double>());
  std::printf("%-12s %7s %9s %9s %9s %9s %7s\n", "endpoint", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors");
  for (const json& cell : report["cells"])
    std::printf("%-12s %7d %9.1f %9.1f %9.1f %9.1f %7lld\n", cell["endpoint"].get<std::string>().c_str(),
                cell["clients"].get<int>(), cell["rps"].get<double>(), cell["p50_ms"].get<double>(),
                cell["p95_ms"].get<double>(), cell["p99_ms"].get<double>(),
                static_cast<long long>(cell["errors"].get<int64_t>()));
  const json& batching = report["batching"];
  std::printf("batching (embed_text, %d clients): %.1f req/s batched vs %.1f with --max_batch 1 (%.2fx)\n",
              batching["clients"].get<int>(), batching["batched_rps"].get<double>(),
              batching["max_batch_1_rps"].get<double>(), batching["gain"].get<double>());
  std::printf("server RSS: %.0f MB after load, %.0f MB at the end, peak %.0f MB; exit code %d\n",
              report["server_rss_mb_after_load"].get<double>(), report["server_rss_mb"].get<double>(),
              report["server_peak_rss_mb"].get<double>(), report["server_exit_code"].get<int>());
  if (report.contains("soak")) {
    const json& soak = report["soak"];
    std::printf("soak %.0f s: %lld good requests (%lld failed), %lld bad (%lld with a wrong status), RSS growth %.1f%%\n",
                soak["seconds"].get<double>(), static_cast<long long>(soak["good_requests"].get<int64_t>()),
                static_cast<long long>(soak["good_failed"].get<int64_t>()),
                static_cast<long long>(soak["bad_requests"].get<int64_t>()),
                static_cast<long long>(soak["bad_wrong_status"].get<int64_t>()),
                soak["rss_growth_percent"].get<double>());
  }
}

}  // namespace albef::bench
