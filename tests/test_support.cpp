#include "test_util.h"

#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace albef::testing {

namespace {

std::filesystem::path process_temp_root() {
  return std::filesystem::temp_directory_path() / ("albef_test_" + std::to_string(::getpid()));
}

/// ctest runs every test in a process of its own: each removes its folder on
/// exit, so a suite run leaves nothing behind in /tmp.
void remove_process_temp_root() {
  std::error_code ignored;
  std::filesystem::remove_all(process_temp_root(), ignored);
}

}  // namespace

std::string make_temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  static const bool cleanup_registered = std::atexit(remove_process_temp_root) == 0;
  (void)cleanup_registered;
  const fs::path dir = process_temp_root() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

int run_command(const std::string& command, std::string* output) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buffer{};
  std::string text;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) text.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  if (output) *output = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string write_tiny_pretrain_config(const std::string& dir, const std::string& train_file) {
  std::ifstream in(data_path("tiny/Pretrain.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto replace = [&](const std::string& from, const std::string& to) { text.replace(text.find(from), from.size(), to); };
  replace("'../../../data/coco-by/captions.json'", "'" + train_file + "'");
  replace("'tiny/config_bert.json'", "'" + data_path("tiny/config_bert.json") + "'");
  const std::string path = dir + "/tiny.yaml";
  std::ofstream(path) << text;
  return path;
}

std::string write_tiny_retrieval_config(const std::string& dir) {
  std::ostringstream text;
  text << "train_file: ['" << source_path("data/coco-by/captions.json") << "']\n"
       << "val_file: '" << source_path("data/coco-by/captions.json") << "'\n"
       << "test_file: '" << source_path("data/coco-by/captions.json") << "'\n"
       << "image_root: '" << source_path("data/coco-by") << "'\n"
       << "bert_config: '" << data_path("tiny/config_bert.json") << "'\n"
       << "image_res: 32\nbatch_size_train: 16\nbatch_size_test: 16\nqueue_size: 16\nmomentum: 0.995\n"
       << "vision_width: 64\nembed_dim: 32\ntemp: 0.07\nk_test: 4\nalpha: 0.4\ndistill: True\nwarm_up: True\n"
       << "optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}\n"
       << "schedular: {sched: cosine, lr: 1e-4, epochs: 3, min_lr: 1e-6, decay_rate: 1, warmup_lr: 1e-5, "
          "warmup_epochs: 1, cooldown_epochs: 0}\n"
       << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  const std::string path = dir + "/Retrieval_tiny.yaml";
  std::ofstream(path) << text.str();
  return path;
}

pid_t spawn_quietly(const std::vector<std::string>& args) {
  std::vector<std::string> copies = args;
  std::vector<char*> argv;
  for (auto& arg : copies) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return spawned == 0 ? pid : -1;
}

bool run_until_file_then_kill(const std::vector<std::string>& args, const std::string& marker, int timeout_seconds) {
  const pid_t pid = spawn_quietly(args);
  if (pid < 0) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  while (!std::filesystem::exists(marker) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return std::filesystem::exists(marker);
}

void expect_same_training(const std::string& straight_dir, const std::string& resumed_dir,
                          const std::vector<std::string>& keys, size_t steps) {
  const auto straight = read_json_lines(straight_dir + "/train_steps.jsonl");
  const auto resumed = read_json_lines(resumed_dir + "/train_steps.jsonl");
  if (steps > 0) ASSERT_EQ(straight.size(), steps);
  ASSERT_EQ(resumed.size(), straight.size()) << "steps lost or repeated";
  for (size_t i = 0; i < straight.size(); ++i) {
    for (const char* position : {"epoch", "step"})
      if (straight[i].contains(position)) EXPECT_EQ(resumed[i][position], straight[i][position]) << "line " << i;
    for (const std::string& key : keys)
      EXPECT_NEAR(resumed[i][key].get<double>(), straight[i][key].get<double>(), 1e-6) << key << " at line " << i;
  }
  EXPECT_EQ(read_json_lines(straight_dir + "/log.txt"), read_json_lines(resumed_dir + "/log.txt"));
}

std::vector<nlohmann::json> read_json_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_object()) lines.push_back(std::move(record));
  }
  return lines;
}

}  // namespace albef::testing
