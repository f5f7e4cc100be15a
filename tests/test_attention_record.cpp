// The attention-recording hook Grad-CAM needs (xbert's save_attention): a
// layer keeps its attention probabilities and, after backward, their
// gradient; off by default, and recording changes no output.

#include "albef/model/albef.h"
#include "albef/model/itm.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

namespace {

class AttentionRecord : public ::testing::Test {
 protected:
  void SetUp() override {
    at::manual_seed(0);
    model_ = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
    images_ = at::randn({2, 3, 32, 32});
    ids_ = at::randint(1000, 30000, {2, 7}, at::kLong);
    ids_.select(1, 0).fill_(101);
    mask_ = at::ones({2, 7}, at::kLong);
    mask_[1].slice(0, 5).fill_(0);
  }

  // The first fusion layer's cross-attention (the layer Grad-CAM reads in the official code is one of these).
  albef::BertSelfAttentionImpl& cross_attention() {
    const int64_t layer = model_->config().bert.fusion_layer;
    return *model_->text_bert()->layer[layer]->as<albef::BertLayerImpl>()->crossattention->self;
  }

  // ITM match logit of every pair, summed: the score Grad-CAM differentiates.
  at::Tensor itm_score() {
    const at::Tensor image_embeds = model_->encode_image(images_);
    const at::Tensor text_embeds = model_->encode_text(ids_, mask_);
    return albef::itm_logits(model_, model_->fuse(text_embeds, mask_, image_embeds));
  }

  albef::AlbefModel model_{nullptr};
  at::Tensor images_, ids_, mask_;
};

TEST_F(AttentionRecord, OffByDefault) {
  at::NoGradGuard no_grad;
  itm_score();
  EXPECT_FALSE(cross_attention().attention_map().defined());
  EXPECT_FALSE(cross_attention().attention_gradients().defined());
}

TEST_F(AttentionRecord, KeepsProbabilitiesWithoutChangingTheOutput) {
  at::NoGradGuard no_grad;
  const at::Tensor plain = itm_score();
  cross_attention().save_attention(true);
  const at::Tensor recorded = itm_score();
  EXPECT_TENSOR_NEAR(recorded, plain, 1e-5);
  const at::Tensor map = cross_attention().attention_map();
  ASSERT_TRUE(map.defined());
  // [B, heads, text tokens, image tokens (CLS + 2x2 patches)]
  EXPECT_EQ(map.sizes().vec(), (std::vector<int64_t>{2, 2, 7, 5}));
  EXPECT_TENSOR_NEAR(map.sum(-1), at::ones({2, 2, 7}), 1e-5);
  EXPECT_GE(map.min().item<double>(), 0.0);
}

TEST_F(AttentionRecord, KeepsTheGradientOfTheProbabilities) {
  cross_attention().save_attention(true);
  const at::Tensor score = itm_score().select(1, 1).sum();
  const at::Tensor map = cross_attention().attention_map();
  ASSERT_TRUE(map.requires_grad());
  score.backward();
  const at::Tensor gradient = cross_attention().attention_gradients();
  ASSERT_TRUE(gradient.defined());
  EXPECT_EQ(gradient.sizes(), map.sizes());
  EXPECT_GT(gradient.abs().sum().item<double>(), 0.0);
  // The recorded gradient is d score / d probabilities, as autograd computes it on the same forward again.
  const at::Tensor again = itm_score().select(1, 1).sum();
  const at::Tensor expected = torch::autograd::grad({again}, {cross_attention().attention_map()})[0];
  EXPECT_TENSOR_NEAR(gradient, expected, 1e-6);
  cross_attention().save_attention(false);
}

}  // namespace
