// `albef pretrain` in SIMLA mode end to end on the tiny model and the bundled
// pairs: a DALL-E encoder.pkl (written by PyTorch) gives the MIM targets, all
// five losses are logged and fall, the checkpoint has SIMLA's official
// entries, `albef retrieval` fine-tunes from it, a run killed mid-epoch
// resumes exactly, and a config without a tokenizer is refused by name.

#include "albef/io/npy.h"
#include "albef/vision/dalle_pixels.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::read_json_lines;
using albef::testing::run_command;
using albef::testing::source_path;

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kLosses = {"loss_mlm", "loss_ita", "loss_itm", "loss_mim", "loss_pseudo"};

// A small random DALL-E encoder pickled whole by PyTorch, once per run: dir/encoder.pkl.
const std::string& tokenizer_dir() {
  static const std::string dir = [] {
    const std::string d = make_temp_dir("simla_tokenizer");
    albef::io::write_npy(d + "/inputs.npy",
                         albef::vision::load_tokenizer_image(data_path("images/camera.png"), 32).unsqueeze(0));
    std::string output;
    EXPECT_EQ(run_command(std::string(ALBEF_PYTHON3) + " " + source_path("tests/python/make_dvae_encoder.py") + " " +
                              d + " " + d + "/inputs.npy",
                          &output),
              0)
        << output;
    return d;
  }();
  return dir;
}

// The tiny SIMLA config on the bundled pairs; `tokenizer` empty: none.
std::string write_simla_config(const std::string& dir, const std::string& tokenizer, const std::string& extra = "") {
  std::ifstream in(data_path("simla/Pretrain_tiny.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto replace = [&](const std::string& from, const std::string& to) {
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  };
  replace("train_file: [pretrain_tiny.json]", "train_file: ['" + source_path("data/coco-by/captions.json") + "']");
  replace("bert_config: shared_bert_tiny.json", "bert_config: '" + data_path("simla/shared_bert_tiny.json") + "'");
  replace("image_tokenizer_path: null", "image_tokenizer_path: " + (tokenizer.empty() ? "null" : "'" + tokenizer + "'"));
  // A 4x4 patch grid cannot hold the official blocks of 16: masks of 5 patches in blocks of 1 or more.
  text += "masking_generator: {num_masking_patches: 5, min_num_patches: 1}\n" + extra;
  const std::string path = dir + "/Pretrain_SIMLA_tiny.yaml";
  std::ofstream(path) << text;
  return path;
}

std::vector<std::string> pretrain_args(const std::string& config, const std::string& out) {
  return {ALBEF_CLI, "pretrain", "--config", config, "--output_dir", out, "--threads", "1", "--workers", "1",
          "--seed", "7"};
}

std::string pretrain_command(const std::string& config, const std::string& out) {
  std::string command;
  for (const auto& arg : pretrain_args(config, out)) command += (command.empty() ? "" : " ") + arg;
  return command;
}

double epoch_loss(const nlohmann::json& line) {
  double total = 0.0;
  for (const std::string& key : kLosses) total += std::stod(line["train_" + key].get<std::string>());
  return total;
}

}  // namespace

