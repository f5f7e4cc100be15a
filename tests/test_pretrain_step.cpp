// One official pretraining step on the tiny fixture: with the recorded MLM
// masks and hard negatives injected, losses, similarities, queues and
// gradients equal those of salesforce/ALBEF's model_pretrain.py.

#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/train/optimizer.h"
#include "tasks/pretrain/step.h"
#include "albef/train/scheduler.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

using albef::testing::data_path;

namespace {

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("tiny/npy/" + name + ".npy")); }

albef::AlbefModel load_tiny_for_training() {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::pretrain_model_options(true));
  model->train();
  return model;
}

using albef::testing::expect_relative;
using albef::testing::state_tensor;

albef::StepChoices recorded_choices() {
  return {fixture("train__mlm_input_ids_masked"), fixture("train__mlm_labels"),
          fixture("train__neg_image_idx_per_text"), fixture("train__neg_text_idx_per_image")};
}

}  // namespace

TEST(PretrainStep, LossesQueuesAndGradientsMatchOfficial) {
  albef::AlbefModel model = load_tiny_for_training();
  const albef::StepChoices choices = recorded_choices();
  const albef::StepOutputs out =
      albef::pretrain_forward(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                              fixture("inputs__attention_mask"), 0.4, albef::MlmTokenIds{}, &choices);
  constexpr double kTol = 1e-5;
  EXPECT_NEAR(out.loss_ita.item<double>(), fixture("train__loss_ita").item<double>(), kTol);
  EXPECT_NEAR(out.loss_itm.item<double>(), fixture("train__loss_itm").item<double>(), kTol);
  EXPECT_NEAR(out.loss_mlm.item<double>(), fixture("train__loss_mlm").item<double>(), kTol);
  EXPECT_TENSOR_NEAR(out.image_feat_m, fixture("train__fwd__image_feat_m"), kTol);
  EXPECT_TENSOR_NEAR(out.text_feat_m, fixture("train__fwd__text_feat_m"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_i2t, fixture("train__fwd__sim_i2t"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_t2i, fixture("train__fwd__sim_t2i"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_i2t_targets, fixture("train__fwd__sim_i2t_targets"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_t2i_targets, fixture("train__fwd__sim_t2i_targets"), kTol);
  EXPECT_TENSOR_NEAR(out.itm_logits, fixture("train__fwd__itm_logits"), kTol);

  // The queues took the momentum features at the old pointer.
  EXPECT_TENSOR_NEAR(model->image_queue, fixture("train__image_queue_after"), kTol);
  EXPECT_TENSOR_NEAR(model->text_queue, fixture("train__text_queue_after"), kTol);
  EXPECT_TRUE(model->queue_ptr.equal(fixture("train__queue_ptr_after")));

  (out.loss_mlm + out.loss_ita + out.loss_itm).backward();
  for (const std::string name :
       {"temp", "vision_proj.weight", "text_proj.weight", "itm_head.weight", "visual_encoder.blocks.0.attn.qkv.weight",
        "visual_encoder.patch_embed.proj.weight", "visual_encoder.pos_embed",
        "text_encoder.bert.encoder.layer.0.attention.self.query.weight",
        "text_encoder.bert.encoder.layer.2.crossattention.self.query.weight",
        "text_encoder.bert.encoder.layer.2.crossattention.self.key.weight", "text_encoder.cls.predictions.bias"}) {
    expect_relative(state_tensor(model, name).grad(), fixture("train__grad__" + name), 1e-4, name);
  }
  // The word-embedding gradient includes the tied MLM decoder's (dense over
  // the vocabulary): the recorded rows and the norm of the whole gradient.
  const at::Tensor word_grad = state_tensor(model, "text_encoder.bert.embeddings.word_embeddings.weight").grad();
  expect_relative(word_grad.index_select(0, fixture("train__grad_word_embeddings__row_ids")),
                  fixture("train__grad_word_embeddings__rows"), 1e-4, "word embedding rows");
  EXPECT_NEAR(word_grad.to(at::kDouble).norm().item<double>(), fixture("train__grad_word_embeddings__norm").item<double>(),
              1e-4 * fixture("train__grad_word_embeddings__norm").item<double>());
  // Momentum copies get no gradient.
  EXPECT_FALSE(state_tensor(model, "vision_proj_m.weight").grad().defined());
}

TEST(PretrainStep, MomentumUpdateIsExponentialAverage) {
  albef::AlbefModel model = load_tiny_for_training();
  at::NoGradGuard no_grad;
  const at::Tensor online = state_tensor(model, "vision_proj.weight");
  const at::Tensor averaged = state_tensor(model, "vision_proj_m.weight");
  online.add_(1.0);
  const at::Tensor before = averaged.clone();
  albef::momentum_update(model, 0.995);
  EXPECT_TENSOR_NEAR(averaged, before * 0.995 + online * 0.005, 1e-6);
  // A tied tensor is averaged once, not once per name.
  const at::Tensor word = state_tensor(model, "text_encoder.bert.embeddings.word_embeddings.weight");
  const at::Tensor word_m = state_tensor(model, "text_encoder_m.bert.embeddings.word_embeddings.weight");
  word.add_(1.0);
  const at::Tensor word_m_before = word_m.clone();
  albef::momentum_update(model, 0.995);
  EXPECT_TENSOR_NEAR(word_m, word_m_before * 0.995 + word * 0.005, 1e-6);
}

TEST(PretrainStep, SampledNegativesAreNeverThePositive) {
  albef::AlbefModel model = load_tiny_for_training();
  at::manual_seed(7);
  for (int trial = 0; trial < 5; ++trial) {
    const albef::StepOutputs out = albef::pretrain_forward(
        model, fixture("inputs__image"), fixture("inputs__input_ids"), fixture("inputs__attention_mask"), 0.4, {});
    const at::Tensor positions = at::arange(4);
    EXPECT_FALSE(out.choices.neg_image_idx.eq(positions).any().item<bool>());
    EXPECT_FALSE(out.choices.neg_text_idx.eq(positions).any().item<bool>());
    EXPECT_TRUE(std::isfinite(out.loss_mlm.item<double>()));
  }
}

TEST(PretrainStep, MaskingFollowsTheOfficialRates) {
  at::manual_seed(3);
  // 2000 captions of 24 tokens + [CLS], some padding.
  at::Tensor ids = at::randint(1000, 5000, {2000, 25}, at::kLong);
  ids.select(1, 0).fill_(101);
  ids.slice(1, 20).slice(0, 0, 1000).fill_(0);
  const auto [masked, labels] = albef::mask_tokens(ids, 0.15, 30522, albef::MlmTokenIds{});
  const at::Tensor chosen = labels != -100;
  EXPECT_FALSE(chosen.select(1, 0).any().item<bool>());                         // never [CLS]
  EXPECT_FALSE(chosen.slice(1, 20).slice(0, 0, 1000).any().item<bool>());      // never [PAD]
  EXPECT_TRUE(labels.masked_select(chosen).equal(ids.masked_select(chosen)));  // labels are the originals
  const double candidates = 2000.0 * 24 - 1000.0 * 5;
  const double rate = chosen.sum().item<double>() / candidates;
  EXPECT_NEAR(rate, 0.15, 0.01);
  const double as_mask = (masked.masked_select(chosen) == 103).sum().item<double>() / chosen.sum().item<double>();
  const double unchanged = (masked.masked_select(chosen) == ids.masked_select(chosen)).sum().item<double>() /
                           chosen.sum().item<double>();
  EXPECT_NEAR(as_mask, 0.8, 0.02);
  EXPECT_NEAR(unchanged, 0.1, 0.02);  // plus the rare random draw of the same id
  EXPECT_TRUE(masked.masked_select(~chosen).equal(ids.masked_select(~chosen)));
}

TEST(PretrainStep, OptimizerStepAndMomentumUpdateMatchOfficial) {
  // The official driver: backward, a fresh create_optimizer + create_scheduler
  // (lr = warmup_lr 1e-5), one AdamW step, then one more _momentum_update().
  albef::AlbefModel model = load_tiny_for_training();
  const albef::StepChoices choices = recorded_choices();
  const albef::StepOutputs out =
      albef::pretrain_forward(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                              fixture("inputs__attention_mask"), 0.4, albef::MlmTokenIds{}, &choices);
  (out.loss_mlm + out.loss_ita + out.loss_itm).backward();
  albef::AdamW optimizer = albef::create_optimizer(*model, model->config().optimizer);
  albef::CosineLRScheduler scheduler(optimizer, model->config().schedular);
  EXPECT_NEAR(optimizer.param_groups()[0].lr, fixture("train__adamw_lr").item<double>(), 1e-12);
  const std::string query = "text_encoder.bert.encoder.layer.0.attention.self.query.weight";
  const std::string query_m = "text_encoder_m.bert.encoder.layer.0.attention.self.query.weight";
  expect_relative(state_tensor(model, query_m), fixture("train__momentum_before__" + query_m), 1e-5, "momentum before");
  optimizer.step();
  expect_relative(state_tensor(model, "vision_proj.weight"), fixture("train__after_step__vision_proj.weight"), 1e-5,
                  "vision_proj after step");
  expect_relative(state_tensor(model, query), fixture("train__after_step__" + query), 1e-5, "query after step");
  albef::momentum_update(model, model->config().momentum);
  expect_relative(state_tensor(model, "vision_proj_m.weight"), fixture("train__momentum_after__vision_proj_m.weight"), 1e-5,
                  "vision_proj_m after update");
  expect_relative(state_tensor(model, query_m), fixture("train__momentum_after__" + query_m), 1e-5, "query_m after update");
}
