// SNLI-VE (VE.py, models/model_ve.py) against the official code's fixture,
// and `albef ve` end to end: logs, predictions, --evaluate, --predict, an
// exact resume after SIGKILL and bad input.

#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/tasks/ve.h"
#include "tasks/classification/classifier.h"
#include "tasks/ve/data.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;
using albef::testing::data_path;
using albef::testing::expect_relative;
using albef::testing::make_temp_dir;
using albef::testing::read_json_lines;
using albef::testing::run_command;
using albef::testing::source_path;
using albef::testing::state_tensor;
using Keys = std::vector<std::string>;

constexpr double kTolerance = 1e-5;

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("ve/npy/" + name + ".npy")); }

nlohmann::json recorded() {
  std::ifstream in(data_path("ve/ve.json"));
  return nlohmann::json::parse(in);
}

// VE_tiny.yaml with absolute paths: train_file `train` (default: the fixture
// pairs), val and test the fixture pairs, batches of `batch`, learning rate `lr`.
std::string write_ve_config(const std::string& dir, const std::string& train = "", int batch = 3,
                            const std::string& lr = "2.0e-05") {
  const std::string pairs = data_path("ve/ve_pairs.json");
  std::ofstream(dir + "/VE_tiny.yaml")
      << "train_file: '" << (train.empty() ? pairs : train) << "'\nval_file: '" << pairs << "'\ntest_file: '" << pairs
      << "'\nimage_root: '" << source_path("data/coco-by/images") << "'\n"
      << "bert_config: '" << data_path("tiny/config_bert.json") << "'\n"
      << "image_res: 32\nbatch_size_train: " << batch << "\nbatch_size_test: 3\nalpha: 0.4\ndistill: true\n"
      << "warm_up: false\noptimizer: {opt: adamW, lr: " << lr << ", weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: " << lr << ", epochs: 5, min_lr: 1.0e-06, decay_rate: 1, warmup_lr: " << lr
      << ", warmup_epochs: 1, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  return dir + "/VE_tiny.yaml";
}

// VE.py's model after its training load of the tiny pretraining checkpoint
// (+ the classifier it leaves random, recorded by the fixture).
albef::AlbefModel load_ve_model(albef::LoadReport* report = nullptr) {
  const albef::Config config = albef::load_config(write_ve_config(make_temp_dir("ve_model")));
  albef::AlbefModel model(config, albef::ve_model_options(true));
  model->init_weights();
  const albef::LoadReport loaded = albef::load_checkpoint(model, data_path("tiny/albef_pretrain_tiny.pth"));
  if (report) *report = loaded;
  albef::load_state_dict(
      model, albef::io::state_dict_from(albef::io::read_torch_file(data_path("ve/extras_after_load.pth")), "extras"),
      "extras_after_load.pth");
  return model;
}

TEST(VeModel, CheckpointLoadsAsVePyLoadsIt) {
  albef::LoadReport report;
  albef::AlbefModel model = load_ve_model(&report);
  const nlohmann::json ve = recorded();
  EXPECT_EQ(report.missing_keys, ve["load_missing_keys"].get<Keys>());
  // VE.py re-inserts the renamed `bert` keys, so its message lists them in another order.
  Keys unexpected = report.unexpected_keys, official = ve["load_unexpected_keys"].get<Keys>();
  std::sort(unexpected.begin(), unexpected.end());
  std::sort(official.begin(), official.end());
  EXPECT_EQ(unexpected, official);
  for (const auto& [name, equal] : ve["momentum_equals_online_after_load"].items()) {
    const std::string online = name.substr(0, name.find("_m.")) + name.substr(name.find("_m.") + 2);
    EXPECT_EQ(state_tensor(model, name).equal(state_tensor(model, online)), equal.get<bool>()) << name;
  }
  albef::testing::expect_state_manifest(model, data_path("ve/state_after_load_manifest.json"));
}

