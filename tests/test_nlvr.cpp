// NLVR2 (Pretrain_nlvr.py, NLVR.py; models/model_pretrain_nlvr.py,
// model_nlvr.py) against the official code's `scaled` fixtures: the tiny
// model's 4 layers become 2 + 2 x 2 = 6, fusion layers 2..5 alternating
// between the two images, cross-attention keys and values shared in pairs.

#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/tasks/nlvr.h"
#include "albef/train/optimizer.h"
#include "tasks/classification/classifier.h"
#include "tasks/nlvr/data.h"
#include "tasks/nlvr/model.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <set>

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

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("nlvr/npy/" + name + ".npy")); }

nlohmann::json recorded() {
  std::ifstream in(data_path("nlvr/nlvr.json"));
  return nlohmann::json::parse(in);
}

// NLVR_tiny.yaml / NLVR_pretrain_tiny.yaml with absolute paths; val_file and
// test_file are the fixture pairs, train_file too unless given.
std::string write_nlvr_config(const std::string& dir, const std::string& train_file = "") {
  const std::string pairs = data_path("nlvr/nlvr_pairs.json");
  std::ofstream(dir + "/NLVR_tiny.yaml")
      << "train_file: ['" << (train_file.empty() ? pairs : train_file) << "']\nval_file: ['" << pairs
      << "']\ntest_file: ['" << pairs << "']\n"
      << "image_root: '" << source_path("data/coco-by") << "'\n"
      << "bert_config: '" << data_path("tiny/config_bert.json") << "'\n"
      << "image_res: 32\nbatch_size: 2\nalpha: 0.4\ndistill: true\nwarm_up: true\neval_ema: false\n"
      << "optimizer: {opt: adamW, lr: 2.0e-05, weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: 2.0e-05, epochs: 10, min_lr: 1.0e-06, decay_rate: 1, warmup_lr: 1.0e-05, "
         "warmup_epochs: 1, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  return dir + "/NLVR_tiny.yaml";
}

std::string write_ta_config(const std::string& dir) {
  std::ofstream(dir + "/NLVR_pretrain_tiny.yaml")
      << "train_file: ['" << source_path("data/coco-by/captions.json") << "']\n"
      << "bert_config: '" << data_path("tiny/config_bert.json") << "'\n"
      << "image_res: 32\nvision_width: 64\nembed_dim: 32\nbatch_size: 4\n"
      << "optimizer: {opt: adamW, lr: 2.0e-05, weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: 2.0e-05, epochs: 1, min_lr: 1.0e-05, decay_rate: 1, warmup_lr: 1.0e-05, "
         "warmup_epochs: 1, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  return dir + "/NLVR_pretrain_tiny.yaml";
}

// The TA model after Pretrain_nlvr.py's load of the tiny pretraining
// checkpoint (+ the ta_head it leaves random, recorded by the fixture).
albef::AlbefModel load_ta_model(albef::LoadReport* report = nullptr) {
  const std::string dir = make_temp_dir("nlvr_ta_model");
  const albef::Config config = albef::load_config(write_ta_config(dir));
  albef::AlbefModel model(config, albef::text_assignment_model_options(config));
  const albef::LoadReport loaded = albef::load_checkpoint(model, data_path("tiny/albef_pretrain_tiny.pth"));
  if (report) *report = loaded;
  albef::load_state_dict(model, albef::io::state_dict_from(
                                    albef::io::read_torch_file(data_path("nlvr/ta_extras_after_load.pth")), "extras"),
                         "ta_extras_after_load.pth");
  return model;
}

// The NLVR model as NLVR.py builds it: init (copy_params), load the TA
// state, then the entries the load leaves random (cls_head and the momentum
// model, recorded by the fixture). The momentum word embeddings are kept as
// the rows the fixture's texts use (the rest are never read), to keep
// tests/data small.
albef::AlbefModel load_nlvr_model(albef::LoadReport* report = nullptr) {
  albef::AlbefModel ta = load_ta_model();
  const std::string dir = make_temp_dir("nlvr_model");
  const albef::Config config = albef::load_config(write_nlvr_config(dir));
  albef::AlbefModel model(config, albef::nlvr_model_options(config, true));
  model->init_weights();
  const albef::LoadReport loaded = albef::load_state_dict(model, albef::state_dict(*ta), "ta state");
  if (report) *report = loaded;
  albef::load_state_dict(model, albef::io::state_dict_from(
                                    albef::io::read_torch_file(data_path("nlvr/nlvr_extras_after_load.pth")), "extras"),
                         "nlvr_extras_after_load.pth");
  at::NoGradGuard no_grad;
  state_tensor(model, "text_encoder_m.embeddings.word_embeddings.weight")
      .zero_()
      .index_copy_(0, fixture("extras_word_row_ids"), fixture("extras_word_rows"));
  return model;
}

