// Parity with the official PyTorch ALBEF: the tiny fixture checkpoint, run on
// the recorded inputs, must reproduce every recorded activation to 1e-5.

#include "albef/core/runtime.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/albef.h"
#include "albef/model/itm.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <filesystem>

using albef::testing::data_path;

namespace {

// A retrieval-layout model with one side (or none) and no heads, as inference builds one.
albef::ModelOptions one_side(bool text_side, bool image_side, bool momentum_encoders = false) {
  albef::ModelOptions options = albef::retrieval_model_options(momentum_encoders);
  options.text_side = text_side;
  options.image_side = image_side;
  options.heads.clear();
  return options;
}

constexpr double kTolerance = 1e-5;

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("tiny/npy/" + name + ".npy")); }

albef::AlbefModel load_tiny(const std::string& checkpoint) {
  return albef::testing::load_tiny_model(albef::pretrain_model_options(true), checkpoint);
}

// The legacy (non-zip) twin, written by PyTorch itself from the zip file.
std::string legacy_checkpoint() {
  const std::string dir = albef::testing::make_temp_dir("parity_legacy");
  const std::string path = dir + "/albef_pretrain_tiny_legacy.pth";
  const std::string command = std::string(ALBEF_PYTHON3) + " -c \"import torch,sys; torch.save(torch.load(sys.argv[1]), sys.argv[2], _use_new_zipfile_serialization=False)\" " +
                              data_path("tiny/albef_pretrain_tiny.pth") + " " + path;
  std::string output;
  EXPECT_EQ(albef::testing::run_command(command, &output), 0) << output;
  return path;
}

void expect_official_outputs(albef::AlbefModel& model) {
  at::NoGradGuard no_grad;
  const at::Tensor image = fixture("inputs__image");
  const at::Tensor ids = fixture("inputs__input_ids");
  const at::Tensor mask = fixture("inputs__attention_mask");

  const at::Tensor image_embeds = model->encode_image(image);
  EXPECT_TENSOR_NEAR(image_embeds, fixture("eval__comp__image_embeds"), kTolerance);
  const at::Tensor image_feat = model->image_feature(image_embeds);
  EXPECT_TENSOR_NEAR(image_feat, fixture("eval__comp__image_feat"), kTolerance);
  const at::Tensor text_embeds = model->encode_text(ids, mask);
  EXPECT_TENSOR_NEAR(text_embeds, fixture("eval__comp__text_embeds"), kTolerance);
  const at::Tensor text_feat = model->text_feature(text_embeds);
  EXPECT_TENSOR_NEAR(text_feat, fixture("eval__comp__text_feat"), kTolerance);

  // Online features against [the other modality's batch | its queue] / temp.
  const at::Tensor sim_i2t = at::matmul(image_feat, at::cat({text_feat.t(), model->text_queue}, 1)) / model->temp;
  const at::Tensor sim_t2i = at::matmul(text_feat, at::cat({image_feat.t(), model->image_queue}, 1)) / model->temp;
  EXPECT_TENSOR_NEAR(sim_i2t, fixture("eval__comp__sim_i2t_online"), kTolerance);
  EXPECT_TENSOR_NEAR(sim_t2i, fixture("eval__comp__sim_t2i_online"), kTolerance);

  const at::Tensor fused = model->fuse(text_embeds, mask, image_embeds);
  EXPECT_TENSOR_NEAR(fused, fixture("eval__comp__fusion_pos"), kTolerance);
  EXPECT_TENSOR_NEAR(albef::itm_logits(model, fused), fixture("eval__comp__itm_logits_pos"), kTolerance);
  const at::Tensor mlm = model->mlm_logits(ids, mask, image_embeds);
  EXPECT_TENSOR_NEAR(mlm[0], fixture("eval__comp__mlm_logits_unmasked_sample0"), kTolerance);
}

}  // namespace

TEST(ModelParity, ZipCheckpointMatchesOfficialOutputs) {
  albef::AlbefModel model = load_tiny(data_path("tiny/albef_pretrain_tiny.pth"));
  expect_official_outputs(model);
}

TEST(ModelParity, LegacyCheckpointMatchesOfficialOutputs) {
  albef::AlbefModel model = load_tiny(legacy_checkpoint());
  expect_official_outputs(model);
}

TEST(ModelParity, TiedDecoderSharesWordEmbeddings) {
  albef::AlbefModel model = load_tiny(data_path("tiny/albef_pretrain_tiny.pth"));
  const auto state = albef::state_dict(*model);
  auto find = [&](const std::string& key) {
    for (const auto& [name, tensor] : state)
      if (name == key) return tensor;
    ADD_FAILURE() << "no " << key;
    return at::Tensor();
  };
  EXPECT_EQ(find("text_encoder.cls.predictions.decoder.weight").data_ptr(),
            find("text_encoder.bert.embeddings.word_embeddings.weight").data_ptr());
  EXPECT_EQ(find("text_encoder.cls.predictions.decoder.bias").data_ptr(),
            find("text_encoder.cls.predictions.bias").data_ptr());
  EXPECT_EQ(state.size(), 268u);
}

