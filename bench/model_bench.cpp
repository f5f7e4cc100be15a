#include "bench/model_bench.h"

#include "bench/machine.h"
#include "bench/memory.h"

#include "albef/config/config.h"
#include "albef/core/runtime.h"
#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/albef.h"
#include "albef/model/itm.h"
#include "core/rows.h"
#include "core/tensor_heap.h"
#include "ops/linear.h"
#include "tasks/retrieval/evaluation.h"
#include "albef/train/optimizer.h"
#include "albef/tasks/classify.h"
#include "albef/tasks/grounding.h"
#include "albef/tasks/pretrain.h"
#include "albef/tasks/retrieval.h"
#include "albef/tasks/nlvr.h"
#include "albef/tasks/ve.h"
#include "albef/tasks/vqa.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/pixels.h"
#include "tasks/classification/classifier.h"
#include "tasks/pretrain/grit_step.h"
#include "tasks/pretrain/simla_model.h"
#include "tasks/pretrain/simla_step.h"
#include "tasks/pretrain/step.h"
#include "tasks/vqa/model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <unistd.h>

namespace albef::bench {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kTextBatch = 64, kItmBatch = 64, kTrainBatch = 8, kTrainTokens = 25, kTextTokens = 30;
constexpr int64_t kVqaQuestions = 16, kQuestionTokens = 12, kNlvrPairs = 16, kVePairs = 32;
constexpr int64_t kGradcamPairs = 16;
// itm_b64's set-up encodes its images this many at a time (one inference pass of 257-token images).
constexpr int64_t kItmSetupImages = 4;
// classify_1000: zero-shot classification of 1,000 images into 1,000 labels (one template each).
constexpr int64_t kClassifyImages = 1000, kClassifyLabels = 1000, kClassifyBatch = 32;
// coco5k_estimate: COCO's 5k test split (5,000 images, 25,000 captions) at k_test 256, both directions.
constexpr int64_t kCocoImages = 5000, kCocoTexts = 25000, kCocoKTest = 256;
constexpr double kCocoPairs = static_cast<double>((kCocoImages + kCocoTexts) * kCocoKTest);

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The middle value (the upper one of an even count).
double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Median seconds of `iters` calls after `warmup` untimed ones.
double time_median(const std::function<void()>& step, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) step();
  std::vector<double> times;
  for (int i = 0; i < std::max(1, iters); ++i) {
    const double start = now_seconds();
    step();
    times.push_back(now_seconds() - start);
  }
  return median_of(times);
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json value = nlohmann::json::parse(in, nullptr, false);
  return value.is_discarded() ? nlohmann::json() : value;
}

// ---------------------------------------------------------------- FLOPs
// Multiply-adds count 2. Matmuls only (they are >97% of the work).

struct Dims {
  double image_tokens, vision_width, vision_depth, vision_mlp, patch_in;
  double width, intermediate, text_layers, fusion_layers, vocab;
};

Dims dims_of(const Config& config, int64_t image_res) {
  Dims d{};
  const double grid = static_cast<double>(image_res / config.vision.patch_size);
  d.image_tokens = grid * grid + 1;
  d.vision_width = static_cast<double>(config.vision.embed_dim);
  d.vision_depth = static_cast<double>(config.vision.depth);
  d.vision_mlp = d.vision_width * config.vision.mlp_ratio;
  d.patch_in = 3.0 * config.vision.patch_size * config.vision.patch_size;
  d.width = static_cast<double>(config.bert.hidden_size);
  d.intermediate = static_cast<double>(config.bert.intermediate_size);
  d.fusion_layers = static_cast<double>(config.bert.num_hidden_layers - config.bert.fusion_layer);
  d.text_layers = static_cast<double>(config.bert.fusion_layer);
  d.vocab = static_cast<double>(config.bert.vocab_size);
  return d;
}

double vit_flops(const Dims& d, double images) {
  const double n = d.image_tokens, w = d.vision_width;
  const double layer = 2 * n * (4 * w * w + 2 * w * d.vision_mlp) + 4 * n * n * w;
  return images * (d.vision_depth * layer + 2 * (n - 1) * d.patch_in * w);
}

double text_layer_flops(const Dims& d, double tokens) {
  const double w = d.width;
  return 2 * tokens * (4 * w * w + 2 * w * d.intermediate) + 4 * tokens * tokens * w;
}

// Features alone (encode_image_features, encode_text_features): the last
// layer's products on the CLS row, besides every token's keys and values
// (the ViT's fused qkv: queries too).
double vit_feature_flops(const Dims& d, double images) {
  const double n = d.image_tokens, w = d.vision_width;
  const double last = 2 * n * 3 * w * w + 2 * (w * w + 2 * w * d.vision_mlp) + 4 * n * w;
  const double layer = 2 * n * (4 * w * w + 2 * w * d.vision_mlp) + 4 * n * n * w;
  return images * ((d.vision_depth - 1) * layer + last + 2 * (n - 1) * d.patch_in * w);
}
double text_feature_flops(const Dims& d, double texts, double tokens) {
  const double w = d.width;
  const double last = 2 * tokens * 2 * w * w + 2 * (2 * w * w + 2 * w * d.intermediate) + 4 * tokens * w;
  return texts * ((d.text_layers - 1) * text_layer_flops(d, tokens) + last);
}

// One fusion layer for one (text, image) pair without the image's K/V
// projections, and those projections alone (once per image when shared).
double fusion_pair_flops(const Dims& d, double tokens) {
  const double w = d.width, n = d.image_tokens;
  return text_layer_flops(d, tokens) + 2 * tokens * 2 * w * w + 4 * tokens * n * w;
}
double fusion_kv_flops(const Dims& d) { return 2 * d.image_tokens * 2 * d.vision_width * d.width; }
// One pair's ITM score without the image's K/V: the last fusion layer on the
// [CLS] row alone (itm_logits), besides every text token's keys and values.
double itm_pair_flops(const Dims& d, double tokens) {
  const double w = d.width, n = d.image_tokens;
  const double last = 2 * tokens * 2 * w * w + 2 * (4 * w * w + 2 * w * d.intermediate) + 4 * tokens * w + 4 * n * w;
  return (d.fusion_layers - 1) * fusion_pair_flops(d, tokens) + last;
}

// vqa_b16 as albef ranks: each question's k candidates through the decoder
// at their own length (`mean_answer_tokens`, real tokens; causal attention
// makes padding irrelevant), cross-attention K/V once per question, the LM
// head on the predicting positions only; plus the first-token pass.
double vqa_flops(const Dims& d, double decoder_layers, double mean_answer_tokens, int64_t k) {
  const double w = d.width, q = kQuestionTokens, sequences = static_cast<double>(kVqaQuestions * k);
  const double per_sequence = text_layer_flops(d, mean_answer_tokens) + 2 * mean_answer_tokens * 2 * w * w +
                              4 * mean_answer_tokens * q * w;
  const double kv = kVqaQuestions * 2 * q * 2 * w * w;
  const double lm_head = 2 * (w * w + w * d.vocab);
  return decoder_layers * (sequences * per_sequence + kv) + (sequences * (mean_answer_tokens - 1) + kVqaQuestions) * lm_head;
}

// coco5k_estimate's step: one image's keys and values, then its captions
// through the fusion layers at their own lengths (`mean_tokens`).
double coco5k_flops(const Dims& d, double mean_tokens) {
  return kCocoKTest * itm_pair_flops(d, mean_tokens) + d.fusion_layers * fusion_kv_flops(d);
}

