// `albef serve` as clients see it: the real server on a free loopback port,
// called over HTTP. Every endpoint answers what the CLI answers; bad
// requests get the right 4xx with a JSON error and the next good request
// still succeeds; concurrent requests are batched; a full queue answers 503;
// SIGTERM lets the requests in flight finish; the page works in chromium.

#include "albef/core/fs.h"
#include "albef/core/web.h"
#include "albef/io/npy.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <regex>
#include <thread>

extern char** environ;

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kKey = "test-key-5f2a";
const char* kImages[] = {"000000000790.jpg", "000000078499.jpg", "000000084284.jpg"};

std::string image_path(int i) { return source_path(std::string("data/coco-by/images/") + kImages[i]); }

std::string image_base64(int i) {
  const std::string bytes = albef::read_file(image_path(i));
  return albef::base64(std::vector<unsigned char>(bytes.begin(), bytes.end()));
}

// One `albef serve` process, stopped with SIGTERM.
class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& flags) {
    log_ = make_temp_dir("serve_process") + "/serve.log";
    std::vector<std::string> args = {ALBEF_CLI, "serve", "--port", "0", "--threads", "2"};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    const std::regex listening(R"(listening on http://127\.0\.0\.1:(\d+)/)");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (port_ == 0 && std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(log_);
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::smatch match;
      if (std::regex_search(text, match, listening)) port_ = std::stoi(match[1]);
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        ADD_FAILURE() << "albef serve exited at start:\n" << text;
        pid_ = 0;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GT(port_, 0) << "albef serve did not say where it listens";
  }
  ~ServerProcess() {
    if (pid_ > 0) stop();
  }
  /// SIGTERM, then the exit status (as waitpid gives it).
  int stop() {
    ::kill(pid_, SIGTERM);
    waitpid(pid_, &status_, 0);
    pid_ = 0;
    return status_;
  }
  int port() const { return port_; }
  std::string log() const { return albef::read_file(log_); }
  httplib::Client client(bool with_key = true) const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(60, 0);
    client.set_write_timeout(60, 0);
    if (with_key) client.set_default_headers({{"Authorization", "Bearer " + kKey}});
    return client;
  }

 private:
  pid_t pid_ = 0;
  int port_ = 0;
  int status_ = 0;
  std::string log_;
};

json body_of(const httplib::Result& result) {
  EXPECT_TRUE(result) << "no response";
  if (!result) return json();
  return json::parse(result->body, nullptr, /*allow_exceptions=*/false);
}

// The JSON error of a refused request: the status, an "error" message naming `needle`.
void expect_error(const httplib::Result& result, int status, const std::string& needle) {
  ASSERT_TRUE(result) << "no response";
  EXPECT_EQ(result->status, status) << result->body;
  const json body = json::parse(result->body, nullptr, false);
  ASSERT_TRUE(body.is_object() && body.contains("error")) << result->body;
  EXPECT_NE(body["error"].get<std::string>().find(needle), std::string::npos) << body["error"];
}

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(make_temp_dir("serve"));
    std::string output;
    // Absolute paths: thumbnails and re-ranking read the gallery's images again.
    ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " index --config " + tiny_config() + " --checkpoint " +
                              tiny_checkpoint() + " --images " + source_path("data/coco-by/images") + " --out " +
                              *dir_ + "/gallery.index --threads 1",
                          &output),
              0)
        << output;
    std::ifstream in(data_path("tiny/VQA.yaml"));
    std::string vqa((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    vqa.replace(vqa.find("'tiny/config_bert.json'"), 23, "'" + data_path("tiny/config_bert.json") + "'");
    std::ofstream(*dir_ + "/vqa.yaml") << vqa << "answer_list: '" << source_path("data/coco-by/vqa/answer_list.json")
                                       << "'\n";
    std::ofstream(*dir_ + "/key") << kKey << "\n";
    server_ = new ServerProcess(flags());
  }
  static void TearDownTestSuite() {
    if (server_) EXPECT_EQ(server_->stop(), 0) << server_->log();
    delete server_;
    server_ = nullptr;
  }
  static std::string tiny_config() { return data_path("tiny/Pretrain.yaml"); }
  static std::string tiny_checkpoint() { return data_path("tiny/albef_pretrain_tiny.pth"); }
  static std::vector<std::string> flags() {
    return {"--config",         tiny_config(),         "--checkpoint",   tiny_checkpoint(), "--index",
            *dir_ + "/gallery.index", "--vqa_config", *dir_ + "/vqa.yaml", "--vqa_checkpoint", tiny_checkpoint(),
            "--api_key_file",   *dir_ + "/key"};
  }
  static httplib::Result post(const std::string& path, const json& body) {
    return server_->client().Post(path.c_str(), body.dump(), "application/json");
  }
  static void expect_still_serving() {
    const httplib::Result result = post("/v1/embed/text", {{"texts", {"still here"}}});
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 200) << result->body;
  }
  static std::string* dir_;
  static ServerProcess* server_;
};

