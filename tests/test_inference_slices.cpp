// Inference runs large batches through the encoders and the fusion about
// 512 tokens at a time (1024 in bf16; model/albef.cpp). A batch must give what its rows
// give one by one, whichever slices it was cut into.

#include "albef/model/albef.h"
#include "albef/core/runtime.h"
#include "albef/model/itm.h"
#include "tasks/pretrain/simla_model.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace {

constexpr double kTolerance = 1e-5;

// Each row of `batch` through `pass` alone (one row is never sliced), joined.
template <typename Pass>
at::Tensor row_by_row(int64_t rows, Pass pass) {
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < rows; ++i) parts.push_back(pass(i, i + 1));
  return at::cat(parts);
}

// Ids in the vocabulary with [CLS] first, and right padding after a random length.
std::pair<at::Tensor, at::Tensor> random_captions(int64_t rows, int64_t length) {
  at::Tensor ids = at::randint(1000, 30000, {rows, length}, at::kLong);
  ids.select(1, 0).fill_(101);
  const at::Tensor lengths = at::randint(2, length + 1, {rows, 1}, at::kLong);
  const at::Tensor mask = (at::arange(length).unsqueeze(0) < lengths).to(at::kLong);
  return {ids * mask, mask};
}

class InferenceSlices : public ::testing::Test {
 protected:
  void SetUp() override {
    at::manual_seed(0);
    model_ = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  }
  albef::AlbefModel model_{nullptr};
};

TEST_F(InferenceSlices, TextBatchEqualsItsRows) {
  at::NoGradGuard no_grad;
  // 30 tokens: slices of 17 captions, so 80 captions run as 4 x 17 + 12.
  const auto [ids, mask] = random_captions(80, 30);
  const at::Tensor batch = model_->encode_text(ids, mask);
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{80, 30, 64}));
  EXPECT_TENSOR_NEAR(batch, row_by_row(80, [&](int64_t b, int64_t e) {
                       return model_->encode_text(ids.slice(0, b, e), mask.slice(0, b, e));
                     }),
                     kTolerance);
}

TEST_F(InferenceSlices, ImageBatchEqualsItsRows) {
  at::NoGradGuard no_grad;
  // The tiny ViT sees 5 tokens an image: slices of 102 images.
  const at::Tensor images = at::randn({450, 3, 32, 32});
  const at::Tensor batch = model_->encode_image(images);
  ASSERT_EQ(batch.size(0), 450);
  EXPECT_TENSOR_NEAR(batch, row_by_row(450, [&](int64_t b, int64_t e) {
                       return model_->encode_image(images.slice(0, b, e));
                     }),
                     kTolerance);
}

// A gallery encoded a pass at a time (the retrieval evaluation) gets each pass's rows in order, and
// together they are the batch's, bit for bit: the same passes.
TEST_F(InferenceSlices, EachPassHandedOverIsThatSliceOfTheBatch) {
  at::NoGradGuard no_grad;
  const auto check = [](const at::Tensor& batch, const std::vector<std::pair<int64_t, at::Tensor>>& passes) {
    ASSERT_GT(passes.size(), 1u);  // the batch is more than one pass
    int64_t next = 0;
    for (const auto& [begin, rows] : passes) {
      EXPECT_EQ(begin, next);
      EXPECT_TRUE(rows.equal(batch.slice(0, begin, begin + rows.size(0))));
      next = begin + rows.size(0);
    }
    EXPECT_EQ(next, batch.size(0));
  };
  std::vector<std::pair<int64_t, at::Tensor>> passes;
  const auto keep = [&](int64_t begin, const at::Tensor& rows) { passes.emplace_back(begin, rows); };
  const auto [ids, mask] = random_captions(80, 30);
  model_->encode_text(ids, mask, keep);
  check(model_->encode_text(ids, mask), passes);
  passes.clear();
  const at::Tensor images = at::randn({450, 3, 32, 32});
  model_->encode_image(images, keep);
  check(model_->encode_image(images), passes);
}

TEST_F(InferenceSlices, FusionBatchEqualsItsPairs) {
  at::NoGradGuard no_grad;
  const auto [ids, mask] = random_captions(75, 30);
  const at::Tensor text_embeds = model_->encode_text(ids, mask);
  const at::Tensor image_embeds = model_->encode_image(at::randn({75, 3, 32, 32}));
  const at::Tensor batch = albef::itm_logits(model_, model_->fuse(text_embeds, mask, image_embeds));
  EXPECT_TENSOR_NEAR(batch, row_by_row(75, [&](int64_t b, int64_t e) {
                       return albef::itm_logits(model_, model_->fuse(text_embeds.slice(0, b, e), mask.slice(0, b, e),
                                                              image_embeds.slice(0, b, e)));
                     }),
                     kTolerance);
  // One image shared by every caption: its keys and values serve all of them, unsliced.
  const at::Tensor shared = albef::itm_logits(model_, model_->fuse(text_embeds, mask, image_embeds.slice(0, 0, 1)));
  EXPECT_TENSOR_NEAR(shared, row_by_row(75, [&](int64_t b, int64_t e) {
                       return albef::itm_logits(model_, 
                           model_->fuse(text_embeds.slice(0, b, e), mask.slice(0, b, e), image_embeds.slice(0, 0, 1)));
                     }),
                     kTolerance);
}

