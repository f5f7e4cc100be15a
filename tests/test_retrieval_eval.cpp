// The official retrieval evaluation: top-k re-ranking with shared image
// keys/values gives the same scores as scoring every pair on its own, and
// itm_eval computes the official recall metrics.

#include "albef/data/annotations.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/itm.h"
#include "tasks/retrieval/evaluation.h"
#include "albef/vision/image.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fstream>

using albef::testing::data_path;
using albef::testing::source_path;

namespace {

const std::vector<std::string> kCaptions = {
    "a family is sitting down at a table to have cake",
    "horses standing and laying down in the grass on a hill above a lake",
    "a computer desk topped with an open laptop computer",
    "a bike parked under a traffic light next to a blue sign",
    "a group of horses standing on top of a lush green hillside",
    "a desk has a laptop and a lamp on it",
};

std::vector<std::string> images() {
  std::vector<std::string> out;
  for (const char* name : {"000000000790.jpg", "000000078499.jpg", "000000084284.jpg", "000000107438.jpg"})
    out.push_back(source_path(std::string("data/coco-by/images/") + name));
  return out;
}

}  // namespace

TEST(RetrievalEval, RerankedScoresEqualPerPairScores) {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  const albef::text::BertTokenizer tokenizer(model->config().vocab);
  albef::RetrievalEvalOptions options;
  options.k_test = 3;
  options.fusion_batch = 2;  // exercise chunking
  const albef::RetrievalScores scores = albef::evaluate_retrieval(model, tokenizer, images(), kCaptions, options);
  ASSERT_EQ(scores.i2t.sizes(), (std::vector<int64_t>{4, 6}));
  ASSERT_EQ(scores.t2i.sizes(), (std::vector<int64_t>{6, 4}));

  // Reference: every pair scored alone (repeated image, one caption padded alone).
  at::NoGradGuard no_grad;
  model->eval();
  const auto paths = images();
  at::Tensor itc(at::zeros({4, 6}));
  at::Tensor itm(at::zeros({4, 6}));
  for (int i = 0; i < 4; ++i) {
    const at::Tensor image = model->encode_image(albef::vision::load_test_image(paths[i], 32).unsqueeze(0));
    for (int t = 0; t < 6; ++t) {
      const auto enc = tokenizer.encode_batch({kCaptions[t]}, 30, albef::text::Padding::Longest);
      const at::Tensor text = model->encode_text(enc.input_ids, enc.attention_mask);
      itc[i][t] = (model->image_feature(image) * model->text_feature(text)).sum();
      itm[i][t] = albef::itm_logits(model, model->fuse(text, enc.attention_mask, image))[0][1];
    }
  }
  for (int i = 0; i < 4; ++i) {
    const at::Tensor top = std::get<1>(itc[i].topk(3));
    for (int t = 0; t < 6; ++t) {
      const bool chosen = top.eq(t).any().item<bool>();
      EXPECT_NEAR(scores.i2t[i][t].item<double>(), chosen ? itm[i][t].item<double>() : -100.0, 1e-5) << i << "," << t;
    }
  }
  for (int t = 0; t < 6; ++t) {
    const at::Tensor top = std::get<1>(itc.select(1, t).topk(3));
    for (int i = 0; i < 4; ++i) {
      const bool chosen = top.eq(i).any().item<bool>();
      EXPECT_NEAR(scores.t2i[t][i].item<double>(), chosen ? itm[i][t].item<double>() : -100.0, 1e-5) << t << "," << i;
    }
  }
  // A pair both directions rank is fused once.
  const at::Tensor ranked = (scores.i2t != -100) | (scores.t2i.t() != -100);
  EXPECT_LT(ranked.sum().item<int64_t>(), 4 * 3 + 6 * 3);
  EXPECT_EQ(scores.pairs_scored, ranked.sum().item<int64_t>());
}

TEST(RetrievalEval, RanksSplitAcrossProcessesSumToTheWhole) {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  const albef::text::BertTokenizer tokenizer(model->config().vocab);
  albef::RetrievalEvalOptions options;
  options.k_test = 2;
  const auto whole = albef::evaluate_retrieval(model, tokenizer, images(), kCaptions, options);
  options.world_size = 2;
  at::Tensor i2t = at::zeros_like(whole.i2t), t2i = at::zeros_like(whole.t2i);
  for (int rank = 0; rank < 2; ++rank) {
    options.rank = rank;
    const auto part = albef::evaluate_retrieval(model, tokenizer, images(), kCaptions, options);
    // The official all_reduce sums; rows a rank did not score hold -100 there.
    i2t += at::where(part.i2t == -100, at::zeros_like(part.i2t), part.i2t);
    t2i += at::where(part.t2i == -100, at::zeros_like(part.t2i), part.t2i);
  }
  EXPECT_TENSOR_NEAR(at::where(whole.i2t == -100, at::zeros_like(i2t), whole.i2t), i2t, 1e-5);
  EXPECT_TENSOR_NEAR(at::where(whole.t2i == -100, at::zeros_like(t2i), whole.t2i), t2i, 1e-5);
}