std::string* Serve::dir_ = nullptr;
ServerProcess* Serve::server_ = nullptr;

at::Tensor tensor_of(const json& rows) {
  std::vector<float> values;
  for (const json& row : rows)
    for (const json& v : row) values.push_back(v.get<float>());
  return at::tensor(values).view({static_cast<int64_t>(rows.size()), -1});
}

}  // namespace

TEST_F(Serve, HealthAndThePageNeedNoKey) {
  const httplib::Result health = server_->client(false).Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const json body = body_of(health);
  EXPECT_EQ(body["status"], "ok");
  EXPECT_EQ(body["gallery"], 26);
  EXPECT_EQ(body["model"]["checkpoint"], tiny_checkpoint());
  const httplib::Result page = server_->client(false).Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("id=\"search-button\""), std::string::npos);
}

TEST_F(Serve, EveryOtherRequestNeedsTheKey) {
  httplib::Client anonymous = server_->client(false);
  expect_error(anonymous.Post("/v1/embed/text", R"({"texts": ["a"]})", "application/json"), 401, "Bearer");
  expect_error(anonymous.Get("/metrics"), 401, "Bearer");
  anonymous.set_default_headers({{"Authorization", "Bearer wrong-key-5f2b"}});
  expect_error(anonymous.Post("/v1/embed/text", R"({"texts": ["a"]})", "application/json"), 401, "Bearer");
  anonymous.set_default_headers({{"Authorization", "Bearer " + kKey + "x"}});
  expect_error(anonymous.Get("/metrics"), 401, "Bearer");
  const httplib::Result metrics = server_->client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("albef_requests_total{endpoint=\"/v1/embed/text\",status=\"401\"}"), std::string::npos);
  for (const char* series : {"albef_request_seconds_bucket", "albef_queue_depth", "albef_model_load_seconds",
                             "albef_resident_memory_bytes"})
    EXPECT_NE(metrics->body.find(series), std::string::npos) << series;
}

TEST_F(Serve, EmbeddingsEqualAlbefEmbed) {
  const std::string out = *dir_ + "/cli_embed";
  const std::vector<std::string> texts = {"A family at a table with a cake.", "horses on a hill", "a laptop on a desk"};
  std::ofstream(*dir_ + "/texts.txt") << texts[0] << "\n" << texts[1] << "\n" << texts[2] << "\n";
  std::string command = std::string(ALBEF_CLI) + " embed --threads 2 --config " + tiny_config() + " --checkpoint " +
                        tiny_checkpoint() + " --texts " + *dir_ + "/texts.txt --out " + out;
  for (int i = 0; i < 3; ++i) command += " --image " + image_path(i);
  std::string output;
  ASSERT_EQ(run_command(command, &output), 0) << output;

  const json text = body_of(post("/v1/embed/text", {{"texts", texts}}));
  ASSERT_TRUE(text.contains("embeddings")) << text.dump();
  EXPECT_TENSOR_NEAR(tensor_of(text["embeddings"]), albef::io::read_npy(out + "/text_feat.npy"), 1e-6);
  EXPECT_EQ(text["model"]["precision"], "fp32");
  json images = json::array();
  for (int i = 0; i < 3; ++i) images.push_back(image_base64(i));
  const json image = body_of(post("/v1/embed/image", {{"images", images}}));
  ASSERT_TRUE(image.contains("embeddings")) << image.dump();
  EXPECT_TENSOR_NEAR(tensor_of(image["embeddings"]), albef::io::read_npy(out + "/image_feat.npy"), 1e-6);
}

