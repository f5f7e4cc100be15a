// Data-parallel training over 2 local processes with c10d (TCPStore +
// ProcessGroupGloo): identical weights and queues on both ranks, queues that
// hold both ranks' momentum features in rank order, gradients equal to the
// mean of the single-process gradients on the same shards; a killed rank
// stops the other with a clear error; resume with another world size;
// distributed evaluation equal to the single-process one.

#include "albef/io/npy.h"
#include "tasks/pretrain/step.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::read_json_lines;
using albef::testing::run_command;
using albef::testing::source_path;

namespace fs = std::filesystem;

namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

at::Tensor npy(const std::string& path) { return albef::io::read_npy(path); }

// The pid of the process whose environment has RANK=<rank> and whose
// parent is `parent`, or -1.
pid_t child_with_rank(pid_t parent, int rank) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string pid, comm, state;
    pid_t ppid = 0;
    stat >> pid >> comm >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream environ(entry.path() / "environ");
    const std::string env((std::istreambuf_iterator<char>(environ)), std::istreambuf_iterator<char>());
    if (env.find(std::string(1, '\0') + "RANK=" + std::to_string(rank) + '\0') != std::string::npos ||
        env.rfind("RANK=" + std::to_string(rank) + '\0', 0) == 0)
      return static_cast<pid_t>(std::stoi(name));
  }
  return -1;
}

}  // namespace

TEST(Distributed, TwoRanksMatchTheSingleProcessSteps) {
  const std::string dir = make_temp_dir("distributed_steps");
  const std::string worker = std::string(ALBEF_DIST_STEP_WORKER) + " " + data_path("tiny/Pretrain.yaml") + " " +
                             data_path("tiny/albef_pretrain_tiny.pth") + " " + data_path("tiny/npy") + " " + dir;
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port());
  std::string output;
  ASSERT_EQ(run_command("sh -c '" + env + " RANK=0 " + worker + " & a=$!; " + env + " RANK=1 " + worker +
                            " & b=$!; wait $a && wait $b'",
                        &output),
            0)
      << output;

  // Both ranks hold the same weights and queues after three steps.
  EXPECT_EQ(albef::testing::max_abs_diff(npy(dir + "/rank0_parameters.npy"), npy(dir + "/rank1_parameters.npy")), 0.0);
  for (const char* queue : {"image_queue", "text_queue", "queue_ptr"})
    EXPECT_EQ(albef::testing::max_abs_diff(npy(dir + "/rank0_" + queue + ".npy"), npy(dir + "/rank1_" + queue + ".npy")),
              0.0)
        << queue;
  // Each step enqueues 2 x 2 features at queue_ptr: step 0 wrote slots 0..3,
  // rank 0's two features first (the queues are [embed_dim, 16]).
  const at::Tensor image_queue = npy(dir + "/rank0_image_queue.npy");
  const at::Tensor first_step = at::cat({npy(dir + "/rank0_image_feat_m.npy"), npy(dir + "/rank1_image_feat_m.npy")});
  EXPECT_TENSOR_NEAR(image_queue.slice(1, 0, 4).t(), first_step, 1e-6);
  const at::Tensor text_queue = npy(dir + "/rank0_text_queue.npy");
  EXPECT_TENSOR_NEAR(text_queue.slice(1, 0, 4).t(),
                     at::cat({npy(dir + "/rank0_text_feat_m.npy"), npy(dir + "/rank1_text_feat_m.npy")}), 1e-6);
  EXPECT_EQ(npy(dir + "/rank0_queue_ptr.npy").item<int64_t>(), 12);

  // The averaged gradient of step 0 is the mean of the gradients one
  // process computes on each shard alone, from the same start.
  const at::Tensor images = npy(data_path("tiny/npy/inputs__image.npy"));
  const at::Tensor ids = npy(data_path("tiny/npy/inputs__input_ids.npy"));
  const at::Tensor mask = npy(data_path("tiny/npy/inputs__attention_mask.npy"));
  std::map<std::string, at::Tensor> mean;
  for (int rank = 0; rank < 2; ++rank) {
    albef::AlbefModel model = albef::testing::load_tiny_model(albef::pretrain_model_options(true));
    model->train();
    at::manual_seed(static_cast<uint64_t>(rank));  // as the worker seeds step 0 of this rank
    const auto out = albef::pretrain_forward(model, images.slice(0, 2 * rank, 2 * rank + 2),
                                             ids.slice(0, 2 * rank, 2 * rank + 2),
                                             mask.slice(0, 2 * rank, 2 * rank + 2), 0.4, {});
    (out.loss_mlm + out.loss_ita + out.loss_itm).backward();
    for (const auto& item : model->named_parameters()) {
      if (!item.value().grad().defined()) continue;
      const at::Tensor half = item.value().grad() / 2;
      mean[item.key()] = mean.count(item.key()) ? mean[item.key()] + half : half;
    }
  }
  for (const char* name : {"visual_encoder.blocks.0.attn.qkv.weight",
                           "text_encoder.bert.encoder.layer.2.crossattention.self.key.weight", "itm_head.weight",
                           "temp"})
    for (int rank = 0; rank < 2; ++rank)
      albef::testing::expect_relative(npy(dir + "/rank" + std::to_string(rank) + "_grad_" + name + ".npy"),
                                      mean.at(name), 1e-5, name);
}