bool shares_storage(albef::AlbefModel& model, const std::string& a, const std::string& b) {
  return state_tensor(model, a).data_ptr() == state_tensor(model, b).data_ptr();
}

TEST(NlvrModel, TextAssignmentKeysFollowPretrainNlvrPy) {
  using albef::ta_checkpoint_keys;
  EXPECT_EQ(ta_checkpoint_keys("text_encoder.bert.encoder.layer.7.output.dense.weight", 6),
            (Keys{"text_encoder.encoder.layer.8.output.dense.weight", "text_encoder.encoder.layer.9.output.dense.weight"}));
  EXPECT_EQ(ta_checkpoint_keys("text_encoder.bert.encoder.layer.11.crossattention.self.key.bias", 6),
            (Keys{"text_encoder.encoder.layer.16.crossattention.self.key.bias",
                  "text_encoder.encoder.layer.17.crossattention.self.key.bias"}));
  EXPECT_EQ(ta_checkpoint_keys("text_encoder.bert.encoder.layer.5.attention.self.query.weight", 6),
            (Keys{"text_encoder.encoder.layer.5.attention.self.query.weight"}));
  EXPECT_EQ(ta_checkpoint_keys("text_encoder.bert.embeddings.LayerNorm.weight", 6),
            (Keys{"text_encoder.embeddings.LayerNorm.weight"}));
  EXPECT_EQ(ta_checkpoint_keys("text_encoder.cls.predictions.bias", 6), (Keys{"text_encoder.cls.predictions.bias"}));
  EXPECT_EQ(ta_checkpoint_keys("visual_encoder.pos_embed", 6), (Keys{"visual_encoder.pos_embed"}));
}

TEST(NlvrModel, TextAssignmentConversionMatchesOfficial) {
  albef::LoadReport report;
  albef::AlbefModel model = load_ta_model(&report);
  const nlohmann::json ta = recorded()["ta"];
  const albef::io::StateDict state = albef::state_dict(*model);
  ASSERT_EQ(state.size(), ta["state_dict_keys"].size());
  for (size_t i = 0; i < state.size(); ++i) {  // [name, shape, dtype]
    EXPECT_EQ(state[i].first, ta["state_dict_keys"][i][0].get<std::string>()) << "entry " << i;
    EXPECT_EQ(state[i].second.sizes().vec(), ta["state_dict_keys"][i][1].get<std::vector<int64_t>>()) << state[i].first;
  }
  for (const auto& group : ta["shared_storage_groups"])
    for (size_t i = 1; i < group.size(); ++i)
      EXPECT_TRUE(shares_storage(model, group[0].get<std::string>(), group[i].get<std::string>())) << group.dump();
  EXPECT_EQ(report.missing_keys, ta["load_missing_keys"].get<Keys>());
  // The official message names the converted keys; ours the checkpoint's.
  std::multiset<std::string> unexpected;
  for (const std::string& key : report.unexpected_keys)
    for (const std::string& converted : albef::ta_checkpoint_keys(key, 2)) unexpected.insert(converted);
  const Keys official = ta["load_unexpected_keys"].get<Keys>();
  EXPECT_EQ(unexpected, std::multiset<std::string>(official.begin(), official.end()));
  for (const auto& [key, origin] : ta["keys_given_with_origin"].items()) {
    const Keys converted = albef::ta_checkpoint_keys(origin.get<std::string>(), 2);
    EXPECT_NE(std::find(converted.begin(), converted.end(), key), converted.end()) << key << " <- " << origin;
  }
  albef::testing::expect_state_manifest(model, data_path("nlvr/ta_state_manifest.json"));
  for (const std::string& name : {"text_encoder.encoder.layer.1.attention.self.query.weight",
                                  "text_encoder.encoder.layer.2.crossattention.self.query.weight",
                                  "text_encoder.encoder.layer.3.crossattention.self.query.weight",
                                  "text_encoder.encoder.layer.4.crossattention.self.query.weight",
                                  "text_encoder.encoder.layer.5.crossattention.self.query.weight",
                                  "text_encoder.encoder.layer.4.crossattention.self.key.weight",
                                  "text_encoder.encoder.layer.5.output.dense.weight", "ta_head.weight", "temp"})
    EXPECT_TRUE(state_tensor(model, name).equal(fixture("ta__" + name))) << name;
}

