// One SIMLA pretraining step on the tiny fixture (tests/data/simla, from
// codezakh/SIMLA's models/simla/pretrain.py): with the recorded MLM masks,
// negatives, masked patches, visual token ids and keyword positions
// injected, the five losses and their parts, the queues, the keyword targets
// and the gradients equal the official ones.

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "albef/tasks/pretrain.h"
#include "tasks/pretrain/simla_model.h"
#include "tasks/pretrain/simla_step.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <cmath>
#include <set>
#include <string>

using albef::testing::data_path;
using albef::testing::expect_relative;
using albef::testing::state_tensor;

namespace {

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("simla/npy/" + name + ".npy")); }

double scalar(const std::string& name) { return fixture(name).item<double>(); }

constexpr double kAlpha = 0.4;  // the config's alpha, as the fixture's step

albef::AlbefModel load_simla_model() {
  const albef::Config config = albef::load_config(data_path("simla/Pretrain_tiny.yaml"));
  albef::AlbefModel model(config, albef::simla_model_options());
  albef::load_checkpoint(model, data_path("simla/simla_pretrain_tiny.pth"), /*strict=*/true);
  model->train();
  return model;
}

albef::SimlaImageTargets recorded_targets() {
  return {fixture("masked_visual_token_pos"), fixture("visual_token_ids")};
}

albef::SimlaChoices recorded_choices() {
  albef::SimlaChoices choices;
  choices.step.masked_input_ids = fixture("mlm_input_ids_masked");
  choices.step.mlm_labels = fixture("mlm_labels");
  choices.step.neg_image_idx = fixture("neg_image_idx_per_text").to(at::kLong);
  choices.step.neg_text_idx = fixture("neg_text_idx_per_image").to(at::kLong);
  choices.keyword_positions = fixture("psl_chosen_positions").to(at::kLong);
  return choices;
}

albef::SimlaStepOutputs recorded_step(albef::AlbefModel& model, const albef::SimlaImageTargets& targets,
                                      const albef::SimlaChoices& choices) {
  return albef::simla_forward(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                              fixture("inputs__attention_mask"), targets, kAlpha, albef::MlmTokenIds{}, &choices);
}

}  // namespace

TEST(SimlaStep, LossesAndPartsMatchOfficial) {
  albef::AlbefModel model = load_simla_model();
  const albef::SimlaStepOutputs out = recorded_step(model, recorded_targets(), recorded_choices());
  constexpr double kTol = 1e-5;
  EXPECT_NEAR(out.step.loss_mlm.item<double>(), 7.313938, kTol);
  EXPECT_NEAR(out.step.loss_ita.item<double>(), 2.987133, kTol);
  EXPECT_NEAR(out.step.loss_itm.item<double>(), 0.928509, kTol);
  EXPECT_NEAR(out.loss_mim.item<double>(), 9.098408, kTol);
  EXPECT_NEAR(out.loss_pseudo.item<double>(), 0.693768, kTol);
  // The parts (simla.json loss_parts). MLM's distillation normalises over the
  // sequence axis (med.py's dim=1): over the vocabulary it would be 10.313402.
  EXPECT_NEAR(out.mlm_ce.item<double>(), 10.309746, kTol);
  EXPECT_NEAR(out.mlm_distill.item<double>(), 2.820225, kTol);
  EXPECT_NEAR(out.mim_ce.item<double>(), 9.268887, kTol);
  EXPECT_NEAR(out.mim_distill.item<double>(), 8.842690, kTol);
  EXPECT_NEAR(out.pseudo_hard.item<double>(), 0.695908, kTol);
  EXPECT_NEAR(out.pseudo_soft.item<double>(), 0.690559, kTol);
  for (const std::string name : {"loss_mlm", "loss_ita", "loss_itm", "loss_mim", "loss_pseudo"}) {
    const at::Tensor& got = name == "loss_mlm"   ? out.step.loss_mlm
                            : name == "loss_ita" ? out.step.loss_ita
                            : name == "loss_itm" ? out.step.loss_itm
                            : name == "loss_mim" ? out.loss_mim
                                                 : out.loss_pseudo;
    EXPECT_NEAR(got.item<double>(), scalar(name), kTol) << name;
  }
  EXPECT_TENSOR_NEAR(out.step.image_feat_m, fixture("image_feat_m"), kTol);
  EXPECT_TENSOR_NEAR(out.step.text_feat_m, fixture("text_feat_m"), kTol);
  EXPECT_TENSOR_NEAR(out.step.sim_i2t, fixture("sim_i2t"), 1e-4);
  EXPECT_TENSOR_NEAR(out.step.sim_t2i, fixture("sim_t2i"), 1e-4);
  EXPECT_TENSOR_NEAR(out.step.sim_i2t_targets, fixture("sim_i2t_targets"), kTol);
  EXPECT_TENSOR_NEAR(out.step.itm_logits, fixture("itm_logits"), kTol);
  // The queues took the batch's momentum features at 0; the pointer moved to 8.
  EXPECT_TENSOR_NEAR(model->image_queue, fixture("image_queue_after"), kTol);
  EXPECT_TENSOR_NEAR(model->text_queue, fixture("text_queue_after"), kTol);
  EXPECT_EQ(model->queue_ptr.item<int64_t>(), fixture("queue_ptr_after").item<int64_t>());
  // The momentum heads moved with the encoders (one EMA step before the features).
  EXPECT_TENSOR_NEAR(state_tensor(model, "vision_proj_m.weight"), fixture("momentum_after_forward__vision_proj_m.weight"),
                     1e-7);
  // Keywords: the votes of the heads' [CLS] rows, and the multi-hot targets
  // without [CLS] (a repeated word counts once).
  EXPECT_TRUE(out.keyword_counts.equal(fixture("psl_counts_per_position").to(at::kLong)));
  const at::Tensor targets = out.keyword_targets.nonzero();
  EXPECT_TRUE(targets.equal(fixture("psl_hard_target_ids").to(at::kLong))) << targets;
}

