// Task heads are modules of their own (HeadSpec), registered where the
// official state_dict has them, with frozen momentum copies; checkpoint keys
// reach the model through the task's CheckpointKeyMap.

#include "albef/io/checkpoint.h"
#include "albef/model/albef.h"
#include "albef/model/itm.h"

#include "test_util.h"
#include "tiny_model.h"

#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

albef::Config tiny_config() { return albef::load_config(albef::testing::data_path("tiny/Pretrain.yaml")); }

// A task's head: two classes from the fused [CLS] state, with a momentum copy.
albef::HeadSpec two_way_head(bool momentum) {
  return {"cls_head",
          [](const albef::Config& config) -> std::shared_ptr<torch::nn::Module> {
            return torch::nn::Linear(config.bert.hidden_size, 2).ptr();
          },
          momentum};
}

std::vector<std::string> top_level_names(const albef::AlbefModel& model) {
  std::vector<std::string> names;
  for (const auto& child : model->named_children()) names.push_back(child.key());
  return names;
}

TEST(ModelHeads, RegisteredAfterTheOnlineBackboneWithMomentumCopiesAfterTheMomentumOne) {
  albef::ModelOptions options = albef::retrieval_model_options(true);
  options.contrastive = false;  // as NLVR2's model: no projections, no queues, no temp
  options.id_queue = false;
  options.heads = {two_way_head(true)};
  albef::AlbefModel model(tiny_config(), options);
  EXPECT_EQ(top_level_names(model), (std::vector<std::string>{"visual_encoder", "text_encoder", "cls_head",
                                                              "visual_encoder_m", "text_encoder_m", "cls_head_m"}));
  for (const auto& [name, tensor] : albef::state_dict(*model)) EXPECT_NE(name, "temp");
  for (const auto& parameter : model->head("cls_head_m")->parameters()) EXPECT_FALSE(parameter.requires_grad());
  for (const auto& parameter : model->head("cls_head")->parameters()) EXPECT_TRUE(parameter.requires_grad());
  // The EMA covers the head: its pair is in momentum_pairs.
  const at::Tensor head_weight = model->head_as<torch::nn::LinearImpl>("cls_head").weight;
  const auto pairs = model->momentum_pairs();
  EXPECT_TRUE(std::any_of(pairs.begin(), pairs.end(), [&](const auto& pair) { return pair.first.is_same(head_weight); }));
  EXPECT_THROW(model->head("itm_head"), albef::Error);
  EXPECT_FALSE(model->has_head("itm_head"));
}

TEST(ModelHeads, ItmHeadKeepsTheOfficialPlace) {
  albef::AlbefModel model(tiny_config(), albef::pretrain_model_options(true));
  const std::vector<std::string> names = top_level_names(model);
  EXPECT_EQ(names, (std::vector<std::string>{"visual_encoder", "text_encoder", "vision_proj", "text_proj", "itm_head",
                                             "visual_encoder_m", "vision_proj_m", "text_encoder_m", "text_proj_m"}));
}

TEST(ModelHeads, OneCheckpointKeyCanInitialiseSeveralModules) {
  // As VQA.py starts its decoder from the fusion layers: a key map may send
  // one checkpoint entry to more than one model entry, or to none.
  albef::ModelOptions options = albef::retrieval_model_options(false);
  options.heads = {albef::itm_head_spec(), two_way_head(false)};
  options.checkpoint_keys = [](const std::string& key) {
    std::vector<std::string> keys{albef::adapt_text_encoder_key(key, albef::TextEncoderLayout::Plain)};
    if (key.rfind("itm_head.", 0) == 0) keys.push_back("cls_head." + key.substr(9));
    if (key == "temp") keys.clear();
    return keys;
  };
  albef::AlbefModel model(tiny_config(), options);
  const albef::LoadReport report =
      albef::load_checkpoint(model, albef::testing::data_path("tiny/albef_pretrain_tiny.pth"));
  EXPECT_EQ(report.missing_keys, std::vector<std::string>{"temp"});
  EXPECT_NE(std::find(report.unexpected_keys.begin(), report.unexpected_keys.end(), "temp"),
            report.unexpected_keys.end());
  auto& itm = model->head_as<torch::nn::LinearImpl>("itm_head");
  auto& cls = model->head_as<torch::nn::LinearImpl>("cls_head");
  EXPECT_TRUE(itm.weight.equal(cls.weight));
  EXPECT_TRUE(itm.bias.equal(cls.bias));
  EXPECT_FALSE(itm.weight.is_same(cls.weight));  // copies, not tied
}

TEST(ModelHeads, HeadsNeedBothSides) {
  albef::ModelOptions options = albef::retrieval_model_options(false);
  options.text_side = false;
  EXPECT_THROW(albef::AlbefModel(tiny_config(), options), albef::Error);
}

}  // namespace