TEST(NlvrModel, TextAssignmentStepTrains) {
  albef::AlbefModel model = load_ta_model();
  model->train();
  at::manual_seed(3);
  const at::Tensor images = at::randn({6, 3, 32, 32});
  const at::Tensor ids = fixture("nlvr__inputs__input_ids").repeat({3, 1});
  const at::Tensor mask = fixture("nlvr__inputs__attention_mask").repeat({3, 1});
  const albef::TextAssignmentOutputs out = albef::text_assignment_forward(model, images, ids, mask);
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{6, 3}));
  EXPECT_TRUE(out.labels.ge(0).logical_and(out.labels.le(2)).all().item<bool>());
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  out.loss.backward();
  EXPECT_TRUE(state_tensor(model, "ta_head.weight").grad().defined());
  EXPECT_THROW(albef::text_assignment_forward(model, images.slice(0, 0, 2), ids.slice(0, 0, 2), mask.slice(0, 0, 2)),
               albef::Error);
}

TEST(NlvrModel, FineTuneLoadsAsNlvrPyWithItsMomentumQuirk) {
  albef::LoadReport report;
  albef::AlbefModel model = load_nlvr_model(&report);
  const nlohmann::json nlvr = recorded()["nlvr"];
  EXPECT_EQ(report.missing_keys, nlvr["load_missing_keys"].get<Keys>());
  EXPECT_EQ(report.unexpected_keys, nlvr["load_unexpected_keys"].get<Keys>());
  for (const auto& group : nlvr["shared_storage_groups"])
    for (size_t i = 1; i < group.size(); ++i)
      EXPECT_TRUE(shares_storage(model, group[0].get<std::string>(), group[i].get<std::string>())) << group.dump();
  // Only the text encoder's pairs share; the momentum model's pairs share too.
  EXPECT_FALSE(shares_storage(model, "text_encoder.encoder.layer.2.crossattention.self.query.weight",
                              "text_encoder.encoder.layer.3.crossattention.self.query.weight"));
  // The momentum weights were copied before the load: they are not the loaded ones.
  for (const auto& [name, equal] : nlvr["momentum_equals_loaded_online"].items()) {
    const std::string online = name.substr(0, name.find("_m.")) + name.substr(name.find("_m.") + 2);
    EXPECT_EQ(state_tensor(model, name).equal(state_tensor(model, online)), equal.get<bool>()) << name;
  }
  std::vector<std::string> trainable;
  for (const auto& [name, parameter] : albef::unique_named_parameters(*model))
    if (parameter.requires_grad()) trainable.push_back(name);
  EXPECT_EQ(static_cast<int64_t>(trainable.size()), nlvr["params_requiring_grad"].get<int64_t>());
  albef::testing::expect_state_manifest(model, data_path("nlvr/nlvr_state_after_load_manifest.json"),
                                        [](const std::string& name) { return name.find("_m.") != std::string::npos; });
}