// gradcam_b16's layer: Grounding.py's default 8 on ALBEF-base (the third
// fusion layer), the same place (or the last fusion layer) in smaller models.
int64_t gradcam_block(int64_t fusion_layer, int64_t num_layers) {
  return fusion_layer + std::min<int64_t>(2, num_layers - fusion_layer - 1);
}
double gradcam_block(const Dims& d) {
  return static_cast<double>(gradcam_block(static_cast<int64_t>(d.text_layers),
                                           static_cast<int64_t>(d.text_layers + d.fusion_layers)));
}

// train_simla_b8's masked patches per image: SIMLA's 75 of 256 at 256 pixels,
// in proportion elsewhere (as bench/pytorch_baseline.py draws them).
double simla_masked_patches(double patches) {
  return std::min(75.0, std::max(1.0, std::round(75.0 * patches / 256.0)));
}

double workload_flops(const std::string& workload, const Dims& d, int64_t n_images, int64_t n_texts,
                      double pairs_scored) {
  const double t = kTextTokens;
  if (workload == "image_b1") return vit_feature_flops(d, 1);
  if (workload == "image_b32") return vit_feature_flops(d, 32);
  if (workload == "text_b64") return text_feature_flops(d, kTextBatch, t);
  if (workload == "itm_b64") return kItmBatch * (itm_pair_flops(d, t) + d.fusion_layers * fusion_kv_flops(d));
  // The classifiers: the ViT over every image, then each text through all
  // layers, NLVR2's fusion layers once per image (each with that image's
  // keys and values), and the [CLS] head (negligible).
  if (workload == "nlvr_b16")
    return vit_flops(d, 2 * kNlvrPairs) +
           kNlvrPairs * (d.text_layers * text_layer_flops(d, t) +
                         2 * d.fusion_layers * (fusion_pair_flops(d, t) + fusion_kv_flops(d)));
  if (workload == "ve_b32")
    return vit_flops(d, kVePairs) +
           kVePairs * (d.text_layers * text_layer_flops(d, t) + d.fusion_layers * (fusion_pair_flops(d, t) + fusion_kv_flops(d)));
  if (workload == "gradcam_b16") {
    // The forward (ViT, text layers, fusion layers) plus the backward from the
    // ITM score down to the cross-attention of the Grad-CAM layer: activation
    // gradients only, about one forward of the fusion layers from there on.
    const double above = d.fusion_layers - (gradcam_block(d) - d.text_layers);
    return vit_flops(d, kGradcamPairs) +
           kGradcamPairs * (d.text_layers * text_layer_flops(d, t) +
                            d.fusion_layers * (fusion_pair_flops(d, t) + fusion_kv_flops(d)) +
                            above * fusion_pair_flops(d, t));
  }
  if (workload == "classify_1000")  // the images' and the labels' features once, and a [1000 x 1000] product
    return vit_feature_flops(d, kClassifyImages) + text_feature_flops(d, kClassifyLabels, t);
  if (workload == "coco5k_estimate") return 0;  // counted from the captions' lengths (coco5k_flops)
  if (workload == "retrieval") {
    // What albef computes: both encoders over the gallery, the pairs it
    // fused (each once: up to (images + texts) x k), K/V once per image.
    return vit_flops(d, n_images) + n_texts * d.text_layers * text_layer_flops(d, t) +
           pairs_scored * itm_pair_flops(d, t) + d.fusion_layers * n_images * fusion_kv_flops(d);
  }
  const double b = kTrainBatch, tt = kTrainTokens;
  if (workload == "train_simla_b8") {
    // SIMLA on its single-stream BERT (all layers): the text mode without
    // cross-attention, 3B pairs and the MLM pass fused from the words (the
    // head on every token), MIM (the masked ViT, then the image tokens through
    // the BERT against the words' embeddings, the 8192-way head on the masked
    // patches) x 3 for forward + backward; the momentum model's image, text,
    // MLM, MIM and keyword passes forward only.
    const double layers = d.text_layers + d.fusion_layers, w = d.width, n = d.image_tokens;
    const double image = vit_flops(d, b), text = b * layers * text_layer_flops(d, tt);
    const double pair = layers * fusion_pair_flops(d, tt), kv = layers * fusion_kv_flops(d);
    const double mim_bert = layers * (text_layer_flops(d, n) + 2 * n * 2 * w * w + 4 * n * tt * w + 2 * tt * 2 * w * w);
    const double masked = b * simla_masked_patches(n - 1);
    const double mim = image + b * mim_bert + masked * 2 * w * kSimlaImageVocabulary;
    const double online = 3 * (image + text + 3 * b * pair + b * kv + b * pair + b * tt * 2 * w * d.vocab + mim);
    return online + image + text + 2 * (b * pair + b * kv) + image + b * mim_bert;
  }
  // train_b8: online forward (image, text, 3B fused pairs, the MLM pass and
  // its vocabulary head) x 3 for forward + backward, plus the momentum
  // model's forward (image, text, MLM pass); train_grit_b8 has no momentum model.
  const double image = vit_flops(d, b), text = b * d.text_layers * text_layer_flops(d, tt);
  const double fused = d.fusion_layers * (fusion_pair_flops(d, tt) + fusion_kv_flops(d));
  const double mlm = text + b * fused + b * tt * 2 * d.width * d.vocab;
  const double online = 3 * (image + text + 3 * b * fused + mlm);
  return workload == "train_grit_b8" ? online : online + (image + text + mlm);
}

// ---------------------------------------------------------------- GEMM peak

/// Best of 5 2048^3 products through `product` (after a warm-up that creates
/// oneDNN primitives and faults the pages in), in GFLOP/s.
double gemm_gflops(at::ScalarType dtype, const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& product) {
  const int64_t n = 2048;
  const at::Tensor a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype);
  at::Tensor c = product(a, b);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const double start = now_seconds();
    c = product(a, b);
    best = std::min(best, now_seconds() - start);
  }
  return 2.0 * n * n * n / best / 1e9;
}

/// The GEMM rates this process can reach: LibTorch's `at::mm` in both
/// precisions, and the oneDNN float32 path albef's linears take when built with it.
nlohmann::json measure_gemm_paths() {
  nlohmann::json paths = {{"fp32_aten", gemm_gflops(at::kFloat, [](auto& a, auto& b) { return at::mm(a, b); })},
                          {"bf16_aten", gemm_gflops(at::kBFloat16, [](auto& a, auto& b) { return at::mm(a, b); })}};
  if (ops::dnnl_gemm_available())
    paths["fp32_dnnl"] = gemm_gflops(at::kFloat, [](auto& a, auto& b) { return ops::matmul_nt(a, b); });
  if (dnnl_bf16_gemm_available())  // bf16 inference's path: the matmul primitive on packed weights
    paths["bf16_dnnl"] = gemm_gflops(at::kBFloat16, [](auto& a, auto& b) {
      const PrecisionGuard bf16(Precision::Bf16, c10::kCPU);
      return ops::matmul_nt(a, b);
    });
  return paths;
}

// ---------------------------------------------------------------- worker

void save_outputs(const std::string& dir, const std::vector<std::pair<std::string, at::Tensor>>& outputs) {
  if (dir.empty()) return;
  fs::create_directories(dir);
  for (const auto& [name, tensor] : outputs) io::write_npy(dir + "/" + name + ".npy", tensor.detach().to(at::kFloat));
}

double parameter_mb(AlbefModel& model) {
  double bytes = 0;
  for (const auto& parameter : model->parameters()) bytes += static_cast<double>(parameter.nbytes());
  return bytes / (1 << 20);
}

}  // namespace

