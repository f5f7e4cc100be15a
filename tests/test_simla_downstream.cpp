// SIMLA's NLVR2 model (models/simla/nlvr.py, converted as Pretrain_NLVR.py
// converts) and its Grad-CAM grounding (Grounding.py's val() on the
// single-stream BERT) against PyTorch: tests/python/make_simla_downstream_reference.py
// runs bench/albef_torch.py's restatement on the tiny SIMLA checkpoint. Then
// `albef pretrain_nlvr`, `nlvr` and `gradcam` from that checkpoint.

#include "albef/io/npy.h"
#include "albef/tasks/grounding.h"
#include "albef/tasks/nlvr.h"
#include "tasks/classification/classifier.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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

const std::string kCheckpoint = data_path("simla/simla_pretrain_tiny.pth");

// The PyTorch run's inputs and outputs, once per test program.
at::Tensor reference(const std::string& name) {
  static const std::string dir = [] {
    const std::string d = make_temp_dir("simla_downstream_reference");
    std::string output;
    EXPECT_EQ(run_command(std::string("cd ") + ALBEF_SOURCE_DIR + " && " + ALBEF_PYTHON3 +
                              " tests/python/make_simla_downstream_reference.py " + d,
                          &output),
              0)
        << output;
    return d;
  }();
  return albef::io::read_npy(dir + "/" + name + ".npy");
}

// The tiny SIMLA sizes as ALBEF's config_bert.json states them (fusion_layer
// 2 of 4), which SIMLA's NLVR configs name.
std::string write_two_stream_bert(const std::string& dir) {
  std::ifstream in(data_path("simla/shared_bert_tiny.json"));
  nlohmann::json bert = nlohmann::json::parse(in);
  bert.erase("add_cross_attention");
  bert["fusion_layer"] = 2;
  std::ofstream(dir + "/config_bert_tiny.json") << bert.dump(2);
  return dir + "/config_bert_tiny.json";
}

// A config for the tiny SIMLA model; `extra` adds keys (data files, schedule).
std::string write_config(const std::string& dir, const std::string& bert_config, const std::string& extra,
                         bool simla_key = true) {
  std::ofstream(dir + "/config.yaml")
      << "bert_config: '" << bert_config << "'\nimage_res: 64\nvision_width: 64\nembed_dim: 32\n"
      << "alpha: 0.4\ndistill: true\nwarm_up: true\neval_ema: false\n" << (simla_key ? "vit_mask_token: false\n" : "")
      << "optimizer: {opt: adamW, lr: 2.0e-4, weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: 2.0e-4, epochs: 1, min_lr: 1.0e-06, decay_rate: 1, warmup_lr: 2.0e-4, "
         "warmup_epochs: 1, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n"
      << extra;
  return dir + "/config.yaml";
}

albef::BertLayerImpl& layer(albef::AlbefModel& model, int64_t index) {
  return *model->text_bert()->layer[index]->as<albef::BertLayer>();
}

TEST(SimlaNlvr, ModelLossAndGradientsAreSimlasNlvrPy) {
  const std::string dir = make_temp_dir("simla_nlvr_model");
  // SIMLA's own NLVR configs name ALBEF's config_bert.json and carry vit_mask_token; a
  // single-stream bert_config says SIMLA as well. Both build the same model.
  for (const std::string& bert_config : {write_two_stream_bert(dir), data_path("simla/shared_bert_tiny.json")}) {
    SCOPED_TRACE(bert_config);
    const albef::Config config = albef::load_config(write_config(dir, bert_config, ""));
    ASSERT_TRUE(albef::is_simla_config(config));
    albef::AlbefModel model(config, albef::nlvr_model_options(config, /*momentum_encoders=*/false));
    const albef::LoadReport report = albef::load_checkpoint(model, kCheckpoint);
    EXPECT_EQ(report.missing_keys, (Keys{"cls_head.0.weight", "cls_head.0.bias", "cls_head.2.weight", "cls_head.2.bias"}));

    // 2 + 2 x 2 layers, every one cross-attending; the doubled pairs (2, 3) and (4, 5) share keys and values.
    ASSERT_EQ(model->text_bert()->layer->size(), 6u);
    for (int64_t i = 0; i < 6; ++i) ASSERT_TRUE(layer(model, i).crossattention) << i;
    auto key_of = [&](int64_t i) { return layer(model, i).crossattention->self->key.get(); };
    EXPECT_NE(key_of(0), key_of(1));
    EXPECT_EQ(key_of(2), key_of(3));
    EXPECT_EQ(key_of(4), key_of(5));
    EXPECT_NE(key_of(3), key_of(4));
    EXPECT_EQ(state_tensor(model, "text_encoder.embeddings.token_type_embeddings.weight").abs().max().item<double>(), 0.0);

    for (const std::string& name : {"0.weight", "0.bias", "2.weight", "2.bias"})
      state_tensor(model, "cls_head." + name).detach().copy_(reference("cls_head." + name));
    model->eval();
    const at::Tensor logits = albef::classification::classify(
        model, "cls_head",
        albef::classification::fuse_items(model, false, reference("images"), reference("input_ids"),
                                          reference("attention_mask")));
    EXPECT_TENSOR_NEAR(logits, reference("nlvr_logits"), 1e-5);
    const at::Tensor loss = at::cross_entropy_loss(logits, reference("targets"));
    EXPECT_NEAR(loss.item<double>(), reference("nlvr_loss").item<double>(), 1e-5);
    loss.backward();
    expect_relative(state_tensor(model, "text_encoder.encoder.layer.0.crossattention.self.query.weight").grad(),
                    reference("grad_query"), 1e-4, "layer 0 query");
    expect_relative(state_tensor(model, "text_encoder.encoder.layer.3.crossattention.self.key.weight").grad(),
                    reference("grad_shared_key"), 1e-4, "layers 2-3 shared key");
  }
}