TEST(NlvrModel, TrainingLossAndGradientsMatchOfficial) {
  albef::AlbefModel model = load_nlvr_model();
  model->train();
  const albef::classification::TrainOutputs out = albef::classification::train_forward(
      model, fixture("nlvr__inputs__images"), fixture("nlvr__inputs__input_ids"),
      fixture("nlvr__inputs__attention_mask"), fixture("nlvr__inputs__targets"), 0.4, /*distill=*/true);
  EXPECT_NEAR(out.loss.item<double>(), 0.700384, kTolerance);
  EXPECT_NEAR(out.loss.item<double>(), fixture("nlvr__train__loss").item<double>(), kTolerance);
  EXPECT_TENSOR_NEAR(out.prediction, fixture("nlvr__train__prediction"), kTolerance);
  EXPECT_TENSOR_NEAR(out.prediction_m, fixture("nlvr__train__prediction_m"), kTolerance);
  EXPECT_TENSOR_NEAR(out.last_hidden_state, fixture("nlvr__train__last_hidden_state"), kTolerance);
  out.loss.backward();
  for (const std::string& name : {"cls_head.0.weight", "cls_head.2.weight",
                                  "text_encoder.encoder.layer.0.attention.self.query.weight",
                                  "text_encoder.encoder.layer.2.crossattention.self.query.weight",
                                  "text_encoder.encoder.layer.3.crossattention.self.query.weight",
                                  "text_encoder.encoder.layer.3.crossattention.self.key.weight",
                                  "text_encoder.encoder.layer.5.crossattention.self.value.weight",
                                  "visual_encoder.blocks.1.attn.qkv.weight", "visual_encoder.pos_embed"})
    expect_relative(state_tensor(model, name).grad(), fixture("nlvr__train__grad__" + name), 1e-4, name);
  // The shared key has one gradient, both layers' summed.
  EXPECT_EQ(state_tensor(model, "text_encoder.encoder.layer.2.crossattention.self.key.weight").grad().data_ptr(),
            state_tensor(model, "text_encoder.encoder.layer.3.crossattention.self.key.weight").grad().data_ptr());
}

TEST(NlvrModel, EvaluationPredictsAsOfficial) {
  albef::AlbefModel model = load_nlvr_model();
  model->eval();
  at::NoGradGuard no_grad;
  const at::Tensor logits = albef::classification::classify(
      model, "cls_head",
      albef::classification::fuse_items(model, false, fixture("nlvr__inputs__images"), fixture("nlvr__inputs__input_ids"),
                                        fixture("nlvr__inputs__attention_mask")));
  EXPECT_TENSOR_NEAR(logits, fixture("nlvr__eval__prediction"), kTolerance);
  EXPECT_TRUE(logits.argmax(1).equal(fixture("nlvr__eval__pred_class")));
}

TEST(NlvrModel, FullSizeKeysAndShapesAreTheOfficialOnes) {
  const albef::Config ta_config = albef::load_config(source_path("configs/NLVR_pretrain.yaml"));
  albef::AlbefModel ta(ta_config, albef::text_assignment_model_options(ta_config));
  albef::testing::expect_official_keys(ta, data_path("keys/pretrain_nlvr.json"));
  const albef::Config config = albef::load_config(source_path("configs/NLVR.yaml"));
  albef::AlbefModel model(config, albef::nlvr_model_options(config, true));
  albef::testing::expect_official_keys(model, data_path("keys/nlvr.json"));
}

TEST(NlvrData, PairsAsTheOfficialDatasetAndBadItemsNamed) {
  const albef::classification::LabeledSet set =
      albef::nlvr::load_pairs({data_path("nlvr/nlvr_pairs.json")}, "/root");
  ASSERT_EQ(set.items.size(), 2u);
  EXPECT_EQ(set.items[0].images, (Keys{"/root/images/000000000790.jpg", "/root/images/000000078499.jpg"}));
  EXPECT_EQ(set.items[0].label, 1);
  EXPECT_EQ(set.items[1].label, 0);
  const std::string dir = make_temp_dir("nlvr_bad_items");
  const auto expect_error = [&](const std::string& content, const std::string& needle) {
    std::ofstream(dir + "/bad.json") << content;
    try {
      albef::nlvr::load_pairs({dir + "/bad.json"}, "");
      ADD_FAILURE() << "no error for " << content;
    } catch (const albef::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("bad.json"), std::string::npos) << message;
      EXPECT_NE(message.find(needle), std::string::npos) << message;
    }
  };
  expect_error(R"([{"images": ["a.jpg", "b.jpg"], "sentence": "s", "label": "true"}])", "entry 0: \"label\"");
  expect_error(R"([{"images": ["a.jpg", "b.jpg"], "sentence": "s", "label": "True"}, {"images": ["a.jpg"], "sentence": "s", "label": "True"}])",
               "entry 1: \"images\"");
  expect_error(R"([{"images": ["a.jpg", "b.jpg"], "label": "False"}])", "sentence");
}