const std::vector<std::string>& model_workloads() {
  static const std::vector<std::string> names = {"image_b1", "image_b32", "text_b64",    "itm_b64", "retrieval",
                                                 "vqa_b16",  "nlvr_b16",  "ve_b32",      "gradcam_b16", "classify_1000",
                                                 "coco5k_estimate", "train_b8", "train_grit_b8", "train_simla_b8"};
  return names;
}

bool is_training(const std::string& workload) {
  return workload == "train_b8" || workload == "train_grit_b8" || workload == "train_simla_b8";
}

void run_model_worker(const WorkerRequest& request) {
  init_runtime(request.threads);
  const double runtime_mb = static_cast<double>(resident_bytes()) / (1 << 20);
  const int64_t runtime_file_bytes = resident_file_bytes();
  const Precision precision = parse_precision(request.precision);
  const c10::Device device(c10::kCPU);
  Config config = load_config(request.config);
  const bool train = is_training(request.workload), grit = request.workload == "train_grit_b8";
  const bool simla = request.workload == "train_simla_b8";
  // GRIT's step on the pretraining config's model at GRIT's masking rate (its Pretrain.yaml: 0.5).
  if (grit) config.mlm_probability = 0.5;
  const bool vqa = request.workload == "vqa_b16";
  const bool nlvr = request.workload == "nlvr_b16", ve = request.workload == "ve_b32";
  // Only the inputs the workload uses stay in memory: peak memory is the workload's own.
  const bool images_only = request.workload == "image_b1" || request.workload == "image_b32";
  const bool texts_only = request.workload == "text_b64";
  at::Tensor images, text_ids, text_mask;
  {
    // Mapped from the OS: the part of a file a workload does not use (31 of image_b1's 32 images) goes
    // back when freed instead of staying in the heap, where it would count as the workload's memory.
    const TransientBuffersToOs transient;
    if (!texts_only) {
      images = io::read_npy(request.inputs + "/images.npy");
      if (request.workload == "image_b1" || train)
        images = images.slice(0, 0, std::min<int64_t>(images.size(0), train ? kTrainBatch : 1)).clone();
      // Inference holds the 8-bit pixels, as albef's loaders give them; a training step reads floats.
      if (train) images = vision::normalize_pixels(images);
      config.image_res = images.size(-1);
    }
    const std::string texts = vqa ? "/question" : "/text";
    text_ids = io::read_npy(request.inputs + texts + "_ids.npy");
    text_mask = io::read_npy(request.inputs + texts + "_mask.npy");
  }
  // What the workload holds as its inputs (the files, then any embeddings prepared for the timed step):
  // memory the caller's data takes, beside the model's.
  int64_t input_bytes = (images.defined() ? images.nbytes() : 0) + text_ids.nbytes() + text_mask.nbytes();

  // Encoding one modality loads that side alone, as `albef index` and `albef embed` do.
  ModelOptions model_options = simla  ? simla_model_options()
                               : train  ? pretrain_model_options(/*momentum_encoders=*/!grit)
                               : vqa  ? vqa_model_options(config, false)
                               : nlvr ? nlvr_model_options(config, false)
                               : ve   ? ve_model_options(false)
                                      : retrieval_model_options(false);
  model_options.text_side = !images_only;
  model_options.image_side = !texts_only;
  if (images_only || texts_only) model_options.heads.clear();
  // Inference loads as the commands do (load_inference_model: a bf16 model is built in bf16, an int8 one
  // quantised); "weights_mb" is then what the model holds for its weights in that precision.
  AlbefModel model{nullptr};
  if (train) {
    model = AlbefModel(config, model_options);
    load_checkpoint(model, request.weights);
  } else {
    model = load_inference_model(config, model_options, request.weights, device, precision);
  }
  const double weights_mb = parameter_mb(model);
  nlohmann::json report = {{"workload", request.workload}, {"precision", request.precision},
                           {"runtime_mb", runtime_mb}, {"loaded_peak_mb", static_cast<double>(peak_resident_bytes()) / (1 << 20)},
                           {"threads", at::get_num_threads()}, {"weights_mb", weights_mb}};
  std::vector<std::pair<std::string, at::Tensor>> outputs;
  int64_t items = 0;
  std::string unit;
  std::function<void()> step;

  if (!train) {
    if (request.workload == "image_b1" || request.workload == "image_b32") {
      items = request.workload == "image_b1" ? 1 : 32;
      unit = "images/s";
      const at::Tensor batch = images.slice(0, 0, items).contiguous();
      step = [&, batch] {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        outputs = {{"image_feat", model->encode_image_features(batch)}};
      };
    } else if (request.workload == "text_b64") {
      items = kTextBatch;
      unit = "texts/s";
      const at::Tensor ids = text_ids.slice(0, 0, items), mask = text_mask.slice(0, 0, items);
      step = [&, ids, mask] {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        outputs = {{"text_feat", model->encode_text_features(ids, mask)}};
      };
    } else if (request.workload == "itm_b64") {
      items = kItmBatch;
      unit = "pairs/s";
      const at::Tensor ids = text_ids.slice(0, 0, items), mask = text_mask.slice(0, 0, items);
      at::Tensor text_embeds, image_embeds;
      {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        text_embeds = model->encode_text(ids, mask);
        // The images' states held as the fusion's key and value products read them, as the retrieval
        // evaluation holds its gallery (bf16 under bf16: half the memory, the same products), written a
        // few images at a time straight into each of the 64 rows that repeat them: a copy of the 32 images'
        // states (12 MB in bf16) would leave a hole in the heap that the step's passes do not fill.
        const int64_t count = images.size(0);
        for (int64_t begin = 0; begin < count; begin += kItmSetupImages) {
          const int64_t end = std::min(count, begin + kItmSetupImages);
          const at::Tensor states = ops::product_input(model->encode_image(images.slice(0, begin, end)));
          for (int64_t row = begin; row < items; row += count)
            write_rows(image_embeds, items, row, states.slice(0, 0, std::min(end - begin, items - row)));
        }
        images = at::Tensor();
      }
      // The step fuses the embeddings: the images and token ids they came from are not its inputs.
      input_bytes = text_embeds.nbytes() + image_embeds.nbytes() + mask.nbytes();
      text_ids = at::Tensor();
      step = [&, text_embeds, image_embeds, mask] {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        outputs = {{"itm_logits", albef::itm_logits(model, model->fuse(text_embeds, mask, image_embeds,
                                                                       /*class_token_only=*/true))}};
      };
    } else if (request.workload == "retrieval") {
      items = images.size(0) + text_ids.size(0);
      unit = "queries/s";
      RetrievalEvalOptions options;
      options.k_test = request.k_test;
      options.precision = precision;
      report["k_test"] = request.k_test;
      const text::BatchEncoding texts{text_ids, text_mask};
      step = [&, options, texts] {
        const RetrievalScores scores = evaluate_retrieval(
            model, images.size(0), [&](int64_t begin, int64_t end) { return images.slice(0, begin, end); }, texts,
            options);
        outputs = {{"score_i2t", scores.i2t}, {"score_t2i", scores.t2i}};
        report["pairs_scored"] = scores.pairs_scored;
      };
    } else if (nlvr || ve) {
      // NLVR.py / VE.py's evaluate() on one batch: ViT, the multimodal text encoder, cls_head.
      items = nlvr ? kNlvrPairs : kVePairs;
      unit = "pairs/s";
      const at::Tensor batch = images.slice(0, 0, items * (nlvr ? 2 : 1)).contiguous();
      const at::Tensor ids = text_ids.slice(0, 0, items), mask = text_mask.slice(0, 0, items);
      step = [&, batch, ids, mask] {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        outputs = {{"logits", classification::classify(model, "cls_head",
                                                       classification::fuse_items(model, false, batch, ids, mask))}};
      };
    } else if (request.workload == "gradcam_b16") {
      // Grounding.py's val() on one batch in itm mode: forward, the backward to
      // the attention of the Grad-CAM layer, the map.
      items = kGradcamPairs;
      unit = "expressions/s";
      const at::Tensor batch = images.slice(0, 0, items).contiguous();
      const at::Tensor ids = text_ids.slice(0, 0, items), mask = text_mask.slice(0, 0, items);
      const int64_t block = gradcam_block(config.bert.fusion_layer, config.bert.num_hidden_layers);
      report["block_num"] = block;
      step = [&, batch, ids, mask, block] {
        PrecisionGuard guard(precision, device);
        outputs = {{"gradcam", compute_gradcam(model, batch, ids, mask, {GradcamMode::Itm, block}).maps}};
      };
    } else if (request.workload == "classify_1000") {
      // albef classify's work: the label side once (one template per label,
      // normalised ITC text features), then every image through the ViT in
      // batches, scored against all labels (softmax at temp, top 5).
      items = kClassifyImages;
      unit = "images/s";
      const at::Tensor rows = at::arange(kClassifyLabels) % text_ids.size(0);
      const at::Tensor label_ids = text_ids.index_select(0, rows), label_mask = text_mask.index_select(0, rows);
      report["labels"] = kClassifyLabels;
      step = [&, label_ids, label_mask] {
        const double start = now_seconds();
        ZeroShotLabels labels;
        {
          at::NoGradGuard no_grad;
          PrecisionGuard guard(precision, device);
          std::vector<at::Tensor> features;
          for (int64_t begin = 0; begin < kClassifyLabels; begin += 256) {
            const int64_t end = std::min(kClassifyLabels, begin + 256);
            features.push_back(
                model->encode_text_features(label_ids.slice(0, begin, end), label_mask.slice(0, begin, end)));
          }
          labels.features = l2_normalize(at::cat(features));
          labels.names.resize(kClassifyLabels);
        }
        report["label_seconds"] = now_seconds() - start;
        at::Tensor top;
        for (int64_t begin = 0; begin < kClassifyImages; begin += kClassifyBatch) {
          const at::Tensor batch =
              images.index_select(0, at::arange(begin, std::min(kClassifyImages, begin + kClassifyBatch)) % images.size(0));
          top = classify_images(model, labels, batch, 5, 0, precision).ranked_probabilities;
        }
        outputs = {{"top5_probabilities", top}};
      };
    } else if (request.workload == "coco5k_estimate") {
      // What a COCO-5k evaluation spends its time on, on COCO's own captions (the bundled ones, padded to
      // 30 tokens as the official evaluation pads them): every query re-ranks 256 candidates with one
      // image's keys and values shared (text -> image grouped by image), which the step times; the
      // encoders' rates are timed once beside it.
      items = kCocoKTest;
      unit = "pairs/s";
      const at::Tensor rows = at::arange(kCocoKTest) % text_ids.size(0);
      const at::Tensor ids = text_ids.index_select(0, rows), mask = text_mask.index_select(0, rows);
      at::Tensor states, image;
      {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        const auto seconds_per_item = [](const std::function<at::Tensor()>& encode, int64_t count, at::Tensor& out) {
          encode();  // warm-up
          const double start = now_seconds();
          out = encode();
          return (now_seconds() - start) / static_cast<double>(count);
        };
        report["image_seconds"] = seconds_per_item([&] { return model->encode_image(images); }, images.size(0), image);
        // One image's states stay, as the evaluation keeps its gallery's (ops::product_input; a view would
        // keep all 16), before the texts are encoded beside them.
        image = ops::product_input(image.slice(0, 0, 1)).clone();
        images = at::Tensor();
        report["text_seconds"] = seconds_per_item(
            [&] { return model->fusion_input(ids, model->encode_text(ids, mask)); }, kCocoKTest, states);
      }
      give_back_free_pages();  // as evaluate_retrieval does between encoding its gallery and re-ranking
      // The step re-ranks from the states: the images and token ids they came from are not its inputs.
      input_bytes = states.nbytes() + image.nbytes() + mask.nbytes();
      text_ids = at::Tensor();
      step = [&, states, mask, image] {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        outputs = {{"itm_scores", rerank_one_image(model, image, states, mask, at::arange(kCocoKTest),
                                                   RetrievalEvalOptions{}.fusion_batch)}};
      };
    } else if (vqa) {
      // VQA.py's evaluation of one batch from the question states on, as the PyTorch side times it.
      items = kVqaQuestions;
      unit = "questions/s";
      const at::Tensor answer_ids = io::read_npy(request.inputs + "/answer_ids.npy");
      const at::Tensor answer_mask = io::read_npy(request.inputs + "/answer_mask.npy");
      const at::Tensor mask = text_mask.slice(0, 0, items);
      at::Tensor states;
      {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        states = encode_questions(model, images.slice(0, 0, items), text_ids.slice(0, 0, items), mask);
      }
      report["k_test"] = request.k_test_vqa;
      report["answers"] = answer_ids.size(0);
      step = [&, states, mask, answer_ids, answer_mask] {
        at::NoGradGuard no_grad;
        PrecisionGuard guard(precision, device);
        const AnswerRanking ranking = rank_answers(model, states, mask, answer_ids, answer_mask, request.k_test_vqa);
        // Order-free outputs: the first stage's near-ties may rank differently on the two sides.
        outputs = {{"prob_first_token", ranking.prob_first_token}, {"topk_probs", ranking.topk_probs}};
      };
    } else {
      fail("unknown workload '", request.workload, "'");
    }
  } else {
    model->train();
    items = kTrainBatch;
    unit = "samples/s";
    const at::Tensor batch = images.slice(0, 0, kTrainBatch).contiguous();
    const at::Tensor ids = text_ids.slice(0, 0, kTrainBatch).slice(1, 0, kTrainTokens).contiguous();
    const at::Tensor mask = text_mask.slice(0, 0, kTrainBatch).slice(1, 0, kTrainTokens).contiguous();
    auto optimizer = std::make_shared<AdamW>(create_optimizer(*model, config.optimizer));
    // SIMLA's image side, drawn once with a generator of its own (the step's draws are untouched):
    // distinct random patches per image and random visual tokens (the dVAE is not part of the step).
    SimlaImageTargets targets;
    if (simla) {
      const int64_t patches = model->visual_encoder->num_patches();
      const auto count = static_cast<int64_t>(simla_masked_patches(static_cast<double>(patches)));
      at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
      targets.masked_patches = at::zeros({kTrainBatch, patches}, at::kBool);
      for (int64_t row = 0; row < kTrainBatch; ++row)
        targets.masked_patches[row].index_fill_(0, at::randperm(patches, generator).slice(0, 0, count), true);
      targets.visual_token_ids = at::randint(kSimlaImageVocabulary, {kTrainBatch, patches}, generator);
    }
    step = [&, optimizer, batch, ids, mask, targets] {
      optimizer->zero_grad();
      std::vector<at::Tensor> losses;
      {
        PrecisionGuard guard(precision, device);
        if (grit) {
          const GritStepOutputs out = grit_forward(model, batch, ids, mask, MlmTokenIds{});
          losses = {out.loss_mlm, out.loss_ita, out.loss_itm};
        } else if (simla) {
          const SimlaStepOutputs out = simla_forward(model, batch, ids, mask, targets, config.alpha, MlmTokenIds{});
          losses = {out.step.loss_mlm, out.step.loss_ita, out.step.loss_itm, out.loss_mim, out.loss_pseudo};
        } else {
          const StepOutputs out = pretrain_forward(model, batch, ids, mask, 0.4, MlmTokenIds{});
          losses = {out.loss_mlm, out.loss_ita, out.loss_itm};
        }
      }
      at::stack(losses).sum().backward();
      optimizer->step();
      outputs = {{"losses", at::stack(losses).detach()}};
    };
  }
  at::manual_seed(0);
  const double seconds = time_median(step, request.warmup, request.iters);
  save_outputs(request.outputs_dir, outputs);
  report.update({{"seconds", seconds},
                 {"rate", static_cast<double>(items) / seconds},
                 {"unit", unit},
                 {"items", items},
                 {"peak_rss_mb", static_cast<double>(peak_resident_bytes()) / (1 << 20)},
                 {"inputs_mb", static_cast<double>(input_bytes) / (1 << 20)},
                 {"code_mb", static_cast<double>(resident_file_bytes() - runtime_file_bytes) / (1 << 20)}});
  write_atomically(request.out_json, [&](const std::string& tmp) { std::ofstream(tmp) << report.dump(1) << "\n"; });
}