TEST_F(Serve, ScoresEqualAlbefScoreAsJsonOrMultipart) {
  std::string command = std::string(ALBEF_CLI) + " score --json --threads 2 --config " + tiny_config() +
                        " --checkpoint " + tiny_checkpoint();
  json pairs = json::array();
  const std::vector<std::string> texts = {"a cake on a table", "two horses", "a computer"};
  for (int i = 0; i < 3; ++i) {
    command += " --image " + image_path(i) + " --text '" + texts[i] + "'";
    pairs.push_back({{"image", image_base64(i)}, {"text", texts[i]}});
  }
  std::string output;
  ASSERT_EQ(run_command(command, &output), 0) << output;
  const json expected = json::parse(output);
  const json scored = body_of(post("/v1/score", {{"pairs", pairs}}));
  ASSERT_EQ(scored["scores"].size(), 3u) << scored.dump();
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(scored["scores"][i]["itc"].get<double>(), expected[i]["itc"].get<double>(), 1e-6);
    EXPECT_NEAR(scored["scores"][i]["itm"].get<double>(), expected[i]["itm"].get<double>(), 1e-6);
  }
  // The same pair as a multipart upload.
  const std::string bytes = albef::read_file(image_path(0));
  const httplib::MultipartFormDataItems form = {{"image", bytes, "photo.jpg", "image/jpeg"},
                                                {"text", texts[0], "", ""}};
  const json multipart = body_of(server_->client().Post("/v1/score", form));
  ASSERT_EQ(multipart["scores"].size(), 1u) << multipart.dump();
  EXPECT_NEAR(multipart["scores"][0]["itm"].get<double>(), expected[0]["itm"].get<double>(), 1e-6);
}