class NlvrCli : public ::testing::Test {
 protected:
  // A text-assignment checkpoint trained for a few steps from the tiny one.
  static void SetUpTestSuite() {
    dir_ = make_temp_dir("nlvr_cli");
    std::string output;
    ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " pretrain_nlvr --config " + write_ta_config(dir_) +
                              " --checkpoint " + data_path("tiny/albef_pretrain_tiny.pth") + " --output_dir " + dir_ +
                              "/ta --threads 1 --workers 1",
                          &output),
              0)
        << output;
    EXPECT_NE(output.find("loaded"), std::string::npos) << output;
    ta_checkpoint_ = dir_ + "/ta/checkpoint_00.pth";
  }
  static std::string dir_, ta_checkpoint_;
};
std::string NlvrCli::dir_, NlvrCli::ta_checkpoint_;

TEST_F(NlvrCli, PretrainNlvrWritesACheckpointNlvrLoads) {
  ASSERT_TRUE(fs::exists(ta_checkpoint_));
  const auto log = read_json_lines(dir_ + "/ta/log.txt");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(log[0].contains("train_loss"));
  const albef::Config config = albef::load_config(write_nlvr_config(dir_));
  albef::AlbefModel model(config, albef::nlvr_model_options(config, false));
  const albef::LoadReport report = albef::load_checkpoint(model, ta_checkpoint_);
  EXPECT_EQ(report.missing_keys, (Keys{"cls_head.0.weight", "cls_head.0.bias", "cls_head.2.weight", "cls_head.2.bias"}));
}

TEST_F(NlvrCli, FineTunesEvaluatesAndPredicts) {
  const std::string config = write_nlvr_config(dir_);
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " nlvr --config " + config + " --checkpoint " + ta_checkpoint_ +
                            " --output_dir " + dir_ + "/nlvr --epochs 2 --threads 1 --workers 1",
                        &output),
            0)
      << output;
  const auto log = read_json_lines(dir_ + "/nlvr/log.txt");
  ASSERT_EQ(log.size(), 2u);
  for (const char* key : {"train_loss", "train_lr", "val_acc", "test_acc", "epoch"}) EXPECT_TRUE(log[1].contains(key)) << key;
  EXPECT_TRUE(fs::exists(dir_ + "/nlvr/checkpoint_best.pth"));
  EXPECT_TRUE(fs::exists(dir_ + "/nlvr/loss_curve.png"));
  std::ifstream in(dir_ + "/nlvr/test_predictions.json");
  const nlohmann::json predictions = nlohmann::json::parse(in);
  ASSERT_EQ(predictions.size(), 2u);
  for (const auto& entry : predictions) {
    EXPECT_TRUE(entry["prediction"] == 0 || entry["prediction"] == 1);
    EXPECT_NEAR(entry["probabilities"][0].get<double>() + entry["probabilities"][1].get<double>(), 1.0, 1e-9);
  }

  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " nlvr --config " + config + " --checkpoint " + dir_ +
                            "/nlvr/checkpoint_best.pth --output_dir " + dir_ + "/eval --evaluate --threads 1",
                        &output),
            0)
      << output;
  const auto eval_log = read_json_lines(dir_ + "/eval/log.txt");
  ASSERT_EQ(eval_log.size(), 1u);
  EXPECT_TRUE(eval_log[0].contains("val_acc") && eval_log[0].contains("test_acc"));

  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " nlvr --predict --config " + config + " --checkpoint " + dir_ +
                            "/nlvr/checkpoint_best.pth --image " + source_path("data/coco-by/images/000000000790.jpg") +
                            " --image " + source_path("data/coco-by/images/000000078499.jpg") +
                            " --text 'The left image shows a cake.' --text 'Both images show horses.' --json --threads 1",
                        &output),
            0)
      << output;
  const nlohmann::json answers = nlohmann::json::parse(output.substr(output.find('[')));
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_TRUE(answers[0]["prediction"] == "True" || answers[0]["prediction"] == "False");
  EXPECT_NEAR(answers[1]["probabilities"]["True"].get<double>() + answers[1]["probabilities"]["False"].get<double>(), 1.0,
              1e-9);
}