// ---------------------------------------------------------------- orchestration

namespace {

// The weights each workload loads.
struct WeightFiles {
  std::string pretrain, retrieval, vqa, nlvr, ve, simla;  // empty: not needed
};

// A model of `config` and `model_options` loaded from the pretraining
// model's state (converted as the task's script converts a pretraining
// checkpoint), written without momentum copies to `path`.
void write_task_weights(const std::string& path, Config config, const ModelOptions& model_options,
                        const io::StateDict& pretrain_state, int64_t image_res) {
  if (path.empty()) return;
  config.image_res = image_res;  // the benchmark's resolution: no position-embedding resampling
  AlbefModel model(config, model_options);
  load_state_dict(model, pretrain_state, path);
  io::write_torch_file(path, io::state_dict_to_object(state_dict(*model)));
}

// Random full-size weights (seed 0) or the given checkpoint, written once in
// the pretraining layout (with momentum copies, for the training step) and
// in each inference workload's layout without them (the VQA decoder
// initialised from the fusion layers as VQA.py does, NLVR2's doubled fusion
// layers as Pretrain_nlvr.py converts them; the classifier heads random).
void write_weights(const ModelBenchOptions& options, const WeightFiles& files) {
  const Config pretrain = load_config(options.pretrain_config);
  at::manual_seed(0);
  AlbefModel train_model(pretrain, pretrain_model_options(true));
  train_model->init_weights();
  if (!options.checkpoint.empty())
    load_checkpoint(train_model, options.checkpoint);
  const io::StateDict state = state_dict(*train_model);
  io::write_torch_file(files.pretrain, io::state_dict_to_object(state));
  const int64_t res = pretrain.image_res;
  write_task_weights(files.retrieval, load_config(options.retrieval_config), retrieval_model_options(false), state, res);
  const Config vqa = load_config(options.vqa_config), nlvr = load_config(options.nlvr_config);
  write_task_weights(files.vqa, vqa, vqa_model_options(vqa, false), state, res);
  write_task_weights(files.nlvr, nlvr, nlvr_model_options(nlvr, false), state, res);
  write_task_weights(files.ve, load_config(options.ve_config), ve_model_options(false), state, res);
  if (!files.simla.empty()) {
    // SIMLA's own model (single-stream BERT, its heads), random from seed 0, momentum copies included.
    Config simla_config = load_config(options.simla_config);
    simla_config.image_res = res;  // the benchmark's resolution: no position-embedding resampling
    at::manual_seed(0);
    AlbefModel simla(simla_config, simla_model_options());
    simla->init_weights();
    io::write_torch_file(files.simla, io::state_dict_to_object(state_dict(*simla)));
  }
}

// Images as the test transform's resize leaves them: 8-bit RGB planes [n, 3, res, res].
at::Tensor random_pixels(int64_t n, int64_t image_res) {
  return at::randint(0, 256, {n, 3, image_res, image_res}, at::kByte);
}

// vqa_b16's inputs: 16 images and questions (8 to 12 tokens, padded to 12)
// and a synthetic answer list shaped like VQA v2's: `[CLS] pieces [SEP]`,
// padded with 0 to the longest (10 tokens), with 1 word piece for 62% of the
// answers, 2 for 25%, 3 for 9%, 4 for 3%, 6 for 1% and 8 for one. Every answer
// starts with its own word piece, so no two tie in the first stage (answers
// sharing a first piece tie there, and the two sides could then break the tie
// differently).
void write_vqa_inputs(const std::string& dir, int64_t answers, int64_t image_res) {
  fs::create_directories(dir);
  at::manual_seed(0);
  io::write_npy(dir + "/images.npy", random_pixels(kVqaQuestions, image_res));
  at::Tensor question_ids = at::randint(1000, 30000, {kVqaQuestions, kQuestionTokens}, at::kLong);
  at::Tensor question_mask = at::zeros({kVqaQuestions, kQuestionTokens}, at::kLong);
  for (int64_t q = 0; q < kVqaQuestions; ++q) {
    const int64_t length = kQuestionTokens - q % 5;  // the longest sets the padding, as tokenizer(padding='longest')
    question_ids[q][0] = 101;
    question_ids[q][length - 1] = 102;
    question_ids[q].slice(0, length).fill_(0);
    question_mask[q].slice(0, 0, length).fill_(1);
  }
  io::write_npy(dir + "/question_ids.npy", question_ids);
  io::write_npy(dir + "/question_mask.npy", question_mask);

  const int64_t longest = 8, width = longest + 2;
  const at::Tensor first_pieces = at::randperm(29000, at::kLong).slice(0, 0, answers) + 1000;
  at::Tensor answer_ids = at::randint(1000, 30000, {answers, width}, at::kLong);
  at::Tensor answer_mask = at::zeros({answers, width}, at::kLong);
  for (int64_t a = 0; a < answers; ++a) {
    const double share = static_cast<double>(a) / static_cast<double>(answers);
    const int64_t pieces = a == answers - 1 ? longest
                           : share < 0.62   ? 1
                           : share < 0.87   ? 2
                           : share < 0.96   ? 3
                           : share < 0.99   ? 4
                                            : 6;
    answer_ids[a][0] = 101;
    answer_ids[a][1] = first_pieces[a];
    answer_ids[a][pieces + 1] = 102;
    answer_ids[a].slice(0, pieces + 2).fill_(0);
    answer_mask[a].slice(0, 0, pieces + 2).fill_(1);
  }
  io::write_npy(dir + "/answer_ids.npy", answer_ids);
  io::write_npy(dir + "/answer_mask.npy", answer_mask);
}

// A retrieval evaluation is long enough to time once; one image is not. A training step is
// timed in steady state: the first two steps grow the heap to its peak (about
// 8 GB) and page-fault through it, taking up to twice as long as later ones.
int iters_of(const std::string& workload, const ModelBenchOptions& options) {
  if (workload == "retrieval" || workload == "vqa_b16" || workload == "classify_1000") return 1;
  if (workload == "image_b1") return std::max(options.iters, 10);  // 0.1-0.3 s a call: time more of them
  return is_training(workload) ? std::max(options.iters, 3) : options.iters;
}

int warmup_of(const std::string& workload, const ModelBenchOptions& options) {
  if (workload == "classify_1000") return 0;  // 1,000 images: long enough to time cold
  return is_training(workload) ? std::max(options.warmup, 2) : options.warmup;
}

void write_inputs(const std::string& dir, int64_t images, int64_t texts, int64_t image_res) {
  fs::create_directories(dir);
  at::manual_seed(0);
  io::write_npy(dir + "/images.npy", random_pixels(images, image_res));
  at::Tensor ids = at::randint(1000, 30000, {texts, kTextTokens}, at::kLong);
  ids.select(1, 0).fill_(101);  // [CLS], as the tokenizer starts every caption
  io::write_npy(dir + "/text_ids.npy", ids);
  io::write_npy(dir + "/text_mask.npy", at::ones({texts, kTextTokens}, at::kLong));
}

// coco5k_estimate's inputs: 16 images and COCO's captions as the official evaluation feeds them
// (pre_caption, then padded to 30 tokens): the bundled pairs, whose lengths are COCO's.
void write_coco_inputs(const std::string& dir, const std::string& path, const Config& config, int64_t image_res) {
  std::ifstream in(path);
  if (!in) fail("bench --workload coco5k_estimate: no ", path, " (run it from the repository root or pass --captions)");
  std::vector<std::string> captions;
  for (const nlohmann::json& item : nlohmann::json::parse(in))
    for (const nlohmann::json& caption : item.at("caption"))
      captions.push_back(text::pre_caption(caption.get<std::string>()));
  const text::BatchEncoding encoding =
      text::BertTokenizer(config.vocab).encode_batch(captions, kTextTokens, text::Padding::MaxLength);
  fs::create_directories(dir);
  at::manual_seed(0);
  io::write_npy(dir + "/images.npy", random_pixels(16, image_res));
  io::write_npy(dir + "/text_ids.npy", encoding.input_ids);
  io::write_npy(dir + "/text_mask.npy", encoding.attention_mask);
}

// The real tokens per caption of coco5k_estimate's step (its 256 rows, drawn as the worker draws them).
double coco_mean_tokens(const std::string& dir) {
  const at::Tensor mask = io::read_npy(dir + "/text_mask.npy");
  return mask.index_select(0, at::arange(kCocoKTest) % mask.size(0)).sum().item<double>() / kCocoKTest;
}

// Largest |a - b| relative to max |b| over the outputs both sides wrote;
// score matrices are compared where both scored the pair (not -100).
std::optional<double> output_difference(const std::string& albef_dir, const std::string& torch_dir) {
  if (!fs::is_directory(albef_dir) || !fs::is_directory(torch_dir)) return std::nullopt;
  std::optional<double> worst;
  for (const auto& entry : fs::directory_iterator(albef_dir)) {
    const std::string other = torch_dir + "/" + entry.path().filename().string();
    if (entry.path().filename() == "losses.npy" || !fs::exists(other)) continue;  // random masks differ
    at::Tensor a = io::read_npy(entry.path().string()).to(at::kDouble), b = io::read_npy(other).to(at::kDouble);
    if (a.sizes() != b.sizes()) return 1e30;
    const at::Tensor both = (a != -100) & (b != -100);
    a = a.masked_select(both);
    b = b.masked_select(both);
    if (b.numel() == 0) continue;
    const double diff = (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
    worst = std::max(worst.value_or(0.0), diff);
  }
  return worst;
}

std::string quoted(const std::string& text) { return "'" + text + "'"; }

}  // namespace

nlohmann::json run_model_bench(const ModelBenchOptions& options, const std::string& self_exe) {
  if (options.rounds < 1) fail("bench: --rounds must be at least 1, got ", options.rounds);
  if (options.vqa_k_test < 1 || options.vqa_k_test > options.vqa_answers)
    fail("bench: the VQA k_test ", options.vqa_k_test, " must be between 1 and the ", options.vqa_answers,
         " answers");
  if (options.k_test > options.gallery_images)
    fail("bench: k_test ", options.k_test, " needs a gallery of at least as many images (the official evaluation "
         "takes the top k_test images of every caption), got ", options.gallery_images);
  const bool temporary = options.workdir.empty();
  const std::string dir = temporary ? (fs::temp_directory_path() / ("albef_bench_" + std::to_string(::getpid()))).string()
                                    : options.workdir;
  fs::create_directories(dir);
  const std::vector<std::string> workloads = options.workloads.empty() ? model_workloads() : options.workloads;
  const auto selected = [&](const char* name) {
    return std::find(workloads.begin(), workloads.end(), name) != workloads.end();
  };
  const bool vqa = selected("vqa_b16");
  WeightFiles weight_files{dir + "/weights_pretrain.pth", dir + "/weights_retrieval.pth",
                           vqa ? dir + "/weights_vqa.pth" : "", selected("nlvr_b16") ? dir + "/weights_nlvr.pth" : "",
                           selected("ve_b32") ? dir + "/weights_ve.pth" : "",
                           selected("train_simla_b8") ? dir + "/weights_simla.pth" : ""};
  const int64_t image_res = load_config(options.pretrain_config).image_res;
  std::cout << "writing full-size weights and inputs to " << dir << " ..." << std::endl;
  write_weights(options, weight_files);
  if (vqa) write_vqa_inputs(dir + "/vqa", options.vqa_answers, image_res);
  write_inputs(dir + "/inputs", std::max<int64_t>(32, options.gallery_images),
               std::max<int64_t>(kTextBatch, 5 * options.gallery_images), image_res);
  // The retrieval gallery: N images x 5N captions (the other inputs serve
  // the fixed-batch workloads). The official evaluation needs k_test <= N.
  write_inputs(dir + "/gallery", options.gallery_images, 5 * options.gallery_images, image_res);
  if (selected("coco5k_estimate"))
    write_coco_inputs(dir + "/coco", options.coco_captions, load_config(options.retrieval_config), image_res);

  nlohmann::json report;
  std::cout << "measuring the GEMM peak (2048^3 matmuls) ..." << std::endl;
  // The peak is the best path available, so "% of peak" is against the fastest GEMM this machine offers.
  const nlohmann::json paths = measure_gemm_paths();
  report["gemm_gflops_by_path"] = paths;
  report["gemm_peak_gflops"] = {{"fp32", std::max(paths["fp32_aten"].get<double>(), paths.value("fp32_dnnl", 0.0))},
                                {"bf16", std::max(paths["bf16_aten"].get<double>(), paths.value("bf16_dnnl", 0.0))}};
  report["threads"] = at::get_num_threads();
  report["machine"] = machine_description();
  report["gallery"] = {{"images", options.gallery_images}, {"texts", 5 * options.gallery_images},
                       {"k_test", options.k_test}};
  const Dims dims = dims_of(load_config(options.pretrain_config), image_res);
  std::vector<std::string> precisions = options.precisions;
  if (precisions.empty()) {
    precisions = {"fp32"};
    // Without AVX-512 neither side has a bf16 kernel: bf16 matmuls crawl and the suite would take hours.
    if (dnnl_bf16_gemm_available())
      precisions.push_back("bf16");
    else
      std::cout << "bf16 skipped: this CPU has no native bf16 matmul (oneDNN needs AVX-512; at::mm in bf16 ran at "
                << std::lround(paths["bf16_aten"].get<double>()) << " GFLOP/s); --precision bf16 times it anyway"
                << std::endl;
  }
  report["precisions"] = precisions;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& precision : precisions) {
    for (const auto& workload : workloads) {
      const bool train = is_training(workload), vqa_workload = workload == "vqa_b16";
      const bool nlvr = workload == "nlvr_b16", ve = workload == "ve_b32";
      const bool simla = workload == "train_simla_b8";
      const std::string config = simla          ? options.simla_config
                                 : train        ? options.pretrain_config
                                 : vqa_workload ? options.vqa_config
                                 : nlvr         ? options.nlvr_config
                                 : ve           ? options.ve_config
                                                : options.retrieval_config;
      const std::string weights = simla          ? weight_files.simla
                                  : train        ? weight_files.pretrain
                                  : vqa_workload ? weight_files.vqa
                                  : nlvr         ? weight_files.nlvr
                                  : ve           ? weight_files.ve
                                                 : weight_files.retrieval;
      const std::string inputs =
          dir + (workload == "retrieval"         ? "/gallery"
                 : workload == "coco5k_estimate" ? "/coco"
                 : vqa_workload                  ? "/vqa"
                                                 : "/inputs");
      const std::string tag = workload + "_" + precision;
      const auto worker_arguments = [&](const std::string& worker_precision) {
        return " --workload " + workload + " --precision " + worker_precision + " --config " + quoted(config) +
               " --weights " + quoted(weights) + " --inputs " + quoted(inputs) + " --threads " +
               std::to_string(report["threads"].get<int>()) + " --iters " +
               std::to_string(iters_of(workload, options)) + " --warmup " +
               std::to_string(warmup_of(workload, options)) + " --k_test " +
               std::to_string(options.k_test) + " --k_test_vqa " + std::to_string(options.vqa_k_test);
      };
      const std::string common = worker_arguments(precision);
      nlohmann::json row = {{"workload", workload}, {"precision", precision}};
      // The two sides alternate `rounds` times and each reports its median: on a machine whose speed
      // drifts (a VM), both medians then come from the same stretch of time.
      std::vector<double> albef_seconds, torch_seconds, image_seconds, text_seconds, bf16_rates;
      double albef_items = 0, torch_items = 0;
      // int8 is measured against albef's own bf16 (PyTorch has no such CPU path here), the two alternating
      // like albef and PyTorch: rows measured minutes apart moved the ratio by 10% on a drifting VM.
      const bool paired_bf16 = precision == "int8" && dnnl_bf16_gemm_available();
      std::cout << "  " << tag << ":" << std::flush;
      for (int round = 0; round < options.rounds; ++round) {
        std::cout << " albef" << std::flush;
        const int albef_status = std::system((quoted(self_exe) + " bench --worker" + common + " --out " +
                                              quoted(dir + "/" + tag + ".albef.json") + " --outputs " +
                                              quoted(dir + "/out_albef_" + tag) + " > " +
                                              quoted(dir + "/" + tag + ".albef.log") + " 2>&1")
                                                 .c_str());
        const nlohmann::json mine = read_json_file(dir + "/" + tag + ".albef.json");
        if (paired_bf16) {
          std::cout << ", albef bf16" << std::flush;
          const std::string bf16_out = dir + "/" + workload + "_paired_bf16.albef.json";
          std::system((quoted(self_exe) + " bench --worker" + worker_arguments("bf16") + " --out " +
                       quoted(bf16_out) + " > " + quoted(dir + "/" + workload + "_paired_bf16.albef.log") + " 2>&1")
                          .c_str());
          if (const nlohmann::json paired = read_json_file(bf16_out); !paired.is_null())
            bf16_rates.push_back(paired["rate"].get<double>());
        }
        if (albef_status != 0 || mine.is_null()) {
          row["albef_error"] = "the worker failed, see " + dir + "/" + tag + ".albef.log";
        } else {
          row["unit"] = mine["unit"];
          albef_seconds.push_back(mine["seconds"].get<double>());
          albef_items = mine["rate"].get<double>() * mine["seconds"].get<double>();
          row["albef_peak_mb"] = std::max(row.value("albef_peak_mb", 0.0), mine["peak_rss_mb"].get<double>());
          // What the process holds before any model exists (LibTorch, oneDNN, OpenCV, faiss), and the
          // weights in memory: peak / weights and (peak - runtime) / weights are the memory ratios.
          row["albef_runtime_mb"] = mine.value("runtime_mb", 0.0);
          row["weights_mb"] = mine.value("weights_mb", 0.0);
          row["inputs_mb"] = mine.value("inputs_mb", 0.0);
          row["code_mb"] = std::max(row.value("code_mb", 0.0), mine.value("code_mb", 0.0));
          if (mine.contains("label_seconds")) row["label_seconds"] = mine["label_seconds"];  // classify's text side
          if (mine.contains("pairs_scored")) row["pairs_scored"] = mine["pairs_scored"];    // retrieval's fusion work
          if (mine.contains("image_seconds")) {  // coco5k_estimate's encoders
            image_seconds.push_back(mine["image_seconds"].get<double>());
            text_seconds.push_back(mine["text_seconds"].get<double>());
          }
        }
        // classify_1000 is measured against albef's own image encoding (vs_image_b32), not against PyTorch,
        // coco5k_estimate is a projection of albef's own time, and int8 is paired with bf16 above.
        if (!options.pytorch || workload == "classify_1000" || workload == "coco5k_estimate" || precision == "int8") {
          if (round + 1 < options.rounds) std::cout << ";" << std::flush;
          continue;
        }
        std::cout << ", pytorch" << std::flush;
        std::system((options.python + " " + quoted(options.baseline_script) + common + " --out " +
                     quoted(dir + "/" + tag + ".torch.json") + " --outputs " + quoted(dir + "/out_torch_" + tag) +
                     " > " + quoted(dir + "/" + tag + ".torch.log") + " 2>&1")
                        .c_str());
        const nlohmann::json theirs = read_json_file(dir + "/" + tag + ".torch.json");
        if (theirs.is_null() || !theirs["error"].is_null()) {
          row["torch_error"] = theirs.is_null() ? "no report, see " + dir + "/" + tag + ".torch.log"
                                                : theirs["error"].get<std::string>();
        } else {
          torch_seconds.push_back(theirs["seconds"].get<double>());
          torch_items = theirs["rate"].get<double>() * theirs["seconds"].get<double>();
          row["torch_peak_mb"] = std::max(row.value("torch_peak_mb", 0.0), theirs["peak_rss_mb"].get<double>());
        }
        if (round + 1 < options.rounds) std::cout << ";" << std::flush;
      }
      if (!albef_seconds.empty()) {
        row["albef_seconds"] = median_of(albef_seconds);
        row["albef_rate"] = albef_items / row["albef_seconds"].get<double>();
        if (options.rounds > 1) row["albef_round_seconds"] = albef_seconds;
      }
      if (!bf16_rates.empty() && row.contains("albef_rate")) {
        row["bf16_rate"] = median_of(bf16_rates);
        row["vs_bf16"] = row["albef_rate"].get<double>() / row["bf16_rate"].get<double>();
      }
      if (!image_seconds.empty() && row.contains("albef_rate")) {
        // The whole evaluation: both encoders over the split, then every query's 256 candidates re-ranked.
        row["image_seconds"] = median_of(image_seconds);
        row["text_seconds"] = median_of(text_seconds);
        row["coco5k_hours"] = (kCocoImages * row["image_seconds"].get<double>() +
                               kCocoTexts * row["text_seconds"].get<double>() +
                               kCocoPairs / row["albef_rate"].get<double>()) / 3600.0;
      }
      if (!torch_seconds.empty()) {
        row["torch_seconds"] = median_of(torch_seconds);
        row["torch_rate"] = torch_items / row["torch_seconds"].get<double>();
        if (options.rounds > 1) row["torch_round_seconds"] = torch_seconds;
        if (row.contains("albef_rate")) row["speedup"] = row["albef_rate"].get<double>() / row["torch_rate"].get<double>();
      }
      if (options.pytorch)
        if (const auto diff = output_difference(dir + "/out_albef_" + tag, dir + "/out_torch_" + tag))
          row["max_rel_diff"] = *diff;
      const double flops =
          vqa_workload ? vqa_flops(dims, static_cast<double>(load_config(options.vqa_config).decoder_layers),
                                   io::read_npy(dir + "/vqa/answer_mask.npy").sum().item<double>() /
                                       static_cast<double>(options.vqa_answers),
                                   options.vqa_k_test)
          : workload == "coco5k_estimate"
              ? coco5k_flops(dims, coco_mean_tokens(dir + "/coco"))
              : workload_flops(workload, dims, options.gallery_images, 5 * options.gallery_images,
                               row.value("pairs_scored", 0.0));
      row["gflop"] = flops / 1e9;
      if (row.contains("albef_seconds")) {
        row["albef_gflops"] = flops / 1e9 / row["albef_seconds"].get<double>();
        if (report["gemm_peak_gflops"].contains(precision))
          row["peak_percent"] =
              100.0 * row["albef_gflops"].get<double>() / report["gemm_peak_gflops"][precision].get<double>();
      }
      if (!is_training(workload) && row.value("weights_mb", 0.0) > 0) {
        // Issue 27's memory ratio, (peak - runtime) / weights, and the model's own share of it: less the
        // workload's inputs and the library code its kernels paged in (both there whatever the weights).
        const double above_runtime = row["albef_peak_mb"].get<double>() - row["albef_runtime_mb"].get<double>();
        const double weights = row["weights_mb"].get<double>();
        row["memory_ratio"] = above_runtime / weights;
        row["model_memory_ratio"] =
            (above_runtime - row["inputs_mb"].get<double>() - row["code_mb"].get<double>()) / weights;
      }
      std::cout << std::endl;
      rows.push_back(row);
    }
  }
  // classify_1000 against the image encoding of the same run: what the label side and the scoring cost.
  for (auto& row : rows) {
    if (row["workload"] != "classify_1000" || !row.contains("albef_rate")) continue;
    for (const auto& other : rows)
      if (other["workload"] == "image_b32" && other["precision"] == row["precision"] && other.contains("albef_rate"))
        row["vs_image_b32"] = row["albef_rate"].get<double>() / other["albef_rate"].get<double>();
  }
  // GRIT's and SIMLA's steps against ALBEF's of the same run (GRIT has no momentum model: markedly
  // cheaper; SIMLA adds MIM and PSL), on both sides.
  for (auto& row : rows) {
    if (row["workload"] != "train_grit_b8" && row["workload"] != "train_simla_b8") continue;
    for (const auto& other : rows) {
      if (other["workload"] != "train_b8" || other["precision"] != row["precision"]) continue;
      if (row.contains("albef_rate") && other.contains("albef_rate"))
        row["vs_train_b8"] = row["albef_rate"].get<double>() / other["albef_rate"].get<double>();
      if (row.contains("torch_rate") && other.contains("torch_rate"))
        row["torch_vs_train_b8"] = row["torch_rate"].get<double>() / other["torch_rate"].get<double>();
    }
  }
  report["rows"] = rows;
  if (temporary) fs::remove_all(dir);
  return report;
}

