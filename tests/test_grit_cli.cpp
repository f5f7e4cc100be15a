// `albef pretrain` in GRIT-VLP mode end to end on the tiny model: an ALBEF
// checkpoint loads into it, the losses fall, the grouped order and the
// sampler state are in the checkpoints, the checkpoints load into
// `albef retrieval`, and a run killed mid-epoch resumes exactly.

#include "test_util.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::read_json_lines;
using albef::testing::run_command;
using albef::testing::source_path;

namespace fs = std::filesystem;

namespace {

std::string write_grit_config(const std::string& dir) {
  std::ifstream in(data_path("grit/Pretrain_GRIT_tiny.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto replace = [&](const std::string& from, const std::string& to) { text.replace(text.find(from), from.size(), to); };
  replace("TRAIN_FILE", source_path("data/coco-by/captions.json"));
  replace("BERT_CONFIG", data_path("tiny/config_bert.json"));
  const std::string path = dir + "/Pretrain_GRIT_tiny.yaml";
  std::ofstream(path) << text;
  return path;
}

std::vector<std::string> grit_args(const std::string& config, const std::string& out) {
  return {ALBEF_CLI, "pretrain", "--config", config, "--output_dir", out, "--checkpoint",
          data_path("tiny/albef_pretrain_tiny.pth"), "--threads", "1", "--workers", "1", "--seed", "7"};
}

std::string join(const std::vector<std::string>& args) {
  std::string command;
  for (const auto& arg : args) command += (command.empty() ? "" : " ") + arg;
  return command;
}

// The epoch's mean total loss (log.txt holds the means as "%.3f" strings, as the official log).
double epoch_loss(const nlohmann::json& line) {
  double total = 0.0;
  for (const char* key : {"train_loss_mlm", "train_loss_ita", "train_loss_itm"})
    total += std::stod(line[key].get<std::string>());
  return total;
}

}  // namespace

TEST(GritPretrainCli, TrainsFromAnAlbefCheckpointAndLoadsIntoRetrieval) {
  const std::string dir = make_temp_dir("grit_pretrain");
  const std::string config = write_grit_config(dir);
  std::string output;
  ASSERT_EQ(run_command(join(grit_args(config, dir + "/run")), &output), 0) << output;
  // ALBEF's momentum entries and queues are left out; every GRIT entry loads.
  EXPECT_NE(output.find("(0 missing, 134 unexpected keys)"), std::string::npos) << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 3u);  // train_epochs, not schedular.epochs
  EXPECT_LT(epoch_loss(log[2]), epoch_loss(log[0])) << log[0].dump() << "\n" << log[2].dump();
  EXPECT_EQ(read_json_lines(dir + "/run/train_steps.jsonl").size(), 18u);  // 26 pairs / 4 = 6 steps x 3

  // The official layout without momentum entries; the next epoch's grouped
  // order (the 24 pairs of the epoch, each once) in albef's resume state.
  const std::string check =
      std::string(ALBEF_PYTHON3) + " -c \"import torch,sys; c=torch.load(sys.argv[1]); "
      "assert len(c['model'])==134 and not any(k.endswith('_m') or 'queue' in k for k in c['model']); "
      "assert c['config']['pretrain_mode']=='grit' and c['epoch']==0; "
      "o=c['albef_resume']['data']['order'].tolist(); assert len(o)==24 and len(set(o))==24 and max(o)<26, o; "
      "assert 'image_queue' not in c['albef_resume']['data']; print('ok')\" " +
      dir + "/run/checkpoint_00.pth";
  ASSERT_EQ(run_command(check, &output), 0) << output;

  // Retrieval evaluates from it (the checkpoint has no momentum entries: they are not needed to evaluate).
  const std::string retrieval = albef::testing::write_tiny_retrieval_config(dir);
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " retrieval --config " + retrieval + " --checkpoint " + dir +
                            "/run/checkpoint_02.pth --output_dir " + dir + "/retrieval --threads 1 --workers 1 "
                            "--evaluate",
                        &output),
            0)
      << output;
  const auto retrieval_log = read_json_lines(dir + "/retrieval/log.txt");
  ASSERT_EQ(retrieval_log.size(), 1u);
  EXPECT_TRUE(retrieval_log[0].contains("test_r_mean")) << retrieval_log[0].dump();
}

