// Checkpoints in LAVIS's layout load as the official ones do, `albef convert`
// goes both ways without losing a bit, and `albef info` names every model.

#include "albef/config/config.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/checkpoint_layout.h"
#include "tasks/checkpoint_info.h"
#include "tasks/registry.h"
#include "tiny_model.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <map>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;

namespace {

const std::string kTiny = data_path("tiny/albef_pretrain_tiny.pth");

// The tiny official checkpoint as LAVIS would save the same model, built in
// Python from LAVIS's naming (tests/python/make_lavis_checkpoint.py).
std::string make_lavis_checkpoint(const std::string& dir) {
  const std::string path = dir + "/lavis_pretrain_tiny.pth";
  std::string output;
  EXPECT_EQ(run_command(std::string(ALBEF_PYTHON3) + " " + source_path("tests/python/make_lavis_checkpoint.py") + " " +
                            kTiny + " " + path + " albef_pretrain 2>&1",
                        &output),
            0)
      << output;
  return path;
}

std::string run_albef(const std::string& args) {
  std::string output;
  EXPECT_EQ(run_command(std::string(ALBEF_CLI) + " " + args + " 2>&1", &output), 0) << args << "\n" << output;
  return output;
}

albef::io::StateDict read_state(const std::string& path) {
  return albef::io::state_dict_from(albef::io::read_torch_file(path), path);
}

std::map<std::string, at::Tensor> by_name(const albef::io::StateDict& state) {
  return {state.begin(), state.end()};
}

nlohmann::json scores(const std::string& checkpoint) {
  std::string args = "score --json --threads 1 --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " + checkpoint;
  for (const char* image : {"000000000790.jpg", "000000078499.jpg"})
    for (const char* text : {"a family at a table with a cake", "horses on a hill above a lake"})
      args += std::string(" --image ") + source_path("data/coco-by/images/") + image + " --text '" + text + "'";
  return nlohmann::json::parse(run_albef(args));
}

}  // namespace

TEST(CheckpointLayouts, LavisCheckpointGivesTheOfficialOutputs) {
  const std::string lavis = make_lavis_checkpoint(make_temp_dir("layouts_lavis"));
  const albef::io::StateDict state = read_state(lavis);
  for (const auto& [name, tensor] : state) {
    EXPECT_EQ(name.find("token_type_embeddings"), std::string::npos) << name;
    EXPECT_TRUE(name.find("_m.") == std::string::npos || name.find("position_ids") != std::string::npos) << name;
  }
  const nlohmann::json official = scores(kTiny), from_lavis = scores(lavis);
  ASSERT_EQ(official.size(), from_lavis.size());
  for (size_t i = 0; i < official.size(); ++i) {
    EXPECT_NEAR(from_lavis[i]["itc"].get<double>(), official[i]["itc"].get<double>(), 1e-6);
    EXPECT_NEAR(from_lavis[i]["itm"].get<double>(), official[i]["itm"].get<double>(), 1e-6);
  }
  // Loaded for training: the momentum encoders LAVIS did not save start as the online ones.
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::pretrain_model_options(), lavis);
  const auto loaded = by_name(albef::state_dict(*model));
  for (const auto& [name, tensor] : loaded)
    if (const std::string online = albef::online_twin(name); !online.empty())
      EXPECT_TRUE(at::equal(tensor, loaded.at(online))) << name;
  EXPECT_TRUE(at::equal(loaded.at("text_encoder.bert.embeddings.token_type_embeddings.weight"),
                        at::zeros({2, 64})));
}