TEST(VeModel, TrainingLossAndGradientsMatchOfficial) {
  albef::AlbefModel model = load_ve_model();
  model->train();
  const albef::classification::TrainOutputs out = albef::classification::train_forward(
      model, fixture("inputs__image"), fixture("inputs__input_ids"), fixture("inputs__attention_mask"),
      fixture("inputs__targets"), 0.4, /*distill=*/true);
  EXPECT_NEAR(out.loss.item<double>(), 1.098521, kTolerance);
  EXPECT_NEAR(out.loss.item<double>(), fixture("train__loss").item<double>(), kTolerance);
  EXPECT_TENSOR_NEAR(out.prediction, fixture("train__prediction"), kTolerance);
  EXPECT_TENSOR_NEAR(out.prediction_m, fixture("train__prediction_m"), kTolerance);
  EXPECT_TENSOR_NEAR(out.last_hidden_state, fixture("train__last_hidden_state"), kTolerance);
  out.loss.backward();
  for (const std::string& name : {"cls_head.0.weight", "cls_head.2.weight", "cls_head.2.bias",
                                  "text_encoder.encoder.layer.0.attention.self.query.weight",
                                  "text_encoder.encoder.layer.3.crossattention.self.value.weight",
                                  "visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.cls_token"})
    expect_relative(state_tensor(model, name).grad(), fixture("train__grad__" + name), 1e-4, name);
}

TEST(VeModel, EvaluationPredictsAsOfficial) {
  albef::AlbefModel model = load_ve_model();
  model->eval();
  at::NoGradGuard no_grad;
  const at::Tensor logits = albef::classification::classify(
      model, "cls_head",
      albef::classification::fuse_items(model, false, fixture("inputs__image"), fixture("inputs__input_ids"),
                                        fixture("inputs__attention_mask")));
  EXPECT_TENSOR_NEAR(logits, fixture("eval__prediction"), kTolerance);
  EXPECT_TRUE(logits.argmax(1).equal(fixture("eval__pred_class")));
}

TEST(VeModel, FullSizeKeysAndShapesAreTheOfficialOnes) {
  const albef::Config config = albef::load_config(source_path("configs/VE.yaml"));
  albef::AlbefModel model(config, albef::ve_model_options(true));
  albef::testing::expect_official_keys(model, data_path("keys/ve.json"));
}

TEST(VeData, ItemsAsTheOfficialDatasetAndBadItemsNamed) {
  const albef::classification::LabeledSet set = albef::ve::load_pairs({data_path("ve/ve_pairs.json")}, "/images");
  ASSERT_EQ(set.items.size(), 3u);
  EXPECT_EQ(set.items[0].images, (Keys{"/images/000000159269.jpg"}));
  EXPECT_EQ(set.items[0].label, 2);  // entailment
  EXPECT_EQ(set.items[1].label, 1);  // neutral
  EXPECT_EQ(set.items[2].label, 0);  // contradiction
  const std::string dir = make_temp_dir("ve_bad_items");
  for (const auto& [content, needle] : std::vector<std::pair<std::string, std::string>>{
           {R"([{"image": "a", "sentence": "s", "label": "entails"}])", "entry 0: \"label\""},
           {R"([{"image": "a", "sentence": "s", "label": "neutral"}, {"image": "b", "label": "neutral"}])",
            "entry 1"},
           {R"({"image": "a"})", "list"}}) {
    std::ofstream(dir + "/bad.json") << content;
    try {
      albef::ve::load_pairs({dir + "/bad.json"}, "");
      ADD_FAILURE() << "no error for " << content;
    } catch (const albef::Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

std::vector<std::string> ve_args(const std::string& config, const std::string& out) {
  return {ALBEF_CLI, "ve", "--config", config, "--output_dir", out, "--threads", "1", "--workers", "1",
          "--checkpoint", data_path("tiny/albef_pretrain_tiny.pth")};
}

std::string joined(const std::vector<std::string>& args) {
  std::string command;
  for (const auto& arg : args) command += (command.empty() ? "" : " ") + arg;
  return command;
}

TEST(VeCli, FineTunesWithPredictionsThenEvaluatesAndPredicts) {
  const std::string dir = make_temp_dir("ve_cli");
  const std::string config = write_ve_config(dir);
  std::string output;
  ASSERT_EQ(run_command(joined(ve_args(config, dir + "/run")) + " --epochs 2", &output), 0) << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 2u);
  for (const char* key : {"train_loss", "train_lr", "val_acc", "test_acc", "epoch"}) EXPECT_TRUE(log[1].contains(key)) << key;
  std::ifstream in(dir + "/run/val_predictions.json");
  const nlohmann::json predictions = nlohmann::json::parse(in);
  ASSERT_EQ(predictions.size(), 3u);
  EXPECT_EQ(predictions[0]["probabilities"].size(), 3u);
  ASSERT_TRUE(fs::exists(dir + "/run/checkpoint_best.pth"));

  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " ve --config " + config + " --checkpoint " + dir +
                            "/run/checkpoint_best.pth --output_dir " + dir + "/eval --evaluate --threads 1",
                        &output),
            0)
      << output;
  const auto eval_log = read_json_lines(dir + "/eval/log.txt");
  ASSERT_EQ(eval_log.size(), 1u);
  EXPECT_TRUE(eval_log[0].contains("test_acc"));

  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " ve --predict --config " + config + " --checkpoint " + dir +
                            "/run/checkpoint_best.pth --image " + source_path("data/coco-by/images/000000159269.jpg") +
                            " --text 'There are umbrellas.' --json --threads 1",
                        &output),
            0)
      << output;
  const nlohmann::json answers = nlohmann::json::parse(output.substr(output.find('[')));
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0]["probabilities"].size(), 3u);
}