void print_model_table(const nlohmann::json& report) {
  std::printf("\nmeasured GEMM peak: fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s (%d threads)\n",
              report["gemm_peak_gflops"]["fp32"].get<double>(), report["gemm_peak_gflops"]["bf16"].get<double>(),
              report["threads"].get<int>());
  if (report.contains("gemm_gflops_by_path")) {
    std::printf("  by path:");
    for (const auto& item : report["gemm_gflops_by_path"].items())
      std::printf(" %s %.0f", item.key().c_str(), item.value().get<double>());
    std::printf(" GFLOP/s\n");
  }
  if (report.contains("machine")) std::printf("  machine: %s\n", describe_machine(report["machine"]).c_str());
  // "weights MB": what albef's worker loaded (image encoding: the image side alone).
  std::printf("%-15s %-5s %10s %10s %8s %9s %7s %8s %9s %10s %10s %9s\n", "workload", "prec", "albef", "pytorch",
              "albef/pt", "unit", "GFLOP", "% peak", "albef MB", "weights MB", "pytorch MB", "max diff");
  auto number = [](const nlohmann::json& row, const char* key, const char* format) {
    char text[32] = "-";
    if (row.contains(key) && row[key].is_number()) std::snprintf(text, sizeof(text), format, row[key].get<double>());
    return std::string(text);
  };
  for (const auto& row : report["rows"]) {
    std::printf("%-15s %-5s %10s %10s %8s %9s %7s %8s %9s %10s %10s %9s\n", row["workload"].get<std::string>().c_str(),
                row["precision"].get<std::string>().c_str(), number(row, "albef_rate", "%.2f").c_str(),
                number(row, "torch_rate", "%.2f").c_str(), number(row, "speedup", "%.2fx").c_str(),
                row.value("unit", "").c_str(), number(row, "gflop", "%.1f").c_str(),
                number(row, "peak_percent", "%.0f%%").c_str(),
                number(row, "albef_peak_mb", "%.0f").c_str(), number(row, "weights_mb", "%.0f").c_str(),
                number(row, "torch_peak_mb", "%.0f").c_str(),
                number(row, "max_rel_diff", "%.1e").c_str());
    for (const char* key : {"albef_error", "torch_error"})
      if (row.contains(key)) std::printf("    %s: %s\n", key, row[key].get<std::string>().c_str());
    if (row.contains("vs_image_b32"))
      std::printf("    %.2fx the image_b32 rate of this run (1,000 labels embedded once)\n",
                  row["vs_image_b32"].get<double>());
    if (row.contains("coco5k_hours"))
      std::printf("    COCO-5k at k_test 256 (5,000 images, 25,000 captions, 7.68M pairs re-ranked): %.1f h\n",
                  row["coco5k_hours"].get<double>());
    if (row.contains("memory_ratio"))
      std::printf("    memory: %.2fx the weights above the runtime's %.0f MB; %.2fx less the inputs (%.0f MB) and "
                  "library code paged in (%.0f MB)\n",
                  row["memory_ratio"].get<double>(), row["albef_runtime_mb"].get<double>(),
                  row["model_memory_ratio"].get<double>(), row["inputs_mb"].get<double>(),
                  row["code_mb"].get<double>());
    if (row.contains("vs_bf16"))
      std::printf("    %.2fx albef's bf16 rate (%.2f %s, the two alternating)\n", row["vs_bf16"].get<double>(),
                  row["bf16_rate"].get<double>(), row["unit"].get<std::string>().c_str());
    if (row.contains("vs_train_b8"))
      std::printf("    %.2fx ALBEF's training step of this run (PyTorch: %s)\n", row["vs_train_b8"].get<double>(),
                  number(row, "torch_vs_train_b8", "%.2fx").c_str());
  }
}

}  // namespace albef::bench