TEST(SimlaNlvr, AnAlbefConfigRefusesASimlaCheckpointByName) {
  // Without SIMLA's key the config is ALBEF's: its layers 0-1 have no cross-attention to load SIMLA's into.
  const std::string dir = make_temp_dir("simla_nlvr_refused");
  const albef::Config config = albef::load_config(write_config(dir, write_two_stream_bert(dir), "", /*simla_key=*/false));
  ASSERT_FALSE(albef::is_simla_config(config));
  albef::AlbefModel model(config, albef::nlvr_model_options(config, false));
  try {
    albef::load_checkpoint(model, kCheckpoint);
    FAIL() << "a SIMLA checkpoint loaded into ALBEF's NLVR model";
  } catch (const albef::Error& e) {
    for (const std::string needle : {"layer.0.crossattention", "SIMLA", "vit_mask_token", "config.yaml"})
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(SimlaGrounding, GradcamIsSimlasGroundingPy) {
  // Grounding.py on SIMLA's retrieval model: itm reads the cross-attention of a layer of the
  // single-stream BERT run in multimodal mode from the words; itc its text mode.
  const albef::Config config = albef::load_config(data_path("simla/Pretrain_tiny.yaml"));
  albef::AlbefModel model(config, albef::grounding_model_options(true));
  albef::load_checkpoint(model, kCheckpoint);
  model->eval();
  const at::Tensor images = reference("images").slice(0, 0, 2);
  for (const auto& [mode, name] : {std::pair{albef::GradcamMode::Itm, "gradcam_itm"},
                                   std::pair{albef::GradcamMode::Itc, "gradcam_itc"}}) {
    const albef::Gradcam gradcam =
        albef::compute_gradcam(model, images, reference("input_ids"), reference("attention_mask"), {mode, 1});
    expect_relative(gradcam.maps, reference(name), 1e-4, name);
  }
}

TEST(SimlaDownstreamCli, PretrainsTextAssignmentFineTunesNlvrAndDrawsGradcam) {
  const std::string dir = make_temp_dir("simla_downstream_cli");
  const std::string bert = write_two_stream_bert(dir);
  auto run = [&](const std::string& args) {
    std::string output;
    EXPECT_EQ(run_command(std::string(ALBEF_CLI) + " " + args + " --threads 1", &output), 0) << args << "\n" << output;
    return output;
  };
  fs::create_directories(dir + "/ta");
  const std::string ta_config = write_config(
      dir + "/ta", bert, "train_file: ['" + source_path("data/coco-by/captions.json") + "']\nbatch_size: 4\n");
  run("pretrain_nlvr --config " + ta_config + " --checkpoint " + kCheckpoint + " --output_dir " + dir +
      "/ta/run --workers 1");
  const std::string ta_checkpoint = dir + "/ta/run/checkpoint_00.pth";
  ASSERT_TRUE(fs::exists(ta_checkpoint));

  fs::create_directories(dir + "/nlvr");
  const std::string nlvr_config =
      write_config(dir + "/nlvr", bert,
                   "train_file: ['" + source_path("data/coco-by/nlvr/train.json") + "']\nval_file: ['" +
                       source_path("data/coco-by/nlvr/test.json") + "']\ntest_file: ['" +
                       source_path("data/coco-by/nlvr/test.json") + "']\nimage_root: '" +
                       source_path("data/coco-by") + "'\nbatch_size: 16\n");
  run("nlvr --config " + nlvr_config + " --checkpoint " + ta_checkpoint + " --output_dir " + dir + "/nlvr/run --workers 1");
  const auto log = read_json_lines(dir + "/nlvr/run/log.txt");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(std::isfinite(std::stod(log[0]["train_loss"].get<std::string>()))) << log[0].dump();
  EXPECT_TRUE(log[0].contains("val_acc") && log[0].contains("test_acc")) << log[0].dump();

  fs::create_directories(dir + "/gradcam");
  run("gradcam --config " + write_config(dir + "/gradcam", data_path("simla/shared_bert_tiny.json"), "") +
      " --checkpoint " + kCheckpoint + " --image " + source_path("data/coco-by/images/000000000790.jpg") +
      " --text 'the birthday cake on the table' --block_num 3 --out " + dir + "/gradcam/maps");
  std::ifstream in(dir + "/gradcam/maps/gradcam.json");
  const nlohmann::json manifest = nlohmann::json::parse(in);
  ASSERT_EQ(manifest.size(), 1u);
  const at::Tensor map = albef::io::read_npy(dir + "/gradcam/maps/" + manifest[0]["map"].get<std::string>());
  EXPECT_EQ(map.sizes(), (at::IntArrayRef{4, 4}));
  EXPECT_GT(map.abs().max().item<double>(), 0.0);
}

}  // namespace