// itm_logits cuts each pass to its longest caption and, over several passes, takes the rows
// shortest first: the logits are still each padded pair's, in the callers' order.
TEST_F(InferenceSlices, ItmPassesCutToTheirLongestCaptionEqualThePaddedPairs) {
  at::NoGradGuard no_grad;
  auto [ids, mask] = random_captions(27, 30);
  mask[3].fill_(0);
  mask[3][0] = 1;   // [CLS] alone
  mask[5].fill_(1);  // the whole 30
  const at::Tensor text_embeds = model_->encode_text(ids, mask);
  const at::Tensor image_embeds = model_->encode_image(at::randn({4, 3, 32, 32}));
  const at::Tensor image_rows = at::arange(27) % 4;
  const auto padded_pair = [&](int64_t row, const at::Tensor& image) {
    return albef::itm_logits(model_,
                             model_->fuse(text_embeds.slice(0, row, row + 1), mask.slice(0, row, row + 1), image));
  };
  for (const int64_t batch : {0, 8}) {
    albef::FusionImages shared(image_embeds.slice(0, 1, 2), /*keep_key_values=*/true);
    EXPECT_TENSOR_NEAR(albef::itm_logits(model_, text_embeds, mask, shared, {}, batch),
                       row_by_row(27, [&](int64_t b, int64_t) { return padded_pair(b, image_embeds.slice(0, 1, 2)); }),
                       kTolerance);
    albef::FusionImages rows_of(image_embeds);
    EXPECT_TENSOR_NEAR(albef::itm_logits(model_, text_embeds, mask, rows_of, image_rows, batch),
                       row_by_row(27, [&](int64_t b, int64_t) {
                         return padded_pair(b, image_embeds.index_select(0, image_rows.slice(0, b, b + 1)));
                       }),
                       kTolerance);
    albef::FusionImages one_each(image_embeds.index_select(0, image_rows));
    EXPECT_TENSOR_NEAR(albef::itm_logits(model_, text_embeds, mask, one_each, {}, batch),
                       albef::itm_logits(model_, text_embeds, mask, rows_of, image_rows, batch), kTolerance);
  }
}

// A gallery's candidates are rows of its states, gathered a pass at a time
// (`text_rows`): the logits of those rows copied out first, in the rows' order,
// repeats included; rows outside the states are refused.
TEST_F(InferenceSlices, ItmOfPickedTextRowsEqualsThoseRowsCopiedOut) {
  at::NoGradGuard no_grad;
  const auto [ids, mask] = random_captions(40, 30);
  const at::Tensor text_embeds = model_->encode_text(ids, mask);
  const at::Tensor image_embeds = model_->encode_image(at::randn({3, 3, 32, 32}));
  const at::Tensor picked = at::tensor({31, 2, 17, 2, 39, 0, 8, 25, 11, 30, 5, 36, 14, 22, 7, 19, 3}, at::kLong);
  const at::Tensor image_rows = at::arange(picked.size(0)) % 3;
  for (const int64_t batch : {0, 5}) {
    albef::FusionImages shared(image_embeds.slice(0, 2, 3), /*keep_key_values=*/true);
    EXPECT_TENSOR_NEAR(
        albef::itm_logits(model_, text_embeds, mask, shared, {}, batch, picked),
        albef::itm_logits(model_, text_embeds.index_select(0, picked), mask.index_select(0, picked), shared, {}, batch),
        kTolerance);
    albef::FusionImages rows_of(image_embeds);
    EXPECT_TENSOR_NEAR(albef::itm_logits(model_, text_embeds, mask, rows_of, image_rows, batch, picked),
                       albef::itm_logits(model_, text_embeds.index_select(0, picked), mask.index_select(0, picked),
                                         rows_of, image_rows, batch),
                       kTolerance);
  }
  albef::FusionImages shared(image_embeds.slice(0, 0, 1), /*keep_key_values=*/true);
  EXPECT_THROW(albef::itm_logits(model_, text_embeds, mask, shared, {}, 0, at::tensor({0, 40}, at::kLong)),
               albef::Error);
  EXPECT_THROW(albef::itm_logits(model_, text_embeds, mask, shared, {}, 0, at::tensor({-1, 3}, at::kLong)),
               albef::Error);
  EXPECT_THROW(albef::itm_logits(model_, text_embeds, mask, shared, {}, 0, at::zeros({2, 2}, at::kLong)),
               albef::Error);
}

