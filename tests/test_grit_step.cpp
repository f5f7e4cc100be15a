// One GRIT-VLP pretraining step on the tiny fixture (tests/data/grit, from
// jaeseokbyun/GRIT-VLP's model_pretrain_GRIT_VLP.py with ALBEF's tiny
// weights): with the recorded MLM masks injected, the losses and their ITC
// parts, the argmax hard negatives and the gradients equal the official ones.

#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "tasks/pretrain/grit_step.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <cmath>
#include <set>
#include <utility>
#include <vector>

using albef::testing::data_path;
using albef::testing::expect_relative;
using albef::testing::state_tensor;

namespace {

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("grit/npy/step__" + name + ".npy")); }

double scalar(const std::string& name) { return fixture(name).item<double>(); }

albef::AlbefModel load_grit_model() {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::pretrain_model_options(/*momentum_encoders=*/false));
  model->train();
  return model;
}

albef::GritStepOutputs recorded_step(albef::AlbefModel& model) {
  albef::StepChoices masks;
  masks.masked_input_ids = fixture("mlm_input_ids_masked");
  masks.mlm_labels = fixture("mlm_labels");
  return albef::grit_forward(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                             fixture("inputs__attention_mask"), albef::MlmTokenIds{}, &masks);
}

}  // namespace

TEST(GritStep, LossesAndNegativesMatchOfficial) {
  albef::AlbefModel model = load_grit_model();
  EXPECT_EQ(albef::state_dict(*model).size(), 134u);  // ALBEF's online entries, no *_m, no queues
  const albef::GritStepOutputs out = recorded_step(model);
  constexpr double kTol = 1e-5;
  EXPECT_NEAR(out.loss_mlm.item<double>(), 10.399125, kTol);
  EXPECT_NEAR(out.loss_ita.item<double>(), 2.529608, kTol);
  EXPECT_NEAR(out.loss_itm.item<double>(), 1.069923, kTol);
  const std::vector<std::pair<std::string, at::Tensor>> parts = {
      {"loss_mlm", out.loss_mlm}, {"loss_ita", out.loss_ita},     {"loss_itm", out.loss_itm},
      {"loss_i2t", out.loss_i2t}, {"loss_t2i", out.loss_t2i},     {"loss_c_i2t", out.loss_c_i2t},
      {"loss_c_t2i", out.loss_c_t2i}};
  for (const auto& [name, value] : parts) EXPECT_NEAR(value.item<double>(), scalar(name), kTol) << name;
  EXPECT_TENSOR_NEAR(out.image_feat, fixture("image_feat"), kTol);
  EXPECT_TENSOR_NEAR(out.text_feat, fixture("text_feat"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_i2t, fixture("sim_i2t"), 1e-4);
  EXPECT_TENSOR_NEAR(out.sim_t2i, fixture("sim_t2i"), 1e-4);
  EXPECT_TENSOR_NEAR(out.itm_logits, fixture("itm_logits"), kTol);
  // The hard negatives are argmax picks: image per text [2,2,1,2,2,2,2,2], text per image [6,6,6,6,6,6,7,6].
  EXPECT_TRUE(out.choices.neg_image_idx.equal(fixture("neg_image_idx_per_text").to(at::kLong)));
  EXPECT_TRUE(out.choices.neg_text_idx.equal(fixture("neg_text_idx_per_image").to(at::kLong)));
  EXPECT_FALSE(out.image_feat.requires_grad());  // what the grouped sampler collects is detached
}

TEST(GritStep, GradientsMatchOfficial) {
  albef::AlbefModel model = load_grit_model();
  const albef::GritStepOutputs out = recorded_step(model);
  (out.loss_mlm + out.loss_ita + out.loss_itm).backward();
  for (const std::string name :
       {"temp", "vision_proj.weight", "vision_proj.bias", "text_proj.weight", "itm_head.weight", "itm_head.bias",
        "visual_encoder.cls_token", "visual_encoder.pos_embed", "visual_encoder.patch_embed.proj.weight",
        "visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.norm.weight",
        "text_encoder.bert.embeddings.LayerNorm.weight", "text_encoder.bert.encoder.layer.0.attention.self.query.weight",
        "text_encoder.bert.encoder.layer.2.crossattention.self.query.weight",
        "text_encoder.bert.encoder.layer.2.crossattention.self.key.weight",
        "text_encoder.bert.encoder.layer.3.output.dense.weight", "text_encoder.cls.predictions.transform.dense.weight",
        "text_encoder.cls.predictions.bias"})
    expect_relative(state_tensor(model, name).grad(), fixture("grad__" + name), 1e-4, name);
  // The word embeddings are tied to the MLM decoder: a dense gradient.
  const std::string word = "text_encoder.bert.embeddings.word_embeddings.weight";
  const at::Tensor word_grad = state_tensor(model, word).grad();
  expect_relative(word_grad.index_select(0, fixture("grad__" + word + "__row_ids").to(at::kLong)),
                  fixture("grad__" + word + "__rows"), 1e-4, "word embedding rows");
  EXPECT_NEAR(word_grad.to(at::kDouble).norm().item<double>(), scalar("grad__" + word + "__norm"),
              1e-4 * scalar("grad__" + word + "__norm"));
  // Every parameter gets a gradient; their global norm (tied tensors once,
  // as torch's parameters()) is the official one.
  double squares = 0.0;
  std::set<const void*> seen;
  for (const auto& parameter : model->parameters()) {
    ASSERT_TRUE(parameter.grad().defined());
    if (seen.insert(parameter.data_ptr()).second) squares += parameter.grad().to(at::kDouble).pow(2).sum().item<double>();
  }
  EXPECT_NEAR(std::sqrt(squares), scalar("grad_norm_total"), 1e-4 * scalar("grad_norm_total"));
}

TEST(GritStep, ContrastiveGradientsOnlyReachTheirOwnSide) {
  // d(loss_ita) alone: the image side sees only the i2t terms, the text side
  // only the t2i terms (the other side's features are detached).
  albef::AlbefModel model = load_grit_model();
  recorded_step(model).loss_ita.backward();
  for (const std::string name : {"temp", "vision_proj.weight", "text_proj.weight"})
    expect_relative(state_tensor(model, name).grad(), fixture("grad_ita_only__" + name), 1e-4, name);
}

TEST(GritStep, DrawnMasksFollowTheConfiguredProbability) {
  albef::AlbefModel model = load_grit_model();
  at::manual_seed(11);
  const at::Tensor ids = fixture("inputs__input_ids");
  const albef::GritStepOutputs out = albef::grit_forward(model, fixture("inputs__image"), ids,
                                                         fixture("inputs__attention_mask"), albef::MlmTokenIds{});
  EXPECT_TRUE(std::isfinite(out.loss_mlm.item<double>()));
  const at::Tensor chosen = out.choices.mlm_labels != -100;
  EXPECT_TRUE(out.choices.mlm_labels.masked_select(chosen).equal(ids.masked_select(chosen)));
  EXPECT_FALSE(chosen.select(1, 0).any().item<bool>());  // never [CLS]
  // The tiny config's mlm_probability (0.15) over the 8 captions' real tokens.
  const double candidates = fixture("inputs__attention_mask").sum().item<double>() - 8;
  EXPECT_NEAR(chosen.sum().item<double>() / candidates, model->config().mlm_probability, 0.12);
}

TEST(GritStep, RefusesAModelWithMomentumEncoders) {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::pretrain_model_options(true));
  EXPECT_THROW(albef::grit_forward(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                                   fixture("inputs__attention_mask"), albef::MlmTokenIds{}),
               albef::Error);
}