TEST(CheckpointLayouts, ConvertRoundTripIsExact) {
  const std::string dir = make_temp_dir("layouts_round_trip");
  run_albef("convert --to lavis " + kTiny + " " + dir + "/lavis.pth");
  run_albef("convert --to official " + dir + "/lavis.pth " + dir + "/official.pth");

  const albef::io::StateDict original = read_state(kTiny), lavis = read_state(dir + "/lavis.pth"),
                             back = read_state(dir + "/official.pth");
  ASSERT_EQ(back.size(), original.size());
  for (size_t i = 0; i < original.size(); ++i) {
    EXPECT_EQ(back[i].first, original[i].first);
    EXPECT_EQ(back[i].second.scalar_type(), original[i].second.scalar_type()) << original[i].first;
    EXPECT_TRUE(at::equal(back[i].second, original[i].second)) << original[i].first;
  }
  // LAVIS's layout: no token-type embeddings, type 0 folded into the positions.
  const auto official = by_name(original), converted = by_name(lavis);
  EXPECT_EQ(lavis.size(), original.size() - 2);  // the two BERTs' token_type_embeddings
  for (const std::string bert : {"text_encoder.bert.embeddings.", "text_encoder_m.bert.embeddings."}) {
    EXPECT_FALSE(converted.count(bert + "token_type_embeddings.weight"));
    EXPECT_TRUE(at::equal(converted.at(bert + "position_embeddings.weight"),
                          official.at(bert + "position_embeddings.weight") +
                              official.at(bert + "token_type_embeddings.weight")[0]));
  }
  const albef::io::PyObjectPtr root = albef::io::read_torch_file(dir + "/lavis.pth");
  EXPECT_TRUE(root->get(albef::kOfficialEmbeddingsEntry));
  for (const char* kept : {"optimizer", "lr_scheduler", "config", "epoch"}) EXPECT_TRUE(root->get(kept)) << kept;
}

TEST(CheckpointLayouts, ConvertFromLavisCompletesTheOfficialModel) {
  const std::string dir = make_temp_dir("layouts_from_lavis");
  run_albef("convert --to official " + make_lavis_checkpoint(dir) + " " + dir + "/official.pth");
  // Every entry of the official pretraining model, so it loads strictly.
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  albef::AlbefModel model(config, albef::pretrain_model_options());
  albef::load_state_dict(model, read_state(dir + "/official.pth"), "official.pth", /*strict=*/true);
  const auto state = by_name(read_state(dir + "/official.pth"));
  EXPECT_TRUE(at::equal(state.at("visual_encoder_m.blocks.1.mlp.fc2.weight"), state.at("visual_encoder.blocks.1.mlp.fc2.weight")));
  EXPECT_TRUE(at::equal(state.at("text_encoder.bert.embeddings.token_type_embeddings.weight"), at::zeros({2, 64})));
}

TEST(CheckpointInfo, NamesTheModelOfEveryTask) {
  // The training model's checkpoint, and the inference model's state_dict
  // (no momentum encoders and queues), as albef's own tools write one.
  const std::string dir = make_temp_dir("info_kinds");
  for (const bool momentum : {true, false})
    for (const albef::tasks::Task& task : albef::tasks::registry()) {
      if (!task.checkpoint_model) continue;
      const albef::Config config =
          albef::load_config(data_path(task.name == "vqa" ? "tiny/VQA.yaml" : "tiny/Pretrain.yaml"));
      albef::ModelOptions options = task.checkpoint_model(config);
      options.momentum_encoders = options.momentum_encoders && momentum;
      albef::AlbefModel model(config, options);
      auto root = albef::io::PyObject::new_dict();
      root->set("model", albef::io::state_dict_to_object(albef::state_dict(*model)));
      auto stored_config = albef::io::PyObject::new_dict();
      if (task.name == "grounding") stored_config->set("det_file", albef::io::PyObject::from_string("data/refcoco+/dets.json"));
      root->set("config", stored_config);
      root->set("epoch", albef::io::PyObject::from_int(2));
      const std::string path = dir + "/" + task.name + (momentum ? "" : "_inference") + ".pth";
      albef::io::write_torch_file(path, root);

      const albef::tasks::CheckpointInfo info = albef::tasks::inspect_checkpoint(path);
      EXPECT_EQ(info.kind, task.name) << path;
      ASSERT_FALSE(info.matches.empty());
      EXPECT_EQ(info.matches.front().mismatches(), 0u) << path;
      EXPECT_EQ(info.layout, albef::CheckpointLayout::Official);
      EXPECT_EQ(info.image_res, 32) << task.name;
      EXPECT_EQ(info.vision_depth, 2);
      EXPECT_EQ(info.epoch, 2);
    }
}