TEST(SimlaPretrainCli, TrainsFiveLossesAndFineTunesWithRetrieval) {
  const std::string dir = make_temp_dir("simla_pretrain");
  const std::string config = write_simla_config(dir, tokenizer_dir());
  std::string output;
  ASSERT_EQ(run_command(pretrain_command(config, dir + "/run") + " --epochs 4", &output), 0) << output;
  const auto steps = read_json_lines(dir + "/run/train_steps.jsonl");
  ASSERT_EQ(steps.size(), 12u);  // 26 pairs / 8 = 3 steps x 4 epochs
  for (const auto& step : steps)
    for (const std::string& key : kLosses) EXPECT_TRUE(std::isfinite(step[key].get<double>())) << key << step.dump();
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 4u);
  EXPECT_LT(epoch_loss(log[3]), epoch_loss(log[0])) << log[0].dump() << "\n" << log[3].dump();

  // PyTorch reads SIMLA's official entries: no token types, the mask token and both heads with momentum copies.
  const std::string check =
      std::string(ALBEF_PYTHON3) + " -c \"import torch,sys; c=torch.load(sys.argv[1]); m=c['model']; "
      "assert len(m)==316, len(m); assert not any('token_type' in k for k in m); "
      "assert m['visual_encoder.mask_token'].shape==(1,1,64) and m['mim_head_m.weight'].shape==(8192,64); "
      "assert m['concept_head.weight'].shape==(30522,32); assert c['config']['pretrain_mode']=='simla'; print('ok')\" " +
      dir + "/run/checkpoint_03.pth";
  ASSERT_EQ(run_command(check, &output), 0) << output;

  // Retrieval fine-tunes the single-stream model (ITM fused from the words) and evaluates it.
  std::ofstream(dir + "/Retrieval_SIMLA_tiny.yaml")
      << "train_file: ['" << source_path("data/coco-by/captions.json") << "']\n"
      << "val_file: '" << source_path("data/coco-by/captions.json") << "'\n"
      << "test_file: '" << source_path("data/coco-by/captions.json") << "'\n"
      << "image_root: '" << source_path("data/coco-by") << "'\n"
      << "bert_config: '" << data_path("simla/shared_bert_tiny.json") << "'\n"
      << "image_res: 64\nbatch_size_train: 16\nbatch_size_test: 16\nqueue_size: 16\nmomentum: 0.995\n"
      << "vision_width: 64\nembed_dim: 32\ntemp: 0.07\nk_test: 4\nalpha: 0.4\ndistill: True\nwarm_up: True\n"
      << "optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: 1e-4, epochs: 1, min_lr: 1e-6, decay_rate: 1, warmup_lr: 1e-5, "
         "warmup_epochs: 1, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " retrieval --config " + dir + "/Retrieval_SIMLA_tiny.yaml" +
                            " --checkpoint " + dir + "/run/checkpoint_03.pth --output_dir " + dir +
                            "/retrieval --threads 1 --workers 1",
                        &output),
            0)
      << output;
  // Everything the retrieval model has loads but its own idx_queue; left over: both mask tokens and
  // the MLM, MIM and keyword heads with their momentum copies.
  EXPECT_NE(output.find("(1 missing, 24 unexpected keys)"), std::string::npos) << output;
  const auto retrieval_steps = read_json_lines(dir + "/retrieval/train_steps.jsonl");
  ASSERT_FALSE(retrieval_steps.empty());
  for (const auto& step : retrieval_steps)
    for (const char* key : {"loss_ita", "loss_itm"}) EXPECT_TRUE(std::isfinite(step[key].get<double>())) << step.dump();
  const auto retrieval_log = read_json_lines(dir + "/retrieval/log.txt");
  ASSERT_EQ(retrieval_log.size(), 1u);
  EXPECT_TRUE(retrieval_log[0].contains("test_r_mean")) << retrieval_log[0].dump();
}

TEST(SimlaPretrainCli, ResumeAfterSigkillMatchesUninterruptedRun) {
  const std::string dir = make_temp_dir("simla_resume");
  const std::string config = write_simla_config(dir, tokenizer_dir());
  std::string output;
  ASSERT_EQ(run_command(pretrain_command(config, dir + "/straight") + " --epochs 3 --save_every_steps 2", &output), 0)
      << output;
  // Killed right after its first mid-epoch checkpoint of epoch 1: the resumed
  // run sees the same views, masks, visual tokens and draws.
  const std::string marker = dir + "/killed/checkpoint_01_step000002.pth";
  std::vector<std::string> killed = pretrain_args(config, dir + "/killed");
  for (const char* extra : {"--epochs", "3", "--save_every_steps", "2", "--print_freq", "1000"}) killed.push_back(extra);
  albef::testing::run_until_file_then_kill(killed, marker);
  ASSERT_TRUE(fs::exists(marker));
  ASSERT_FALSE(fs::exists(dir + "/killed/checkpoint_02.pth")) << "the run finished before it was killed";
  ASSERT_EQ(run_command(pretrain_command(config, dir + "/killed") + " --epochs 3 --save_every_steps 2 --resume",
                        &output),
            0)
      << output;
  EXPECT_NE(output.find("resuming from"), std::string::npos) << output;
  albef::testing::expect_same_training(dir + "/straight", dir + "/killed", kLosses, 9);
}

TEST(SimlaPretrainCli, TokenizerIsRequiredUnlessMimIsOff) {
  const std::string dir = make_temp_dir("simla_no_tokenizer");
  std::string output;
  EXPECT_NE(run_command(pretrain_command(write_simla_config(dir, ""), dir + "/run") + " --epochs 1", &output), 0);
  for (const char* needle : {"Pretrain_SIMLA_tiny.yaml", "image_tokenizer_path", "mim: false"})
    EXPECT_NE(output.find(needle), std::string::npos) << output;
  // A folder without encoder.pkl is named too.
  EXPECT_NE(run_command(pretrain_command(write_simla_config(dir, dir), dir + "/run") + " --epochs 1", &output), 0);
  EXPECT_NE(output.find(dir + "/encoder.pkl"), std::string::npos) << output;

  // mim: false trains the other four objectives without a tokenizer.
  ASSERT_EQ(run_command(pretrain_command(write_simla_config(dir, "", "mim: false\n"), dir + "/no_mim") + " --epochs 1",
                        &output),
            0)
      << output;
  const auto steps = read_json_lines(dir + "/no_mim/train_steps.jsonl");
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_FALSE(steps[0].contains("loss_mim")) << steps[0].dump();
  for (const char* key : {"loss_mlm", "loss_ita", "loss_itm", "loss_pseudo"})
    EXPECT_TRUE(std::isfinite(steps[0][key].get<double>())) << key;
}