TEST(ModelParity, LazyLoadingGivesTheWeightsOfAnEagerRead) {
  const std::string path = data_path("tiny/albef_pretrain_tiny.pth");
  const albef::AlbefModel lazy = load_tiny(path);  // load_checkpoint
  albef::AlbefModel eager(albef::load_config(data_path("tiny/Pretrain.yaml")),
                          albef::pretrain_model_options(true));
  albef::load_state_dict(eager, albef::io::state_dict_from(albef::io::read_torch_file(path), path), path);
  const auto expected = albef::state_dict(*eager), actual = albef::state_dict(*lazy);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_TRUE(actual[i].second.equal(expected[i].second)) << actual[i].first;
}

TEST(ModelParity, Bf16InferenceWeightsGiveTheAutocastOutputs) {
  albef::AlbefModel autocast = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  albef::AlbefModel prepared = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  albef::prepare_for_inference(prepared, albef::Precision::Bf16);
  // bf16, or its packed bf16 bytes where the CPU has oneDNN's bf16 kernels
  EXPECT_EQ(prepared->vision_proj->weight.scalar_type(), albef::dnnl_bf16_gemm_available() ? at::kByte : at::kBFloat16);
  EXPECT_FALSE(prepared->vision_proj->weight.requires_grad());
  at::NoGradGuard no_grad;
  const albef::PrecisionGuard bf16(albef::Precision::Bf16, at::kCPU);
  auto outputs = [&](albef::AlbefModel& model) {
    const at::Tensor image_embeds = model->encode_image(fixture("inputs__image"));
    const at::Tensor text_embeds = model->encode_text(fixture("inputs__input_ids"), fixture("inputs__attention_mask"));
    return std::vector<at::Tensor>{
        model->image_feature(image_embeds), model->text_feature(text_embeds),
        albef::itm_logits(model, model->fuse(text_embeds, fixture("inputs__attention_mask"), image_embeds)).to(at::kFloat)};
  };
  const auto expected = outputs(autocast), actual = outputs(prepared);
  // The weights are rounded to bf16 the same way, once instead of per call.
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_TENSOR_NEAR(actual[i], expected[i], 1e-5);
  // And the outputs stay within bf16 rounding of the float32 reference.
  EXPECT_TENSOR_NEAR(actual[0], fixture("eval__comp__image_feat"), 3e-2);
}

TEST(ModelParity, ImageOnlyModelLoadsTheImageSideAlone) {
  // What `albef index` loads: the ViT and vision_proj, the same image features, no BERT.
  const albef::Config config = albef::load_config(albef::testing::data_path("tiny/Pretrain.yaml"));
  albef::AlbefModel model(config, one_side(/*text_side=*/false, /*image_side=*/true));
  const albef::LoadReport report =
      albef::load_checkpoint(model, albef::testing::data_path("tiny/albef_pretrain_tiny.pth"));
  EXPECT_TRUE(report.missing_keys.empty());
  for (const auto& [key, tensor] : albef::state_dict(*model))
    EXPECT_TRUE(key == "temp" || key.rfind("visual_encoder.", 0) == 0 || key.rfind("vision_proj.", 0) == 0) << key;
  model->eval();
  at::NoGradGuard no_grad;
  EXPECT_TENSOR_NEAR(model->image_feature(model->encode_image(fixture("inputs__image"))),
                     fixture("eval__comp__image_feat"), kTolerance);
  try {
    model->encode_text(fixture("inputs__input_ids"), fixture("inputs__attention_mask"));
    ADD_FAILURE() << "encode_text ran without a text encoder";
  } catch (const std::exception& error) {
    EXPECT_NE(std::string(error.what()).find("images only"), std::string::npos) << error.what();
  }
  EXPECT_THROW(albef::AlbefModel(config, one_side(false, true, /*momentum_encoders=*/true)),
               std::exception);
}