TEST(CheckpointInfo, FixturesAndLavisAndFeatureExtractor) {
  const std::string dir = make_temp_dir("info_fixtures");
  const albef::tasks::CheckpointInfo tiny = albef::tasks::inspect_checkpoint(kTiny);
  EXPECT_EQ(tiny.kind, "pretrain");
  EXPECT_EQ(tiny.layout, albef::CheckpointLayout::Official);
  EXPECT_EQ(tiny.text_layers, 4);
  EXPECT_EQ(tiny.fusion_layer, 2);
  EXPECT_EQ(tiny.epoch, 0);
  EXPECT_EQ(tiny.config["image_res"], 32);
  EXPECT_EQ(tiny.other_entries, (std::vector<std::string>{"optimizer", "lr_scheduler", "config", "epoch"}));

  const albef::tasks::CheckpointInfo lavis = albef::tasks::inspect_checkpoint(make_lavis_checkpoint(dir));
  EXPECT_EQ(lavis.kind, "pretrain");
  EXPECT_EQ(lavis.layout, albef::CheckpointLayout::Lavis);
  EXPECT_EQ(lavis.matches.front().mismatches(), 0u);
  EXPECT_FALSE(lavis.matches.front().momentum_from_online.empty());

  // LAVIS's albef_feature_extractor: encoders and projections only.
  albef::io::StateDict extractor;
  for (const auto& [name, tensor] : read_state(kTiny))
    if (albef::online_twin(name).empty() && name.rfind("itm_head.", 0) != 0 && name.find("_queue") == std::string::npos &&
        name != "queue_ptr")
      extractor.emplace_back(name, tensor);
  auto root = albef::io::PyObject::new_dict();
  root->set("model", albef::io::state_dict_to_object(extractor));
  albef::io::write_torch_file(dir + "/extractor.pth", root);
  EXPECT_EQ(albef::tasks::inspect_checkpoint(dir + "/extractor.pth").kind, "feature_extractor");
  // It embeds as the whole model does; scoring pairs needs the ITM head it lacks.
  const std::string image = " --image " + source_path("data/coco-by/images/000000000790.jpg") + " --text 'a cake'";
  const std::string flags = " --threads 1 --config " + data_path("tiny/Pretrain.yaml") + image;
  run_albef("embed --checkpoint " + dir + "/extractor.pth --out " + dir + "/extractor_feats" + flags);
  run_albef("embed --checkpoint " + kTiny + " --out " + dir + "/tiny_feats" + flags);
  for (const char* feature : {"/image_feat.npy", "/text_feat.npy"})
    EXPECT_TRUE(at::equal(albef::io::read_npy(dir + "/extractor_feats" + feature),
                          albef::io::read_npy(dir + "/tiny_feats" + feature)))
        << feature;
  std::string output;
  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " score --checkpoint " + dir + "/extractor.pth" + flags + " 2>&1", &output), 0);
  EXPECT_NE(output.find("no itm_head"), std::string::npos) << output;

  const nlohmann::json json = nlohmann::json::parse(run_albef("info --json " + kTiny));
  EXPECT_EQ(json["kind"], "pretrain");
  EXPECT_EQ(json["layout"], "official");
  EXPECT_EQ(json["image_res"], 32);
  EXPECT_NE(run_albef("info " + kTiny).find("pretrain (Pretrain.py)"), std::string::npos);
}