TEST(SimlaStep, GradientsMatchOfficial) {
  albef::AlbefModel model = load_simla_model();
  const albef::SimlaStepOutputs out = recorded_step(model, recorded_targets(), recorded_choices());
  (out.step.loss_mlm + out.step.loss_itm + out.step.loss_ita + out.loss_mim + out.loss_pseudo).backward();
  for (const std::string name :
       {"temp", "vision_proj.weight", "text_proj.weight", "itm_head.weight", "itm_head.bias", "mim_head.bias",
        "concept_head.bias", "visual_encoder.cls_token", "visual_encoder.mask_token", "visual_encoder.pos_embed",
        "visual_encoder.patch_embed.proj.weight", "visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.norm.weight",
        "text_encoder.bert.embeddings.LayerNorm.weight", "text_encoder.bert.encoder.layer.0.attention.self.query.weight",
        "text_encoder.bert.encoder.layer.0.crossattention.self.key.weight",
        "text_encoder.bert.encoder.layer.3.crossattention.self.value.weight",
        "text_encoder.bert.encoder.layer.3.output.dense.weight", "text_encoder.cls.predictions.transform.dense.weight",
        "text_encoder.cls.predictions.bias"})
    expect_relative(state_tensor(model, name).grad(), fixture("grad__" + name), 1e-4, name);
  // Position embeddings: the fixture keeps rows 0-39 (the text and the 17 image tokens use 0-16).
  const std::string positions = "text_encoder.bert.embeddings.position_embeddings.weight";
  const at::Tensor recorded_positions = fixture("grad__" + positions);
  expect_relative(state_tensor(model, positions).grad().slice(0, 0, recorded_positions.size(0)), recorded_positions,
                  1e-4, positions);
  // Dense vocabulary-sized gradients: the recorded rows and the norm. The word
  // embeddings (tied to the MLM decoder) also get MIM's, through the words the
  // image tokens attend to.
  for (const std::string name :
       {"text_encoder.bert.embeddings.word_embeddings.weight", "concept_head.weight", "mim_head.weight"}) {
    const at::Tensor grad = state_tensor(model, name).grad();
    expect_relative(grad.index_select(0, fixture("grad__" + name + "__row_ids").to(at::kLong)),
                    fixture("grad__" + name + "__rows"), 1e-4, name + " rows");
    EXPECT_NEAR(grad.to(at::kDouble).norm().item<double>(), scalar("grad__" + name + "__norm"),
                1e-4 * scalar("grad__" + name + "__norm"))
        << name;
  }
  // All 155 trainable tensors get a gradient; their global norm (tied tensors
  // once, as torch's parameters()) is the official one.
  double squares = 0.0;
  std::set<const void*> seen;
  for (const auto& parameter : model->parameters()) {
    if (!parameter.requires_grad()) continue;
    ASSERT_TRUE(parameter.grad().defined());
    if (seen.insert(parameter.data_ptr()).second) squares += parameter.grad().to(at::kDouble).pow(2).sum().item<double>();
  }
  EXPECT_EQ(seen.size(), 155u);
  EXPECT_NEAR(std::sqrt(squares), scalar("grad_norm_total"), 1e-4 * scalar("grad_norm_total"));
}