TEST(VeCli, FineTunesASimlaCheckpoint) {
  // SIMLA's tiny pretraining checkpoint (single-stream BERT): its ve.py runs the hypothesis through every
  // layer with cross-attention, as albef's classifier does; the bundled pairs train and evaluate.
  const std::string dir = make_temp_dir("ve_simla");
  std::ofstream(dir + "/ve.yaml") << "train_file: '" << source_path("data/coco-by/ve/train.json") << "'\n"
                                  << "val_file: '" << source_path("data/coco-by/ve/test.json") << "'\n"
                                  << "test_file: '" << source_path("data/coco-by/ve/test.json") << "'\n"
                                  << "image_root: '" << source_path("data/coco-by/images") << "'\n"
                                  << "bert_config: '" << data_path("simla/shared_bert_tiny.json") << "'\n"
                                  << "image_res: 64\nvision_width: 64\nbatch_size_train: 16\nbatch_size_test: 64\n"
                                  << "alpha: 0.4\ndistill: True\nwarm_up: False\nvit_mask_token: false\n"
                                  << "optimizer: {opt: adamW, lr: 2e-4, weight_decay: 0.02}\n"
                                  << "schedular: {sched: cosine, lr: 2e-4, epochs: 1, min_lr: 1e-6, decay_rate: 1, "
                                     "warmup_lr: 2e-4, warmup_epochs: 1, cooldown_epochs: 0}\n"
                                  << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, "
                                     "mlp_ratio: 4}\n";
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " ve --config " + dir + "/ve.yaml --checkpoint " +
                            data_path("simla/simla_pretrain_tiny.pth") + " --output_dir " + dir +
                            "/run --threads 1 --workers 1",
                        &output),
            0)
      << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 1u) << output;
  EXPECT_TRUE(std::isfinite(std::stod(log[0]["train_loss"].get<std::string>()))) << log[0].dump();
  EXPECT_TRUE(log[0].contains("test_acc")) << log[0].dump();
}

