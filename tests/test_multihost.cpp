// Data-parallel training across two hosts on a real network: two network
// namespaces joined by a veth pair, one rank in each, started with
// `albef launch --nnodes 2 --node_rank i --master_addr <host 0>`. The run
// equals the same two ranks on one host; cutting the link stops both ranks
// within --dist_timeout with an error naming the peer; --resume then
// continues exactly. Needs root (as CI runs); skipped where namespaces
// cannot be made.

#include "albef/io/checkpoint.h"
#include "test_util.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

namespace {

namespace fs = std::filesystem;
using namespace albef::testing;

constexpr int kDistTimeoutSeconds = 8;

class TwoHosts : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string id = std::to_string(::getpid() % 100000);
    host_ = {"albef_host0_" + id, "albef_host1_" + id};
    link_ = {"alb0_" + id, "alb1_" + id};
    address_ = {"10.213.7.1", "10.213.7.2"};
    if (run_command("ip netns add " + host_[0]) != 0) GTEST_SKIP() << "cannot create network namespaces here (needs root)";
    created_ = true;
    const std::vector<std::string> setup = {
        "ip netns add " + host_[1],
        "ip link add " + link_[0] + " type veth peer name " + link_[1],
        "ip link set " + link_[0] + " netns " + host_[0],
        "ip link set " + link_[1] + " netns " + host_[1],
    };
    for (const std::string& command : setup) ASSERT_EQ(run_command(command), 0) << command;
    for (int i = 0; i < 2; ++i) {
      ASSERT_EQ(run_command("ip -n " + host_[i] + " addr add " + address_[i] + "/24 dev " + link_[i]), 0);
      ASSERT_EQ(run_command("ip -n " + host_[i] + " link set " + link_[i] + " up"), 0);
      ASSERT_EQ(run_command("ip -n " + host_[i] + " link set lo up"), 0);
    }
  }
  void TearDown() override {
    if (!created_) return;
    for (const std::string& host : host_) run_command("ip netns del " + host);
  }

  // The shell command that starts node `node` of the run in its namespace.
  std::string node(int node, int port, const std::string& config, const std::string& out,
                   const std::string& extra) const {
    return "ip netns exec " + host_[node] + " env GLOO_SOCKET_IFNAME=" + link_[node] + " " + ALBEF_CLI +
           " launch --nnodes 2 --node_rank " + std::to_string(node) + " --nproc 1 --master_addr " + address_[0] +
           " --master_port " + std::to_string(port) + " -- pretrain --config " + config + " --output_dir " + out +
           " --threads 1 --workers 1 --seed 7 --print_freq 1000 --epochs 3 --dist_timeout " +
           std::to_string(kDistTimeoutSeconds) + " " + extra;
  }
  // Both nodes at once; the exit codes of node 0 and node 1.
  // Each run on a port of its own: the previous one's may still be in TIME_WAIT.
  std::pair<int, int> run_both(const std::string& config, const std::string& out, const std::string& extra,
                               const std::string& log) {
    const int port = 29613 + runs_++;
    // One output folder for both, as on a shared filesystem: every rank resumes from its checkpoints.
    const std::string both = "sh -c '" + node(0, port, config, out, extra) + " >" + log + "0 2>&1 & a=$!; " +
                             node(1, port, config, out, extra) + " >" + log + "1 2>&1 & b=$!; " +
                             "wait $a; echo $?; wait $b; echo $?'";
    std::string codes;
    run_command(both, &codes);
    int a = -1, b = -1;
    std::sscanf(codes.c_str(), "%d %d", &a, &b);
    return {a, b};
  }

  std::vector<std::string> host_, link_, address_;
  bool created_ = false;
  int runs_ = 0;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void expect_same_steps(const std::string& a, const std::string& b) {
  const auto left = read_json_lines(a), right = read_json_lines(b);
  ASSERT_EQ(left.size(), right.size()) << a << " vs " << b;
  ASSERT_FALSE(left.empty());
  for (size_t i = 0; i < left.size(); ++i)
    for (const char* key : {"loss_ita", "loss_itm", "loss_mlm"})
      EXPECT_NEAR(left[i][key].get<double>(), right[i][key].get<double>(), 1e-6) << key << " at line " << i;
}

TEST_F(TwoHosts, EqualsOneHostStopsWhenTheLinkIsCutAndResumesExactly) {
  const std::string dir = make_temp_dir("multihost");
  const std::string config = write_tiny_pretrain_config(dir, source_path("data/coco-by/captions.json"));

  // The reference: the same two ranks on one host.
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " launch --nproc 2 -- pretrain --config " + config + " --output_dir " +
                            dir + "/one_host --threads 1 --workers 1 --seed 7 --print_freq 1000 --epochs 3",
                        &output),
            0)
      << output;

  const auto [a, b] = run_both(config, dir + "/two_hosts", "--save_every_steps 2", dir + "/two_hosts.log");
  ASSERT_EQ(a, 0) << read_text(dir + "/two_hosts.log0");
  ASSERT_EQ(b, 0) << read_text(dir + "/two_hosts.log1");
  expect_same_steps(dir + "/one_host/train_steps.jsonl", dir + "/two_hosts/train_steps.jsonl");

  // The same run, its link cut once a mid-epoch checkpoint of epoch 1 is written.
  const std::string cut = dir + "/cut";
  std::thread runner([&] { run_both(config, cut, "--save_every_steps 2", cut + ".log"); });
  const std::string marker = cut + "/checkpoint_01_step000002.pth";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  while (!fs::exists(marker) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const int down = run_command("ip -n " + host_[0] + " link set " + link_[0] + " down");
  const auto cut_at = std::chrono::steady_clock::now();
  runner.join();
  ASSERT_EQ(down, 0);
  const double stopped_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - cut_at).count();
  ASSERT_TRUE(fs::exists(marker));
  ASSERT_FALSE(fs::exists(cut + "/checkpoint_02.pth")) << "the run finished before the link was cut";
  // Within the timeout, plus the launcher's grace to stop the rank and one step's time.
  EXPECT_LT(stopped_after, kDistTimeoutSeconds + 20.0);
  const std::string log0 = read_text(cut + ".log0"), log1 = read_text(cut + ".log1");
  EXPECT_NE(log0.find("rank 1 at " + address_[1]), std::string::npos) << log0;
  EXPECT_NE(log1.find("rank 0 at " + address_[0]), std::string::npos) << log1;

  ASSERT_EQ(run_command("ip -n " + host_[0] + " link set " + link_[0] + " up"), 0);
  const auto [c, d] = run_both(config, cut, "--save_every_steps 2 --resume", cut + "_resumed.log");
  ASSERT_EQ(c, 0) << read_text(cut + "_resumed.log0");
  ASSERT_EQ(d, 0) << read_text(cut + "_resumed.log1");
  expect_same_steps(dir + "/two_hosts/train_steps.jsonl", cut + "/train_steps.jsonl");
}

}  // namespace