// Under bf16 (and int8, which runs under the same autocast) the ITC similarities stay float32 products of
// the features, as in the official evaluation: rounded to bf16, near-ties between captions swap.
TEST(RetrievalEval, Bf16SimilaritiesAreFloat32ProductsOfTheFeatures) {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  const albef::text::BertTokenizer tokenizer(model->config().vocab);
  albef::RetrievalEvalOptions options;
  options.k_test = 2;
  options.precision = albef::Precision::Bf16;
  const albef::RetrievalScores scores = albef::evaluate_retrieval(model, tokenizer, images(), kCaptions, options);
  ASSERT_EQ(scores.itc.scalar_type(), at::kFloat);

  at::NoGradGuard no_grad;
  model->eval();
  const auto encoding = tokenizer.encode_batch(kCaptions, options.max_text_length, albef::text::Padding::Longest);
  at::Tensor image_feats, text_feats;
  {
    const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
    const at::Tensor pixels = albef::vision::normalize_pixels(albef::vision::load_test_pixels(images(), model->config().image_res));
    image_feats = model->image_feature(model->encode_image(pixels)).to(at::kFloat);
    text_feats = model->text_feature(model->encode_text(encoding.input_ids, encoding.attention_mask)).to(at::kFloat);
  }
  EXPECT_TENSOR_NEAR(scores.itc, at::matmul(image_feats, text_feats.t()), 1e-6);
}

TEST(RetrievalEval, ItmEvalMetrics) {
  // 2 images x 4 texts; texts 0,1 belong to image 0 and 2,3 to image 1.
  const at::Tensor i2t = at::tensor({0.9f, 0.1f, 0.5f, 0.2f,  //
                                     0.3f, 0.8f, 0.7f, 0.1f})
                             .view({2, 4});
  const at::Tensor t2i = at::tensor({0.9f, 0.1f,   // text 0 -> image 0: rank 0
                                     0.2f, 0.8f,   // text 1 -> image 0: rank 1
                                     0.4f, 0.6f,   // text 2 -> image 1: rank 0
                                     0.7f, 0.3f})  // text 3 -> image 1: rank 1
                             .view({4, 2});
  const auto metrics = albef::itm_eval(i2t, t2i, {0, 0, 1, 1}, {{0, 1}, {2, 3}});
  // Image 0: best own text (0) at rank 0. Image 1: texts sorted 1,2,... -> own text 2 at rank 1.
  EXPECT_DOUBLE_EQ(metrics["txt_r1"].get<double>(), 50.0);
  EXPECT_DOUBLE_EQ(metrics["txt_r5"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(metrics["img_r1"].get<double>(), 50.0);
  EXPECT_DOUBLE_EQ(metrics["img_r5"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(metrics["txt_r_mean"].get<double>(), (50.0 + 100.0 + 100.0) / 3);
  EXPECT_DOUBLE_EQ(metrics["r_mean"].get<double>(), (50.0 + 100.0 + 100.0) / 3);
}

// The whole bundled set (26 images x 130 captions) with the official tiny
// checkpoint, against the official evaluation() and itm_eval() run in
// PyTorch (tests/python/retrieval_eval_reference.py over
// bench/albef_torch.py, itself checked against the official fixture) on the
// same preprocessed images and token ids.
TEST(RetrievalEval, MatchesTheOfficialEvaluationInPyTorch) {
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  const albef::text::BertTokenizer tokenizer(model->config().vocab);
  const auto dataset =
      albef::data::load_retrieval_eval_dataset(source_path("data/coco-by/captions.json"), source_path("data/coco-by"));
  albef::RetrievalEvalOptions options;
  options.k_test = 16;
  options.fusion_batch = 7;  // chunks that do not divide k
  const albef::RetrievalScores scores =
      albef::evaluate_retrieval(model, tokenizer, dataset.image_paths(), dataset.text, options);
  const nlohmann::json metrics = albef::itm_eval(scores.i2t, scores.t2i, dataset.txt2img, dataset.img2txt);

  const std::string inputs = albef::testing::make_temp_dir("retrieval_parity_in");
  const std::string out = albef::testing::make_temp_dir("retrieval_parity_out");
  std::vector<at::Tensor> images;
  for (const auto& path : dataset.image_paths()) images.push_back(albef::vision::load_test_image(path, 32));
  albef::io::write_npy(inputs + "/images.npy", at::stack(images));
  const auto text = tokenizer.encode_batch(dataset.text, 30, albef::text::Padding::MaxLength);
  albef::io::write_npy(inputs + "/text_ids.npy", text.input_ids);
  albef::io::write_npy(inputs + "/text_mask.npy", text.attention_mask);
  std::ofstream(inputs + "/txt2img.json") << nlohmann::json(dataset.txt2img).dump();
  std::ofstream(inputs + "/img2txt.json") << nlohmann::json(dataset.img2txt).dump();
  std::string log;
  ASSERT_EQ(albef::testing::run_command(std::string(ALBEF_PYTHON3) + " " +
                                            source_path("tests/python/retrieval_eval_reference.py") + " --config " +
                                            data_path("tiny/Pretrain.yaml") + " --checkpoint " +
                                            data_path("tiny/albef_pretrain_tiny.pth") + " --inputs " + inputs +
                                            " --out " + out + " --k_test 16",
                                        &log),
            0)
      << log;

  EXPECT_TENSOR_NEAR(scores.i2t, albef::io::read_npy(out + "/score_i2t.npy"), 1e-5);
  EXPECT_TENSOR_NEAR(scores.t2i, albef::io::read_npy(out + "/score_t2i.npy"), 1e-5);
  const nlohmann::json expected = nlohmann::json::parse(std::ifstream(out + "/metrics.json"));
  for (const auto& [key, value] : expected.items())
    EXPECT_NEAR(metrics.at(key).get<double>(), value.get<double>(), 1e-9) << key;
}

// The PyTorch reference model itself: the official tiny fixture's outputs
// within 1e-5, and the official state_dict names.
TEST(RetrievalEval, PyTorchReferenceMatchesTheOfficialFixture) {
  std::string log;
  EXPECT_EQ(albef::testing::run_command(std::string(ALBEF_PYTHON3) + " " +
                                            source_path("tests/python/check_albef_torch.py") + " --skip-full-size",
                                        &log),
            0)
      << log;
}