TEST(ModelParity, TextOnlyModelLoadsTheUnimodalTextLayersAlone) {
  // Caption features need the embeddings, the layers before fusion_layer and
  // text_proj: nothing of the ViT, the fusion layers or the ITM head is built.
  const albef::Config config = albef::load_config(albef::testing::data_path("tiny/Pretrain.yaml"));
  albef::AlbefModel model(config, one_side(/*text_side=*/true, /*image_side=*/false));
  const albef::LoadReport report =
      albef::load_checkpoint(model, albef::testing::data_path("tiny/albef_pretrain_tiny.pth"));
  EXPECT_TRUE(report.missing_keys.empty());
  const std::string fusion_layer = "text_encoder.encoder.layer." + std::to_string(config.bert.fusion_layer) + ".";
  bool any_text_layer = false;
  for (const auto& [key, tensor] : albef::state_dict(*model)) {
    EXPECT_TRUE(key == "temp" || key.rfind("text_encoder.", 0) == 0 || key.rfind("text_proj.", 0) == 0) << key;
    EXPECT_EQ(key.rfind(fusion_layer, 0), std::string::npos) << key;
    EXPECT_EQ(key.find("crossattention"), std::string::npos) << key;
    any_text_layer = any_text_layer || key.rfind("text_encoder.encoder.layer.0.", 0) == 0;
  }
  EXPECT_TRUE(any_text_layer);
  model->eval();
  at::NoGradGuard no_grad;
  const at::Tensor text_embeds = model->encode_text(fixture("inputs__input_ids"), fixture("inputs__attention_mask"));
  EXPECT_TENSOR_NEAR(text_embeds, fixture("eval__comp__text_embeds"), kTolerance);
  EXPECT_TENSOR_NEAR(model->text_feature(text_embeds), fixture("eval__comp__text_feat"), kTolerance);
  try {
    model->encode_image(fixture("inputs__image"));
    ADD_FAILURE() << "encode_image ran without a visual encoder";
  } catch (const std::exception& error) {
    EXPECT_NE(std::string(error.what()).find("texts only"), std::string::npos) << error.what();
  }
  EXPECT_THROW(model->fuse(text_embeds, fixture("inputs__attention_mask"), text_embeds), std::exception);
  EXPECT_THROW(albef::AlbefModel(config, one_side(true, false, /*momentum_encoders=*/true)),
               std::exception);
  EXPECT_THROW(albef::AlbefModel(config, one_side(false, false)),
               std::exception);
}

TEST(ModelParity, RetrievalKindLoadsPretrainCheckpointWithoutMomentum) {
  // Inference models drop `bert.` from the keys (as Retrieval.py does) and
  // skip the MLM head and the momentum copies, with identical outputs.
  albef::AlbefModel model = albef::testing::load_tiny_model(albef::retrieval_model_options(false));
  at::NoGradGuard no_grad;
  const at::Tensor image_embeds = model->encode_image(fixture("inputs__image"));
  const at::Tensor text_embeds = model->encode_text(fixture("inputs__input_ids"), fixture("inputs__attention_mask"));
  EXPECT_TENSOR_NEAR(model->image_feature(image_embeds), fixture("eval__comp__image_feat"), kTolerance);
  EXPECT_TENSOR_NEAR(albef::itm_logits(model, model->fuse(text_embeds, fixture("inputs__attention_mask"), image_embeds)),
                     fixture("eval__comp__itm_logits_pos"), kTolerance);
}

TEST(ModelParity, SharedFusionImagesGiveThePerPairOutputsAndGradients) {
  // Pretraining fuses one batch of images for ITM positives, ITM negatives
  // (rows picked from the batch) and MLM. Projecting their keys and values
  // once must give what per-pair copies of the image tokens give, gradients
  // included.
  albef::AlbefModel model = load_tiny(data_path("tiny/albef_pretrain_tiny.pth"));
  const at::Tensor image = fixture("inputs__image");
  const at::Tensor ids = fixture("inputs__input_ids");
  const at::Tensor mask = fixture("inputs__attention_mask");
  const int64_t batch = image.size(0);
  const at::Tensor rows = at::cat({(at::arange(batch) + 1) % batch, at::zeros({batch}, at::kLong)});
  const std::vector<std::string> weights = {"text_encoder.bert.encoder.layer.2.crossattention.self.key.weight",
                                            "text_encoder.bert.encoder.layer.3.crossattention.self.value.bias",
                                            "visual_encoder.patch_embed.proj.weight"};
  auto run = [&](bool shared) {
    model->zero_grad();
    const at::Tensor image_embeds = model->encode_image(image);
    const at::Tensor text_embeds = model->encode_text(ids, mask);
    const at::Tensor texts = at::cat({text_embeds, text_embeds}), masks = at::cat({mask, mask});
    std::vector<at::Tensor> outputs;
    if (shared) {
      albef::FusionImages images(image_embeds, /*keep_key_values=*/true);
      outputs = {model->fuse(text_embeds, mask, images), model->fuse(texts, masks, images, rows),
                 model->mlm_logits(ids, mask, images)};
    } else {
      outputs = {model->fuse(text_embeds, mask, image_embeds),
                 model->fuse(texts, masks, image_embeds.index_select(0, rows)),
                 model->mlm_logits(ids, mask, image_embeds)};
    }
    (outputs[0].square().sum() + outputs[1].square().sum() + outputs[2].square().mean()).backward();
    for (const auto& name : weights) outputs.push_back(albef::testing::state_tensor(model, name).grad().clone());
    return outputs;
  };
  const std::vector<at::Tensor> per_pair = run(false), shared = run(true);
  for (size_t i = 0; i < 3; ++i) EXPECT_TENSOR_NEAR(shared[i], per_pair[i], kTolerance);
  for (size_t i = 0; i < weights.size(); ++i)
    albef::testing::expect_relative(shared[3 + i], per_pair[3 + i], 1e-5, weights[i]);

  at::NoGradGuard no_grad;
  albef::FusionImages images(model->encode_image(image));
  EXPECT_THROW(model->fuse(model->encode_text(ids, mask), mask, images, rows), std::exception);
}