TEST(VeCli, DataParallelEvaluationEqualsOneProcess) {
  // Two ranks evaluate half the items each; their logits are summed into the same predictions.
  const std::string dir = make_temp_dir("ve_launch");
  const std::string config = write_ve_config(dir);
  std::string output;
  ASSERT_EQ(run_command(joined(ve_args(config, dir + "/run")) + " --epochs 1", &output), 0) << output;
  const std::string evaluate = " ve --config " + config + " --checkpoint " + dir + "/run/checkpoint_00.pth --evaluate";
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + evaluate + " --output_dir " + dir + "/one --threads 1", &output), 0)
      << output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " launch --nproc 2 --" + evaluate + " --output_dir " + dir +
                            "/two --threads 1",
                        &output),
            0)
      << output;
  for (const char* split : {"val", "test"}) {
    std::ifstream one(dir + "/one/" + split + "_predictions.json"), two(dir + "/two/" + split + "_predictions.json");
    const nlohmann::json a = nlohmann::json::parse(one), b = nlohmann::json::parse(two);
    ASSERT_EQ(a.size(), 3u);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i]["prediction"], b[i]["prediction"]) << split << " " << i;
      for (size_t c = 0; c < 3; ++c)
        EXPECT_NEAR(a[i]["probabilities"][c].get<double>(), b[i]["probabilities"][c].get<double>(), 1e-5);
    }
  }
  EXPECT_EQ(read_json_lines(dir + "/one/log.txt"), read_json_lines(dir + "/two/log.txt"));
}

TEST(VeCli, EvaluateRefusesACheckpointWithoutTheClassifier) {
  // VE.py --evaluate would load a pretraining checkpoint without its text encoder and say nothing.
  const std::string dir = make_temp_dir("ve_evaluate_pretrain");
  std::string output;
  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " ve --config " + write_ve_config(dir) + " --checkpoint " +
                            data_path("tiny/albef_pretrain_tiny.pth") + " --output_dir " + dir + "/eval --evaluate",
                        &output),
            0);
  EXPECT_NE(output.find("cls_head.0.weight"), std::string::npos) << output;
}

TEST(VeCli, ResumeAfterSigkillMatchesUninterruptedRun) {
  const std::string dir = make_temp_dir("ve_resume");
  std::ifstream in(source_path("data/coco-by/ve/train.json"));
  const nlohmann::json all = nlohmann::json::parse(in);
  std::ofstream(dir + "/train.json") << nlohmann::json(std::vector<nlohmann::json>(all.begin(), all.begin() + 24)).dump();
  const std::string config = write_ve_config(dir, dir + "/train.json", 4);
  std::string output;
  std::vector<std::string> args = ve_args(config, dir + "/straight");
  for (const char* extra : {"--epochs", "2", "--save_every_steps", "2"}) args.push_back(extra);
  ASSERT_EQ(run_command(joined(args), &output), 0) << output;

  args = ve_args(config, dir + "/killed");
  for (const char* extra : {"--epochs", "2", "--save_every_steps", "2"}) args.push_back(extra);
  ASSERT_TRUE(albef::testing::run_until_file_then_kill(args, dir + "/killed/checkpoint_01_step000002.pth"));
  ASSERT_FALSE(fs::exists(dir + "/killed/checkpoint_01.pth")) << "the run finished before it was killed";
  ASSERT_EQ(run_command(joined(args) + " --resume", &output), 0) << output;
  EXPECT_NE(output.find("resuming from"), std::string::npos) << output;
  albef::testing::expect_same_training(dir + "/straight", dir + "/killed", {"loss", "lr"}, 12);
}

TEST(VeCli, TheBundledDemoLearns) {
  // A few epochs on the bundled demo items: the loss falls.
  const std::string dir = make_temp_dir("ve_demo");
  const std::string config = write_ve_config(dir, source_path("data/coco-by/ve/train.json"), 16, "5e-4");
  std::string output;
  ASSERT_EQ(run_command(joined(ve_args(config, dir + "/run")) + " --epochs 3", &output), 0) << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 3u);
  EXPECT_LT(std::stod(log[2]["train_loss"].get<std::string>()), std::stod(log[0]["train_loss"].get<std::string>()))
      << log[0].dump() << "\n" << log[2].dump();
}

}  // namespace