TEST(SimlaStep, KeywordVoteChoosesTheMostVotedPositions) {
  // Without injected positions: the votes are the official ones, and the
  // chosen positions are 5 of the most voted (ties broken by CPU topk, as the
  // official code breaks them).
  albef::AlbefModel model = load_simla_model();
  albef::SimlaChoices choices = recorded_choices();
  choices.keyword_positions = at::Tensor();
  const albef::SimlaStepOutputs out = recorded_step(model, recorded_targets(), choices);
  ASSERT_EQ(out.keyword_positions.sizes(), (at::IntArrayRef{8, albef::kSimlaKeywords}));
  for (int64_t b = 0; b < 8; ++b) {
    const at::Tensor counts = out.keyword_counts[b];
    const at::Tensor chosen = out.keyword_positions[b];
    EXPECT_EQ(std::get<0>(at::_unique(chosen)).numel(), albef::kSimlaKeywords);
    at::Tensor others = at::ones_like(counts, at::kBool);
    others.index_fill_(0, chosen, false);
    EXPECT_GE(counts.index_select(0, chosen).min().item<int64_t>(), counts.masked_select(others).max().item<int64_t>())
        << "sample " << b;
  }
  // CPU topk breaks this run's ties as the official run's did.
  EXPECT_TRUE(out.keyword_positions.equal(fixture("psl_chosen_positions").to(at::kLong))) << out.keyword_positions;
  EXPECT_NEAR(out.loss_pseudo.item<double>(), 0.693768, 1e-5);
}

TEST(SimlaStep, WithoutImageTokensMimIsOff) {
  // No masked patches or visual tokens: no MIM loss; the other four are the official ones.
  albef::AlbefModel model = load_simla_model();
  const albef::SimlaStepOutputs out = recorded_step(model, {}, recorded_choices());
  EXPECT_FALSE(out.loss_mim.defined());
  EXPECT_NEAR(out.step.loss_mlm.item<double>(), 7.313938, 1e-5);
  EXPECT_NEAR(out.step.loss_itm.item<double>(), 0.928509, 1e-5);
  EXPECT_NEAR(out.loss_pseudo.item<double>(), 0.693768, 1e-5);
}

TEST(SimlaStep, RefusesMismatchedTargetsAndModels) {
  albef::AlbefModel model = load_simla_model();
  const albef::SimlaChoices choices = recorded_choices();
  albef::SimlaImageTargets half = recorded_targets();
  half.visual_token_ids = at::Tensor();
  EXPECT_THROW(recorded_step(model, half, choices), albef::Error);
  albef::SimlaImageTargets wrong = recorded_targets();
  wrong.masked_patches = wrong.masked_patches.slice(1, 0, 8);
  try {
    recorded_step(model, wrong, choices);
    FAIL() << "a [8, 8] mask on 16 patches was accepted";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[8, 16]"), std::string::npos) << e.what();
  }
  // ALBEF's pretraining model (two-stream BERT, no SIMLA heads).
  albef::AlbefModel albef_model = albef::testing::load_tiny_model(albef::pretrain_model_options());
  EXPECT_THROW(albef::simla_forward(albef_model, fixture("inputs__image"), fixture("inputs__input_ids"),
                                    fixture("inputs__attention_mask"), {}, kAlpha, albef::MlmTokenIds{}),
               albef::Error);
}
