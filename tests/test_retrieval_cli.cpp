// `albef retrieval` end to end on the tiny model: fine-tuning from the
// official tiny pretrain checkpoint with evaluation every epoch, the best
// checkpoint, the score matrices, resume, and zero-shot --evaluate.

#include "albef/io/npy.h"

#include "test_util.h"

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

std::string retrieval_command(const std::string& config, const std::string& out) {
  return std::string(ALBEF_CLI) + " retrieval --config " + config + " --checkpoint " +
         data_path("tiny/albef_pretrain_tiny.pth") + " --output_dir " + out + " --threads 1 --workers 1";
}

}  // namespace

TEST(RetrievalCli, FineTunesEvaluatesEachEpochAndKeepsTheBest) {
  const std::string dir = make_temp_dir("retrieval_finetune");
  const std::string config = albef::testing::write_tiny_retrieval_config(dir);
  std::string output;
  ASSERT_EQ(run_command(retrieval_command(config, dir + "/run") + " --epochs 2", &output), 0) << output;

  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 2u) << output;
  for (const char* key : {"train_lr", "train_loss_ita", "train_loss_itm", "val_txt_r1", "val_img_r10", "val_r_mean",
                          "test_txt_r1", "test_txt_r5", "test_txt_r10", "test_txt_r_mean", "test_img_r1",
                          "test_img_r5", "test_img_r10", "test_img_r_mean", "test_r_mean", "epoch"})
    EXPECT_TRUE(log[1].contains(key)) << key << " in " << log[1].dump();
  EXPECT_EQ(log[1]["epoch"], 1);
  // 130 pairs in batches of 16: 8 steps an epoch.
  EXPECT_EQ(read_json_lines(dir + "/run/train_steps.jsonl").size(), 16u);

  // Retrieval.py's closing line names the epoch with the best val r_mean.
  const int best = log[0]["val_r_mean"].get<double>() >= log[1]["val_r_mean"].get<double>() ? 0 : 1;
  std::ifstream in(dir + "/run/log.txt");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("best epoch: " + std::to_string(best)), std::string::npos) << text;

  // The best checkpoint in the official layout, with the retrieval model's id queue.
  const std::string check = std::string(ALBEF_PYTHON3) +
                            " -c \"import torch,sys; c=torch.load(sys.argv[1]); "
                            "assert c['epoch']==int(sys.argv[2]), c['epoch']; m=c['model']; "
                            "assert 'idx_queue' in m and 'text_encoder.encoder.layer.0.attention.self.query.weight' in m; "
                            "assert not any(k.startswith('text_encoder.bert.') for k in m); print('ok')\" " +
                            dir + "/run/checkpoint_best.pth " + std::to_string(best);
  ASSERT_EQ(run_command(check, &output), 0) << output;
  EXPECT_TRUE(fs::exists(dir + "/run/checkpoint_01.pth"));

  const at::Tensor i2t = albef::io::read_npy(dir + "/run/score_i2t.npy");
  const at::Tensor t2i = albef::io::read_npy(dir + "/run/score_t2i.npy");
  EXPECT_EQ(i2t.sizes(), (std::vector<int64_t>{26, 130}));
  EXPECT_EQ(t2i.sizes(), (std::vector<int64_t>{130, 26}));
  EXPECT_EQ(i2t.scalar_type(), at::kFloat);
  // k_test 4: four re-ranked texts per image, the rest -100.
  EXPECT_EQ(i2t.ne(-100).sum(1).eq(4).all().item<bool>(), true);
}

TEST(RetrievalCli, ResumedFineTuningMatchesUninterruptedRun) {
  const std::string dir = make_temp_dir("retrieval_resume");
  const std::string config = albef::testing::write_tiny_retrieval_config(dir);
  std::string output;
  ASSERT_EQ(run_command(retrieval_command(config, dir + "/straight") + " --epochs 2", &output), 0) << output;
  ASSERT_EQ(run_command(retrieval_command(config, dir + "/split") + " --epochs 1", &output), 0) << output;
  // The same command line plus --resume: continues from split/checkpoint_00.pth.
  ASSERT_EQ(run_command(retrieval_command(config, dir + "/split") + " --epochs 2 --resume", &output), 0) << output;
  EXPECT_NE(output.find("resuming from"), std::string::npos) << output;

  albef::testing::expect_same_training(dir + "/straight", dir + "/split", {"loss_ita", "loss_itm", "lr", "alpha"});
}

TEST(RetrievalCli, ZeroShotEvaluationOfAPretrainedCheckpoint) {
  const std::string dir = make_temp_dir("retrieval_zero_shot");
  const std::string config = albef::testing::write_tiny_retrieval_config(dir);
  std::string output;
  ASSERT_EQ(run_command(retrieval_command(config, dir + "/run") + " --evaluate", &output), 0) << output;
  EXPECT_NE(output.find("ITC + ITM re-rank"), std::string::npos) << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["epoch"], 0);
  EXPECT_TRUE(log[0].contains("val_r_mean") && log[0].contains("test_r_mean")) << log[0].dump();
  EXPECT_FALSE(log[0].contains("train_loss_ita"));
  EXPECT_EQ(albef::io::read_npy(dir + "/run/score_t2i.npy").sizes(), (std::vector<int64_t>{130, 26}));
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoint_best.pth"));
}