TEST_F(Serve, SearchRanksTheGalleryWithThumbnails) {
  const json found = body_of(post("/v1/search", {{"query", "a family sitting at a table"}, {"k", 5}}));
  ASSERT_EQ(found["results"].size(), 5u) << found.dump();
  double previous = 1e9;
  for (size_t i = 0; i < 5; ++i) {
    const json& hit = found["results"][i];
    EXPECT_EQ(hit["rank"], i + 1);
    EXPECT_LE(hit["itc"].get<double>(), previous);
    previous = hit["itc"].get<double>();
    EXPECT_TRUE(fs::exists(hit["path"].get<std::string>()));
  }
  const httplib::Result thumbnail = server_->client().Get(found["results"][0]["thumbnail"].get<std::string>().c_str());
  ASSERT_TRUE(thumbnail);
  EXPECT_EQ(thumbnail->status, 200);
  EXPECT_EQ(thumbnail->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_EQ(thumbnail->body.substr(0, 2), "\xFF\xD8");
  expect_error(server_->client().Get("/v1/thumbnail/9999"), 404, "9999");
  const json reranked = body_of(post("/v1/search", {{"query", "a family sitting at a table"}, {"k", 3}, {"rerank", 8}}));
  ASSERT_EQ(reranked["results"].size(), 3u) << reranked.dump();
  EXPECT_TRUE(reranked["results"][0].contains("itm"));
}

TEST_F(Serve, VqaAnswersWithProbabilities) {
  const json answered =
      body_of(post("/v1/vqa", {{"image", image_base64(0)}, {"question", "what is on the table?"}, {"top", 3}}));
  ASSERT_EQ(answered["answers"].size(), 3u) << answered.dump();
  double total = 0, previous = 1;
  for (const json& answer : answered["answers"]) {
    EXPECT_FALSE(answer["answer"].get<std::string>().empty());
    EXPECT_LE(answer["probability"].get<double>(), previous);
    previous = answer["probability"].get<double>();
    total += previous;
  }
  EXPECT_LE(total, 1.0 + 1e-6);
  EXPECT_EQ(answered["model"]["config"], *dir_ + "/vqa.yaml");
}

TEST_F(Serve, GradcamIsAPngOrJsonWithTheMap) {
  const json pair = {{"image", image_base64(0)}, {"text", "a cake on a table"}};
  const httplib::Result png = post("/v1/gradcam", pair);
  ASSERT_TRUE(png);
  EXPECT_EQ(png->status, 200) << png->body;
  EXPECT_EQ(png->get_header_value("Content-Type"), "image/png");
  EXPECT_EQ(png->body.substr(1, 3), "PNG");
  EXPECT_NE(png->get_header_value("X-Albef-Model").find("checkpoint"), std::string::npos);
  httplib::Client client = server_->client();
  client.set_default_headers({{"Authorization", "Bearer " + kKey}, {"Accept", "application/json"}});
  const json answered = body_of(client.Post("/v1/gradcam", pair.dump(), "application/json"));
  ASSERT_EQ(answered["map"].size(), 2u) << answered.dump().substr(0, 300);  // 32 px / 16 px patches
  EXPECT_EQ(answered["map"][0].size(), 2u);
  EXPECT_TRUE(albef::base64_decode(answered["png"].get<std::string>()).has_value());
}

TEST_F(Serve, BadRequestsGetAJsonErrorAndTheServerGoesOn) {
  httplib::Client client = server_->client();
  expect_error(client.Post("/v1/embed/text", "{\"texts\": [", "application/json"), 400, "not valid JSON");
  expect_still_serving();
  // A number JSON cannot hold (found by fuzz_config in config_bert.json's reader, which shares the parser).
  expect_error(client.Post("/v1/embed/text", "{\"texts\": [\"a\"], \"x\": 1e3072}", "application/json"), 400,
               "not valid JSON");
  expect_error(post("/v1/embed/text", {{"texts", "not a list"}}), 422, "'texts'");
  expect_error(post("/v1/embed/image", {{"images", {albef::base64({'h', 'e', 'l', 'l', 'o'})}}}), 422, "images[0]");
  expect_error(post("/v1/embed/image", {{"images", {"%%% not base64 %%%"}}}), 422, "not base64");
  expect_still_serving();
  expect_error(client.Post("/v1/embed/text", std::string(40 << 20, ' '), "application/json"), 413, "--max_body_bytes");
  expect_still_serving();
  expect_error(post("/v1/embed/text", {{"texts", {std::string(10 << 20, 'a')}}}), 413, "--max_text_chars");
  expect_error(post("/v1/embed/text", {{"texts", std::vector<std::string>(65, "a")}}), 413, "--max_items");
  expect_error(post("/v1/search", {{"query", "a"}, {"k", 0}}), 422, "'k'");
  expect_error(post("/v1/nowhere", json::object()), 404, "no such endpoint");
  expect_still_serving();
}

TEST_F(Serve, TheWebPageWorksInChromium) {
  const std::string browser_dir = source_path("tests/browser");
  // scripts/install-deps.sh installs both; without npm's registry there is no puppeteer-core.
  if (!fs::exists(browser_dir + "/node_modules/puppeteer-core") || !fs::exists("/usr/bin/chromium"))
    GTEST_SKIP() << "chromium or puppeteer-core is not installed (scripts/install-deps.sh installs them)";
  // The page asks for the key once and keeps it; this server has one, so start one without.
  std::vector<std::string> flags = Serve::flags();
  flags.resize(flags.size() - 2);
  ServerProcess open(flags);
  const std::string screenshot = make_temp_dir("serve_page") + "/serve_page.png";
  std::string output;
  const int code = run_command("node " + browser_dir + "/serve_page.mjs http://127.0.0.1:" +
                                   std::to_string(open.port()) + "/ " + image_path(0) + " " + screenshot + " 2>&1",
                               &output);
  EXPECT_EQ(code, 0) << output;
  EXPECT_TRUE(fs::exists(screenshot)) << output;
  std::cout << "page screenshot: " << screenshot << "\n" << output;
}

TEST(ServeLoad, ConcurrentRequestsShareForwardPasses) {
  ServerProcess server({"--config", data_path("tiny/Pretrain.yaml"), "--checkpoint",
                        data_path("tiny/albef_pretrain_tiny.pth"), "--max_wait_ms", "200"});
  const json alone =
      body_of(server.client().Post("/v1/embed/text", R"({"texts": ["caption 7"]})", "application/json"));
  std::vector<std::future<json>> answers;
  for (int i = 0; i < 16; ++i)
    answers.push_back(std::async(std::launch::async, [&server, i] {
      const std::string body = json{{"texts", {"caption " + std::to_string(i)}}}.dump();
      return body_of(server.client().Post("/v1/embed/text", body, "application/json"));
    }));
  for (int i = 0; i < 16; ++i) {
    const json answer = answers[static_cast<size_t>(i)].get();
    ASSERT_TRUE(answer.contains("embeddings")) << answer.dump();
    if (i == 7) EXPECT_TENSOR_NEAR(tensor_of(answer["embeddings"]), tensor_of(alone["embeddings"]), 1e-6);
  }
  const std::string metrics = server.client().Get("/metrics")->body;
  std::smatch sum, count;
  ASSERT_TRUE(std::regex_search(metrics, sum, std::regex(R"(albef_batch_items_sum\{kind="embed_text"\} (\d+))")));
  ASSERT_TRUE(std::regex_search(metrics, count, std::regex(R"(albef_batch_items_count\{kind="embed_text"\} (\d+))")));
  EXPECT_EQ(std::stoi(sum[1]), 17);
  EXPECT_LT(std::stoi(count[1]), 17) << "no two requests shared a forward pass:\n" << metrics;
  EXPECT_EQ(server.stop(), 0);
}

TEST(ServeLoad, AFullQueueAnswers503AtOnce) {
  ServerProcess server({"--config", data_path("tiny/Pretrain.yaml"), "--checkpoint",
                        data_path("tiny/albef_pretrain_tiny.pth"), "--max_queue", "2", "--max_wait_ms", "300"});
  std::vector<std::future<httplib::Result>> answers;
  for (int i = 0; i < 10; ++i)
    answers.push_back(std::async(std::launch::async, [&server] {
      return server.client().Post("/v1/embed/text", R"({"texts": ["a dog"]})", "application/json");
    }));
  int ok = 0, refused = 0;
  for (auto& answer : answers) {
    const httplib::Result result = answer.get();
    ASSERT_TRUE(result) << httplib::to_string(result.error()) << "\n" << server.log();
    if (result->status == 200) ++ok;
    if (result->status == 503) {
      ++refused;
      EXPECT_EQ(result->get_header_value("Retry-After"), "1");
      EXPECT_NE(result->body.find("--max_queue"), std::string::npos) << result->body;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(refused, 1);
  EXPECT_EQ(ok + refused, 10);
  const httplib::Result after = server.client().Post("/v1/embed/text", R"({"texts": ["a dog"]})", "application/json");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(server.stop(), 0) << server.log();
}

TEST(ServeLoad, SigtermAnswersTheRequestsInFlightThenExits0) {
  ServerProcess server({"--config", data_path("tiny/Pretrain.yaml"), "--checkpoint",
                        data_path("tiny/albef_pretrain_tiny.pth"), "--max_wait_ms", "1500"});
  auto in_flight = std::async(std::launch::async, [&server] {
    return server.client().Post("/v1/embed/text", R"({"texts": ["in flight"]})", "application/json");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // queued, waiting for company
  const int status = server.stop();
  const httplib::Result answered = in_flight.get();
  ASSERT_TRUE(answered) << server.log();
  EXPECT_EQ(answered->status, 200) << answered->body;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server.log();
  EXPECT_NE(server.log().find("SIGTERM"), std::string::npos) << server.log();
}
