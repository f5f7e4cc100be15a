// One official retrieval fine-tuning step (models/model_retrieval.py) on the
// tiny fixture: two pairs share an image id, so both are positives of each
// other; with the recorded negatives injected, losses, targets, queues (with
// the id queue) and gradients equal the official ones.

#include "albef/io/npy.h"
#include "tasks/retrieval/step.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

using albef::testing::data_path;

namespace {

at::Tensor fixture(const std::string& name) {
  return albef::io::read_npy(data_path("retrieval_train/" + name + ".npy"));
}

using albef::testing::expect_relative;
using albef::testing::state_tensor;

}  // namespace

TEST(RetrievalStep, LossesQueuesAndGradientsMatchOfficial) {
  // The pretraining checkpoint loaded as Retrieval.py does; idx_queue starts at -100.
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::retrieval_model_options(true));
  model->train();
  EXPECT_TRUE(model->idx_queue.equal(fixture("idx_queue_before")));
  albef::StepChoices choices;
  choices.neg_image_idx = fixture("neg_image_idx_per_text");
  choices.neg_text_idx = fixture("neg_text_idx_per_image");
  const albef::StepOutputs out =
      albef::retrieval_forward(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                               fixture("inputs__attention_mask"), 0.4, fixture("inputs__idx"), true, &choices);
  constexpr double kTol = 1e-5;
  EXPECT_NEAR(out.loss_ita.item<double>(), fixture("loss_ita").item<double>(), kTol);
  EXPECT_NEAR(out.loss_itm.item<double>(), fixture("loss_itm").item<double>(), kTol);
  EXPECT_FALSE(out.loss_mlm.defined());
  EXPECT_TENSOR_NEAR(out.sim_i2t, fixture("fwd__sim_i2t"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_t2i, fixture("fwd__sim_t2i"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_i2t_targets, fixture("fwd__sim_i2t_targets"), kTol);
  EXPECT_TENSOR_NEAR(out.sim_t2i_targets, fixture("fwd__sim_t2i_targets"), kTol);
  EXPECT_TENSOR_NEAR(out.itm_logits, fixture("fwd__itm_logits"), kTol);
  EXPECT_TENSOR_NEAR(model->image_queue, fixture("image_queue_after"), kTol);
  EXPECT_TENSOR_NEAR(model->text_queue, fixture("text_queue_after"), kTol);
  EXPECT_TRUE(model->idx_queue.equal(fixture("idx_queue_after")));
  EXPECT_TRUE(model->queue_ptr.equal(fixture("queue_ptr_after")));

  (out.loss_ita + out.loss_itm).backward();
  for (const std::string name :
       {"temp", "vision_proj.weight", "text_proj.weight", "itm_head.weight", "itm_head.bias",
        "visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.patch_embed.proj.weight", "visual_encoder.pos_embed",
        "visual_encoder.cls_token", "visual_encoder.norm.weight", "text_encoder.encoder.layer.0.attention.self.query.weight",
        "text_encoder.encoder.layer.2.crossattention.self.key.weight", "text_encoder.encoder.layer.3.output.dense.weight",
        "text_encoder.embeddings.LayerNorm.weight"}) {
    expect_relative(state_tensor(model, name).grad(), fixture("grad__" + name), 1e-4, name);
  }
  const at::Tensor word_grad = state_tensor(model, "text_encoder.embeddings.word_embeddings.weight").grad();
  expect_relative(word_grad.index_select(0, fixture("grad__text_encoder.embeddings.word_embeddings.weight__row_ids")),
                  fixture("grad__text_encoder.embeddings.word_embeddings.weight__rows"), 1e-4, "word embedding rows");
}

TEST(RetrievalStep, SampledNegativesNeverShareTheImage) {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::retrieval_model_options(true));
  model->train();
  const at::Tensor ids = fixture("inputs__idx");  // [0, 1, 0, 2]: pairs 0 and 2 show one image
  at::manual_seed(11);
  for (int trial = 0; trial < 10; ++trial) {
    const albef::StepOutputs out = albef::retrieval_forward(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                                                            fixture("inputs__attention_mask"), 0.4, ids, true);
    EXPECT_FALSE(ids.index_select(0, out.choices.neg_image_idx).eq(ids).any().item<bool>());
    EXPECT_FALSE(ids.index_select(0, out.choices.neg_text_idx).eq(ids).any().item<bool>());
  }
}