TEST_F(NlvrCli, TheBundledDemoLearns) {
  // A few epochs on the bundled demo pairs (data/coco-by/nlvr): the loss falls.
  const std::string dir = make_temp_dir("nlvr_demo");
  std::string config = write_nlvr_config(dir, source_path("data/coco-by/nlvr/train.json"));
  std::string text;
  {
    std::ifstream in(config);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"batch_size: 2", "batch_size: 16"}, {"lr: 2.0e-05", "lr: 5e-4"}, {"warmup_lr: 1.0e-05", "warmup_lr: 5e-4"}})
    text.replace(text.find(from), from.size(), to);
  std::ofstream(config) << text;
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " nlvr --config " + config + " --checkpoint " + ta_checkpoint_ +
                            " --output_dir " + dir + "/run --epochs 3 --threads 1 --workers 1",
                        &output),
            0)
      << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 3u);
  EXPECT_LT(std::stod(log[2]["train_loss"].get<std::string>()), std::stod(log[0]["train_loss"].get<std::string>()))
      << log[0].dump() << "\n" << log[2].dump();
}

TEST_F(NlvrCli, MomentumFromCheckpointIsTheDocumentedAlternative) {
  // NLVR.py's order leaves the momentum model at the random init; the flag starts it from the checkpoint.
  const std::string config = write_nlvr_config(dir_);
  const auto distance_after_one_epoch = [&](const std::string& name, const std::string& flag) {
    std::string output;
    EXPECT_EQ(run_command(std::string(ALBEF_CLI) + " nlvr --config " + config + " --checkpoint " + ta_checkpoint_ +
                              " --output_dir " + dir_ + "/" + name + " --epochs 1 --threads 1 --workers 1" + flag,
                          &output),
              0)
        << output;
    const albef::io::StateDict state =
        albef::io::state_dict_from(albef::io::read_torch_file(dir_ + "/" + name + "/checkpoint_00.pth"), name);
    at::Tensor online, momentum;
    for (const auto& [key, tensor] : state) {
      if (key == "text_encoder.encoder.layer.0.attention.self.query.weight") online = tensor;
      if (key == "text_encoder_m.encoder.layer.0.attention.self.query.weight") momentum = tensor;
    }
    return (online - momentum).abs().max().item<double>();
  };
  EXPECT_GT(distance_after_one_epoch("official_order", ""), 1e-2);
  EXPECT_LT(distance_after_one_epoch("from_checkpoint", " --momentum-from-checkpoint"), 1e-3);
}

TEST_F(NlvrCli, BadInputNamesTheFileAndSkipsUnreadableTrainingImages) {
  std::ifstream in(data_path("nlvr/nlvr_pairs.json"));
  nlohmann::json pairs = nlohmann::json::parse(in);
  nlohmann::json train = pairs;
  for (int i = 0; i < 3; ++i) train.push_back(pairs[i % 2]);
  train.push_back({{"images", {"images/missing.jpg", "images/000000078499.jpg"}}, {"sentence", "s"}, {"label", "True"}});
  const std::string dir = make_temp_dir("nlvr_bad_input");
  std::ofstream(dir + "/train.json") << train.dump();
  const std::string config = write_nlvr_config(dir, dir + "/train.json");
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " nlvr --config " + config + " --checkpoint " + ta_checkpoint_ +
                            " --output_dir " + dir + "/run --epochs 1 --threads 1 --workers 1",
                        &output),
            0)
      << output;
  EXPECT_NE(output.find("skipped 1 unreadable image(s)"), std::string::npos) << output;
  EXPECT_NE(output.find("missing.jpg"), std::string::npos) << output;

  // A wrong label is an error naming the file and the item, before anything is written.
  train[1]["label"] = "yes";
  std::ofstream(dir + "/train.json") << train.dump();
  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " nlvr --config " + config + " --output_dir " + dir +
                            "/bad --epochs 1 --threads 1",
                        &output),
            0);
  EXPECT_NE(output.find("train.json: entry 1: \"label\""), std::string::npos) << output;
  EXPECT_FALSE(fs::exists(dir + "/bad/log.txt"));
}

}  // namespace