// itm_logits' int8 passes (a gallery's re-ranking) hold 512 tokens, as the int8 text encoder's: half a
// bf16 pass's activations beside weights half as large. Other precisions keep the encoders' passes.
TEST_F(InferenceSlices, ItmPassesOfAnInt8ModelHold512Tokens) {
  const albef::Config config = albef::load_config(albef::testing::data_path("tiny/Pretrain.yaml"));
  const std::string checkpoint = albef::testing::data_path("tiny/albef_pretrain_tiny.pth");
  for (const albef::Precision precision : {albef::Precision::Fp32, albef::Precision::Int8}) {
    albef::AlbefModel model =
        albef::load_inference_model(config, albef::retrieval_model_options(false), checkpoint, at::kCPU, precision);
    at::NoGradGuard no_grad;
    const albef::PrecisionGuard guard(precision, at::kCPU);
    EXPECT_EQ(model->fusion_tokens_per_pass(),
              precision == albef::Precision::Int8 ? 512 : albef::inference_tokens_per_pass(*model));
  }
}

// States moved into the fusion (re-ranking's pass of candidates gathered from a gallery, a copy) are the
// fusion's to free (its first layer lets them go once read): nothing holds them when it returns, and the
// fused rows are those of the same states held by the caller.
TEST_F(InferenceSlices, StatesMovedIntoTheFusionAreNotKept) {
  at::NoGradGuard no_grad;
  const auto [ids, mask] = random_captions(6, 8);
  const at::Tensor text_embeds = model_->encode_text(ids, mask);
  albef::FusionImages image(model_->encode_image(at::randn({1, 3, 32, 32})), /*keep_key_values=*/true);
  const at::Tensor expected = model_->fuse(text_embeds, mask, image, {}, /*class_token_only=*/true);
  bool freed = false;
  at::Tensor buffer = text_embeds.clone();  // kept by the deleter until the storage goes
  at::Tensor states = at::from_blob(
      buffer.data_ptr(), buffer.sizes(), [&freed, buffer](void*) { freed = true; }, buffer.options());
  buffer.reset();
  const at::Tensor fused = model_->fuse(std::move(states), mask, image, {}, /*class_token_only=*/true);
  EXPECT_TRUE(freed);
  EXPECT_TRUE(fused.equal(expected));
}

// Texts that read an image each attend to the images' keys and values a few
// hundred image tokens at a time (the tiny ViT's 5 tokens: 102 images), which
// exist for those texts alone: pairs and picked image rows as one by one.
TEST_F(InferenceSlices, CrossAttentionOfManyImagesEqualsItsPairs) {
  at::NoGradGuard no_grad;
  // 4-token captions: slices of 128 pairs, whose cross-attention runs 102 + 26 images.
  const auto [ids, mask] = random_captions(150, 4);
  const at::Tensor text_embeds = model_->encode_text(ids, mask);
  const at::Tensor image_embeds = model_->encode_image(at::randn({150, 3, 32, 32}));
  const auto pair = [&](int64_t row, const at::Tensor& image) {
    return albef::itm_logits(model_,
                             model_->fuse(text_embeds.slice(0, row, row + 1), mask.slice(0, row, row + 1), image));
  };
  EXPECT_TENSOR_NEAR(albef::itm_logits(model_, model_->fuse(text_embeds, mask, image_embeds)),
                     row_by_row(150, [&](int64_t b, int64_t) { return pair(b, image_embeds.slice(0, b, b + 1)); }),
                     kTolerance);
  const at::Tensor image_rows = at::arange(150) % 7;
  albef::FusionImages seven(image_embeds.slice(0, 0, 7));
  EXPECT_TENSOR_NEAR(albef::itm_logits(model_, text_embeds, mask, seven, image_rows),
                     row_by_row(150, [&](int64_t b, int64_t) {
                       return pair(b, image_embeds.index_select(0, image_rows.slice(0, b, b + 1)));
                     }),
                     kTolerance);
}

// The feature paths keep each slice's features only, not the batch's tokens:
// the same numbers as the features taken from all the tokens.
TEST_F(InferenceSlices, FeaturesEqualThoseOfTheWholeBatch) {
  at::NoGradGuard no_grad;
  const auto [ids, mask] = random_captions(80, 30);
  const at::Tensor text_feat = model_->encode_text_features(ids, mask);
  ASSERT_EQ(text_feat.sizes(), (std::vector<int64_t>{80, model_->config().embed_dim}));
  EXPECT_TENSOR_NEAR(text_feat, model_->text_feature(model_->encode_text(ids, mask)), kTolerance);
  const at::Tensor images = at::randn({450, 3, 32, 32});
  const at::Tensor image_feat = model_->encode_image_features(images);
  ASSERT_EQ(image_feat.sizes(), (std::vector<int64_t>{450, model_->config().embed_dim}));
  EXPECT_TENSOR_NEAR(image_feat, model_->image_feature(model_->encode_image(images)), kTolerance);
}