TEST(GritPretrainCli, ResumeAfterSigkillMatchesUninterruptedRun) {
  const std::string dir = make_temp_dir("grit_resume");
  const std::string config = write_grit_config(dir);
  std::string output;
  ASSERT_EQ(run_command(join(grit_args(config, dir + "/straight")) + " --save_every_steps 2", &output), 0) << output;

  // Killed right after its first checkpoint inside epoch 1 (grouped order,
  // half-filled queue): the resumed run sees the same batches.
  std::vector<std::string> args = grit_args(config, dir + "/killed");
  for (const char* extra : {"--save_every_steps", "2", "--print_freq", "1000"}) args.push_back(extra);
  const std::string marker = dir + "/killed/checkpoint_01_step000002.pth";
  albef::testing::run_until_file_then_kill(args, marker);
  ASSERT_TRUE(fs::exists(marker));
  ASSERT_FALSE(fs::exists(dir + "/killed/checkpoint_02.pth")) << "the run finished before it was killed";
  ASSERT_EQ(run_command(join(grit_args(config, dir + "/killed")) + " --save_every_steps 2 --resume", &output), 0)
      << output;
  EXPECT_NE(output.find("resuming from"), std::string::npos) << output;
  albef::testing::expect_same_training(dir + "/straight", dir + "/killed", {"loss_mlm", "loss_ita", "loss_itm", "lr"},
                                       18);
}

TEST(GritPretrainCli, GritConfigWithoutTheModeIsRefused) {
  // GRIT's own configs/Pretrain.yaml has no pretrain_mode: it must not silently train ALBEF.
  const std::string dir = make_temp_dir("grit_no_mode");
  std::ifstream in(write_grit_config(dir));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find("pretrain_mode: grit\n"), std::string("pretrain_mode: grit\n").size(), "");
  std::ofstream(dir + "/official.yaml") << text;
  std::string output;
  EXPECT_NE(run_command(join(grit_args(dir + "/official.yaml", dir + "/run")), &output), 0);
  EXPECT_NE(output.find("official.yaml"), std::string::npos) << output;
  EXPECT_NE(output.find("search_space"), std::string::npos) << output;
  EXPECT_NE(output.find("pretrain_mode: grit"), std::string::npos) << output;
}

TEST(GritPretrainCli, TwoProcessesShareTheGroupedOrderAndResumeOnOne) {
  // Two ranks group their own features; the gathered order (shuffled across
  // processes here) is split contiguously, and at an epoch boundary a run
  // resumes with another number of processes.
  const std::string dir = make_temp_dir("grit_distributed");
  const std::string config = write_grit_config(dir);
  const std::string args = " pretrain --config " + config + " --output_dir " + dir + "/run --workers 1";
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " launch --nproc 2 --" + args +
                            " --epochs 2 --mini_batch_shuffle_across_gpu True",
                        &output),
            0)
      << output;
  EXPECT_NE(output.find("13 samples per rank, 3 steps per epoch"), std::string::npos) << output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + args + " --threads 1 --resume", &output), 0) << output;
  EXPECT_NE(output.find("resuming from"), std::string::npos) << output;
  ASSERT_EQ(read_json_lines(dir + "/run/log.txt").size(), 3u);
  // Each checkpoint's order: the 24 pairs the ranks trained on, each once;
  // one generator state per process that wrote it.
  const std::string check =
      std::string(ALBEF_PYTHON3) + " -c \"import torch,sys; "
      "r=[torch.load(sys.argv[1] + '/checkpoint_%02d.pth' % e)['albef_resume']['data'] for e in range(3)]; "
      "assert all(len(d['order'])==24 and len(set(d['order'].tolist()))==24 for d in r); "
      "assert [d['generator'].shape[0] for d in r]==[2,2,1], [d['generator'].shape for d in r]; print('ok')\" " +
      dir + "/run";
  ASSERT_EQ(run_command(check, &output), 0) << output;
}