TEST(Distributed, KillingOneRankStopsTheOtherWithAClearError) {
  const std::string dir = make_temp_dir("distributed_kill");
  const std::string config =
      albef::testing::write_tiny_pretrain_config(dir, source_path("data/coco-by/captions.json"));
  const std::string log = dir + "/launch.log";
  const std::string command = std::string(ALBEF_CLI) + " launch --nproc 2 -- pretrain --config " + config +
                              " --output_dir " + dir + "/run --epochs 30 --workers 1 --print_freq 1 > " + log +
                              " 2>&1";
  std::atomic<pid_t> launcher{-1};  // written by the runner thread, read here
  std::thread runner([&] {
    FILE* pipe = ::popen(("sh -c 'echo $$; exec " + command + "'").c_str(), "r");
    char line[32] = {0};
    if (pipe && std::fgets(line, sizeof(line), pipe)) launcher = std::atoi(line);
    if (pipe) ::pclose(pipe);
  });
  // Wait for training to be under way (the first epoch's checkpoint), then kill rank 1.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(dir + "/run/checkpoint_00.pth") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(dir + "/run/checkpoint_00.pth"));
  ASSERT_GT(launcher.load(), 0);
  const pid_t rank1 = child_with_rank(launcher, 1);
  ASSERT_GT(rank1, 0);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(rank1, SIGKILL);
  runner.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_LT(seconds, 60.0);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("launch: rank 1 was killed"), std::string::npos) << text;
  EXPECT_NE(text.find("failed on rank 0"), std::string::npos) << text;
  EXPECT_EQ(text.find("did not stop"), std::string::npos) << text;  // rank 0 stopped by itself
}

TEST(Distributed, ResumesWithAnotherWorldSize) {
  const std::string dir = make_temp_dir("distributed_resume");
  const std::string config =
      albef::testing::write_tiny_pretrain_config(dir, source_path("data/coco-by/captions.json"));
  const std::string args = " pretrain --config " + config + " --output_dir " + dir + "/run --workers 1";
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " launch --nproc 2 --" + args + " --epochs 2", &output), 0)
      << output;
  EXPECT_NE(output.find("data-parallel over 2 processes"), std::string::npos) << output;
  EXPECT_NE(output.find("13 samples per rank, 3 steps per epoch"), std::string::npos) << output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + args + " --epochs 3 --resume --threads 1", &output), 0) << output;
  EXPECT_NE(output.find("resuming from"), std::string::npos) << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[2]["epoch"], 2);
  // 2 ranks x 3 steps in epochs 0-1 (rank 0 logs its steps), then 6 steps on one process.
  EXPECT_EQ(read_json_lines(dir + "/run/train_steps.jsonl").size(), 12u);
}

TEST(Distributed, SplitEvaluationEqualsTheSingleProcessOne) {
  const std::string dir = make_temp_dir("distributed_eval");
  const std::string config = albef::testing::write_tiny_retrieval_config(dir);
  const std::string args = " retrieval --evaluate --config " + config + " --checkpoint " +
                           data_path("tiny/albef_pretrain_tiny.pth");
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + args + " --output_dir " + dir + "/one --threads 1", &output), 0)
      << output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " launch --nproc 2 --" + args + " --output_dir " + dir + "/two",
                        &output),
            0)
      << output;
  EXPECT_TENSOR_NEAR(npy(dir + "/two/score_i2t.npy"), npy(dir + "/one/score_i2t.npy"), 1e-5);
  EXPECT_TENSOR_NEAR(npy(dir + "/two/score_t2i.npy"), npy(dir + "/one/score_t2i.npy"), 1e-5);
  const auto one = read_json_lines(dir + "/one/log.txt"), two = read_json_lines(dir + "/two/log.txt");
  ASSERT_EQ(two.size(), 1u);  // rank 0 alone writes
  for (const auto& [key, value] : one[0].items())
    EXPECT_NEAR(two[0].at(key).get<double>(), value.get<double>(), 1e-9) << key;
}
