// `albef pretrain` end to end on the tiny model: official log and checkpoint
// formats, bad images skipped and counted, and an exact resume after SIGKILL.

#include "test_util.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::read_json_lines;
using albef::testing::run_command;
using albef::testing::source_path;

namespace fs = std::filesystem;

namespace {

std::vector<std::string> pretrain_args(const std::string& config, const std::string& out) {
  return {ALBEF_CLI, "pretrain", "--config", config, "--output_dir", out, "--threads", "1", "--workers", "1", "--seed", "7"};
}

std::string join(const std::vector<std::string>& args) {
  std::string command;
  for (const auto& arg : args) command += (command.empty() ? "" : " ") + arg;
  return command;
}

}  // namespace

TEST(PretrainCli, WritesOfficialLogAndCheckpoints) {
  const std::string dir = make_temp_dir("pretrain_formats");
  const std::string config = albef::testing::write_tiny_pretrain_config(dir, source_path("data/coco-by/captions.json"));
  std::string output;
  ASSERT_EQ(run_command(join(pretrain_args(config, dir + "/run")) + " --epochs 2", &output), 0) << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 2u);
  for (const char* key : {"train_lr", "train_loss_mlm", "train_loss_ita", "train_loss_itm", "epoch"})
    EXPECT_TRUE(log[1].contains(key)) << key << " in " << log[1].dump();
  EXPECT_EQ(log[1]["epoch"], 1);
  EXPECT_EQ(read_json_lines(dir + "/run/train_steps.jsonl").size(), 12u);  // 26 samples / 4 = 6 steps x 2
  EXPECT_TRUE(fs::exists(dir + "/run/loss_curve.png"));
  // PyTorch reads the checkpoint in the official layout.
  const std::string check = std::string(ALBEF_PYTHON3) + " -c \"import torch,sys; c=torch.load(sys.argv[1]); "
                            "assert set(['model','optimizer','lr_scheduler','config','epoch']) <= set(c), list(c); "
                            "assert c['epoch']==1 and len(c['model'])==268, (c['epoch'], len(c['model'])); "
                            "assert [len(g['params']) for g in c['optimizer']['param_groups']]==[80,51]; "
                            "assert c['config']['queue_size']==16; print('ok')\" " +
                            dir + "/run/checkpoint_01.pth";
  ASSERT_EQ(run_command(check, &output), 0) << output;
}

TEST(PretrainCli, UnreadableImagesAreSkippedAndCounted) {
  const std::string dir = make_temp_dir("pretrain_bad");
  // The bundled pairs plus a missing file and a truncated JPEG.
  std::ifstream in(source_path("data/coco-by/captions.json"));
  nlohmann::json annotations = nlohmann::json::parse(in);
  for (auto& entry : annotations) entry["image"] = source_path("data/coco-by/" + entry["image"].get<std::string>());
  {
    std::ifstream jpeg(source_path("data/coco-by/images/000000000790.jpg"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(jpeg)), std::istreambuf_iterator<char>());
    std::ofstream(dir + "/truncated.jpg", std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  }
  annotations.push_back({{"image", dir + "/missing.jpg"}, {"caption", "nothing here"}});
  annotations.push_back({{"image", dir + "/truncated.jpg"}, {"caption", "half a picture"}});
  std::ofstream(dir + "/train.json") << annotations.dump();
  const std::string config = albef::testing::write_tiny_pretrain_config(dir, dir + "/train.json");
  std::string output;
  ASSERT_EQ(run_command(join(pretrain_args(config, dir + "/run")) + " --epochs 1", &output), 0) << output;
  EXPECT_NE(output.find("skipped 2 unreadable image(s)"), std::string::npos) << output;
  EXPECT_NE(output.find("missing.jpg"), std::string::npos) << output;
  EXPECT_NE(output.find("truncated.jpg"), std::string::npos) << output;
  EXPECT_EQ(read_json_lines(dir + "/run/train_steps.jsonl").size(), 7u);  // 28 samples / 4, every batch full
}

TEST(PretrainCli, ResumeAfterSigkillMatchesUninterruptedRun) {
  const std::string dir = make_temp_dir("pretrain_resume");
  const std::string config = albef::testing::write_tiny_pretrain_config(dir, source_path("data/coco-by/captions.json"));
  std::string output;
  ASSERT_EQ(run_command(join(pretrain_args(config, dir + "/straight")) + " --epochs 3 --save_every_steps 2", &output), 0)
      << output;

  // The same run, killed right after its first mid-epoch checkpoint of epoch 1.
  std::vector<std::string> args = pretrain_args(config, dir + "/killed");
  for (const char* extra : {"--epochs", "3", "--save_every_steps", "2", "--print_freq", "1000"}) args.push_back(extra);
  const std::string marker = dir + "/killed/checkpoint_01_step000002.pth";
  albef::testing::run_until_file_then_kill(args, marker);
  ASSERT_TRUE(fs::exists(marker));
  ASSERT_FALSE(fs::exists(dir + "/killed/checkpoint_02.pth")) << "the run finished before it was killed";

  ASSERT_EQ(run_command(join(pretrain_args(config, dir + "/killed")) + " --epochs 3 --save_every_steps 2 --resume",
                        &output),
            0)
      << output;
  EXPECT_NE(output.find("resuming from"), std::string::npos) << output;
  albef::testing::expect_same_training(dir + "/straight", dir + "/killed", {"loss_mlm", "loss_ita", "loss_itm", "lr"},
                                       18);
}

TEST(PretrainCli, Bf16TrainingRuns) {
  const std::string dir = make_temp_dir("pretrain_bf16");
  const std::string config = albef::testing::write_tiny_pretrain_config(dir, source_path("data/coco-by/captions.json"));
  std::string output;
  ASSERT_EQ(run_command(join(pretrain_args(config, dir + "/run")) + " --epochs 1 --precision bf16", &output), 0)
      << output;
  for (const auto& step : read_json_lines(dir + "/run/train_steps.jsonl"))
    for (const char* key : {"loss_mlm", "loss_ita", "loss_itm"}) EXPECT_TRUE(std::isfinite(step[key].get<double>()));
}