// The feature paths and ITM run their last layer on the CLS row alone: the
// CLS row of the whole pass, in every inference precision and in the
// single-stream BERT (SIMLA), whose text mode runs all its layers.
class ClassToken : public ::testing::Test {
 protected:
  // Each precision this CPU runs (bf16 where oneDNN multiplies it natively), the tiny official model in it.
  template <typename Check>
  void in_every_precision(Check check) {
    const albef::Config config = albef::load_config(albef::testing::data_path("tiny/Pretrain.yaml"));
    const std::string checkpoint = albef::testing::data_path("tiny/albef_pretrain_tiny.pth");
    std::vector<albef::Precision> precisions = {albef::Precision::Fp32, albef::Precision::Int8};
    if (albef::dnnl_bf16_gemm_available()) precisions.push_back(albef::Precision::Bf16);
    for (const albef::Precision precision : precisions) {
      albef::AlbefModel model = albef::load_inference_model(config, albef::retrieval_model_options(false),
                                                            checkpoint, at::kCPU, precision);
      at::NoGradGuard no_grad;
      const albef::PrecisionGuard guard(precision, at::kCPU);
      // The CLS row's products run on fewer rows than the whole layer's: bf16 sums may round apart.
      check(model, precision == albef::Precision::Fp32 ? kTolerance : 2e-3);
    }
  }
  static albef::AlbefModel simla() {
    albef::AlbefModel model(albef::load_config(albef::testing::data_path("simla/Pretrain_tiny.yaml")),
                            albef::simla_model_options());
    model->eval();
    return model;
  }
  void SetUp() override { at::manual_seed(0); }
};

TEST_F(ClassToken, FeaturesEqualThoseOfTheWholeEncoders) {
  const auto [ids, mask] = random_captions(6, 12);
  const at::Tensor images = at::randn({3, 3, 32, 32});
  in_every_precision([&](albef::AlbefModel& model, double tolerance) {
    EXPECT_TENSOR_NEAR(model->encode_image_features(images), model->image_feature(model->encode_image(images)),
                       tolerance);
    EXPECT_TENSOR_NEAR(model->encode_text_features(ids, mask), model->text_feature(model->encode_text(ids, mask)),
                       tolerance);
  });
  albef::AlbefModel single_stream = simla();
  at::NoGradGuard no_grad;
  EXPECT_TENSOR_NEAR(single_stream->encode_text_features(ids, mask),
                     single_stream->text_feature(single_stream->encode_text(ids, mask)), kTolerance);
}

// Each pair's own image, and one image shared by every caption.
TEST_F(ClassToken, FusionEqualsTheClassRowOfTheWholeFusion) {
  const auto [ids, mask] = random_captions(6, 12);
  const at::Tensor images = at::randn({6, 3, 32, 32});
  in_every_precision([&](albef::AlbefModel& model, double tolerance) {
    const at::Tensor text = model->encode_text(ids, mask), image_embeds = model->encode_image(images);
    for (const at::Tensor& embeds : {image_embeds, image_embeds.slice(0, 2, 3)}) {
      const at::Tensor row = model->fuse(text, mask, embeds, /*class_token_only=*/true);
      ASSERT_EQ(row.sizes(), (std::vector<int64_t>{6, 1, text.size(2)}));
      EXPECT_TENSOR_NEAR(row.to(at::kFloat), model->fuse(text, mask, embeds).slice(1, 0, 1).to(at::kFloat),
                         tolerance);
    }
  });
  albef::AlbefModel single_stream = simla();
  at::NoGradGuard no_grad;
  const at::Tensor image_embeds = single_stream->encode_image(at::randn({6, 3, 64, 64}));
  EXPECT_TENSOR_NEAR(single_stream->fuse(ids, mask, image_embeds, /*class_token_only=*/true),
                     single_stream->fuse(ids, mask, image_embeds).slice(1, 0, 1), kTolerance);
}

// With gradients recorded (fine-tuning) the batch runs whole; every row gets its gradient.
TEST_F(InferenceSlices, GradientsReachEveryRow) {
  const auto [ids, mask] = random_captions(40, 30);
  const at::Tensor images = at::randn({40, 3, 32, 32}).requires_grad_();
  const at::Tensor text_embeds = model_->encode_text(ids, mask);
  const at::Tensor fused = model_->fuse(text_embeds, mask, model_->encode_image(images));
  albef::itm_logits(model_, fused).sum().backward();
  ASSERT_TRUE(images.grad().defined());
  EXPECT_GT(images.grad().abs().flatten(1).sum(1).min().item<float>(), 0.0f);
}

}  // namespace
