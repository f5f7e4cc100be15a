// albef.Model: a checkpoint loaded for what its task does (embed and score,
// answer questions, classify sentences), with the CLI's preprocessing.

#include "arrays.h"
#include "bindings.h"
#include "gallery.h"

#include "albef/api/inference.h"
#include "albef/serve/gallery.h"
#include "albef/tasks/grounding.h"
#include "albef/tasks/nlvr.h"
#include "albef/tasks/ve.h"
#include "albef/tasks/vqa.h"
#include "tasks/checkpoint_info.h"

#include <ATen/ATen.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>

namespace albef::python {
namespace {

using py::literals::operator""_a;

// What albef.Model's constructor takes.
struct ModelArguments {
  std::string config, checkpoint, precision, device, text_encoder, task, answer_list;
  int threads = 0;
  int64_t batch_size = 32;
};

// Tasks whose checkpoints hold the retrieval model's encoders and projections.
bool embeds(const std::string& kind) {
  return kind == "pretrain" || kind == "retrieval" || kind == "grounding" || kind == "feature_extractor";
}

class Model {
 public:
  explicit Model(const ModelArguments& arguments) : arguments_(arguments) {
    const Precision precision = parse_precision(arguments.precision);
    kind_ = arguments.task;
    if (kind_ == "auto") kind_ = tasks::inspect_checkpoint(arguments.checkpoint).kind;
    if (embeds(kind_)) {
      InferenceOptions options;
      options.config_path = arguments.config;
      options.checkpoint_path = arguments.checkpoint;
      options.text_encoder = arguments.text_encoder;
      options.threads = arguments.threads;
      options.precision = precision;
      options.device = arguments.device;
      options.batch_size = arguments.batch_size;
      embedder_ = std::make_unique<AlbefInference>(options);
      const BertConfig& bert = embedder_->config().bert;
      gradcam_block_ = std::min(bert.fusion_layer + 2, bert.num_hidden_layers - 1);  // 8 at full size, as Grounding.py
      image_res_ = embedder_->config().image_res;
      return;
    }
    init_runtime(arguments.threads);
    if (kind_ == "vqa") {
      vqa_ = std::make_unique<VqaAnswerer>(arguments.config, arguments.checkpoint, arguments.answer_list,
                                           arguments.text_encoder, arguments.device, precision);
      image_res_ = vqa_->config().image_res;
    } else if (kind_ == "ve" || kind_ == "nlvr") {
      classifier_.emplace(kind_ == "ve" ? load_ve_classifier(arguments.config, arguments.checkpoint,
                                                             arguments.text_encoder, arguments.device, precision)
                                        : load_nlvr_classifier(arguments.config, arguments.checkpoint,
                                                               arguments.text_encoder, arguments.device, precision));
      image_res_ = classifier_->config().image_res;
    } else {
      throw py::value_error(arguments.checkpoint + " is a " + kind_ +
                            " checkpoint: albef.Model runs pretrain, retrieval, grounding, vqa, ve and nlvr "
                            "checkpoints (task= names one of them; `albef info` tells what a checkpoint is)");
    }
  }

  py::array embed_images(const py::object& images) {
    AlbefInference& albef = embedder("embed_images");
    const std::vector<ImageInput> inputs = image_inputs(images, "embed_images");
    at::Tensor features;
    {
      py::gil_scoped_release release;
      // In the batches `albef embed` uses, so the features are the same bit for bit.
      std::vector<at::Tensor> batches;
      const auto count = static_cast<int64_t>(inputs.size());
      for (int64_t begin = 0; begin < count; begin += albef.options().batch_size) {
        const int64_t end = std::min(count, begin + albef.options().batch_size);
        batches.push_back(albef.image_features(transform_images(inputs, begin, end, image_res_)));
      }
      features = at::cat(batches);
    }
    return to_numpy(features);
  }

  py::array embed_texts(const py::object& texts) {
    AlbefInference& albef = embedder("embed_texts");
    const std::vector<std::string> captions = text_inputs(texts, "embed_texts");
    at::Tensor features;
    {
      py::gil_scoped_release release;
      features = albef.text_features(captions);
    }
    return to_numpy(features);
  }

  py::dict score(const py::object& images, const py::object& texts) {
    AlbefInference& albef = embedder("score");
    const std::vector<ImageInput> inputs = image_inputs(images, "score");
    const std::vector<std::string> captions = text_inputs(texts, "score");
    const size_t pairs = std::max(inputs.size(), captions.size());
    if (inputs.size() != captions.size() && inputs.size() != 1 && captions.size() != 1)
      throw py::value_error("score: give as many images as texts (pairs), or one of either; got " +
                            std::to_string(inputs.size()) + " images and " + std::to_string(captions.size()) +
                            " texts");
    std::vector<PairScore> scores;
    {
      py::gil_scoped_release release;
      const at::Tensor pixels = transform_images(inputs, 0, static_cast<int64_t>(inputs.size()), image_res_);
      std::vector<int64_t> rows(pairs);
      std::vector<std::string> paired(pairs);
      for (size_t i = 0; i < pairs; ++i) {
        rows[i] = inputs.size() == 1 ? 0 : static_cast<int64_t>(i);
        paired[i] = captions[captions.size() == 1 ? 0 : i];
      }
      scores = albef.score_images(pixels, rows, paired);
    }
    py::array_t<double> itc(static_cast<py::ssize_t>(pairs)), itm(static_cast<py::ssize_t>(pairs));
    for (size_t i = 0; i < pairs; ++i) {
      itc.mutable_at(i) = scores[i].itc;
      itm.mutable_at(i) = scores[i].itm_match;
    }
    return py::dict("itc"_a = itc, "itm"_a = itm);
  }

  py::dict tokenize(const py::object& texts) {
    AlbefInference& albef = embedder("tokenize");
    const text::BatchEncoding encoding = albef.tokenize(text_inputs(texts, "tokenize"));
    return py::dict("input_ids"_a = to_numpy(encoding.input_ids), "attention_mask"_a = to_numpy(encoding.attention_mask));
  }

  py::list search(const Gallery& gallery, const py::object& texts, int64_t k, int64_t rerank) {
    AlbefInference& albef = embedder("search");
    const std::vector<std::string> captions = text_inputs(texts, "search");
    if (k < 1) throw py::value_error("search: k must be at least 1, got " + std::to_string(k));
    if (rerank < 0) throw py::value_error("search: rerank must be 0 (ITC only) or more, got " + std::to_string(rerank));
    if (gallery.index().dim() != albef.config().embed_dim)
      throw py::value_error("search: the gallery holds " + std::to_string(gallery.index().dim()) +
                            "-d features but this model embeds in " + std::to_string(albef.config().embed_dim));
    std::vector<std::vector<serve::SearchResult>> found;
    {
      py::gil_scoped_release release;
      serve::SearchOptions options;
      options.k = k;
      options.rerank = rerank;
      found = serve::search_gallery(albef, gallery.index(), captions, options);
    }
    py::list out;
    for (const auto& results : found) {
      py::list hits;
      for (const serve::SearchResult& result : results) {
        py::dict hit("id"_a = result.id, "path"_a = result.path, "itc"_a = result.itc);
        if (result.itm_logit) hit["itm_logit"] = *result.itm_logit;
        if (result.itm_match) hit["itm"] = *result.itm_match;
        hits.append(hit);
      }
      out.append(hits);
    }
    return out;
  }

  py::dict gradcam(const py::object& image, const std::string& caption, bool per_word, const std::string& mode,
                   std::optional<int64_t> block_num) {
    AlbefInference& albef = embedder("gradcam");
    const std::vector<ImageInput> inputs = image_inputs(image, "gradcam");
    if (inputs.size() != 1)
      throw py::value_error("gradcam: give one image (got " + std::to_string(inputs.size()) + ")");
    GradcamOptions options;
    options.mode = parse_gradcam_mode(mode, "mode");
    // Grounding.py's default layer is 8 for both modes; a shallower model reads its last.
    options.block_num = block_num ? *block_num
                                  : options.mode == GradcamMode::Itm ? gradcam_block_
                                                                     : std::min<int64_t>(8, albef.config().vision.depth - 1);
    check_gradcam_block(albef.config(), options, "block_num");
    if (per_word && options.mode != GradcamMode::Itm)
      throw py::value_error("gradcam: per_word needs mode='itm' (an itc map explains the whole sentence)");
    const std::string cleaned = text::pre_caption(caption, 30);  // as Grounding.py and `albef gradcam`
    const text::BatchEncoding encoding = albef.tokenizer().encode_batch(
        {cleaned}, static_cast<int>(albef.config().bert.max_position_embeddings), text::Padding::Longest);
    const int64_t length = encoding.attention_mask.sum().item<int64_t>();
    Gradcam cam;
    {
      py::gil_scoped_release release;
      const at::Tensor pixels = transform_images(inputs, 0, 1, image_res_).to(albef.device());
      // Grad-CAM records attention in the model's layers: one map at a time per model.
      const std::lock_guard<std::mutex> lock(gradcam_mutex_);
      PrecisionGuard guard(albef.options().precision, albef.device());
      cam = compute_gradcam(albef.model(), pixels, encoding.input_ids.to(albef.device()),
                            encoding.attention_mask.to(albef.device()), options);
    }
    // The sentence's map as `albef gradcam` writes it: itm averages its own tokens, [CLS] included.
    const at::Tensor map = options.mode == GradcamMode::Itm ? cam.token_maps[0].slice(0, 0, length).mean(0) : cam.maps[0];
    py::dict out("map"_a = to_numpy(map.to(at::kCPU, at::kFloat).contiguous()), "caption"_a = cleaned,
                 "mode"_a = mode, "block_num"_a = options.block_num);
    if (per_word) {
      py::list words;
      for (int64_t j = 1; j < length; ++j) words.append(albef.tokenizer().id_to_token(encoding.input_ids[0][j].item<int64_t>()));
      out["words"] = words;
      out["word_maps"] = to_numpy(cam.token_maps[0].slice(0, 1, length).to(at::kCPU, at::kFloat).contiguous());
    }
    return out;
  }

  py::object ask(const py::object& image, const py::object& questions, int64_t k) {
    if (!vqa_) throw wrong_kind("ask", "a VQA checkpoint (VQA.py's or `albef vqa`'s)");
    const std::vector<ImageInput> inputs = image_inputs(image, "ask");
    if (inputs.size() != 1) throw py::value_error("ask: give one image (got " + std::to_string(inputs.size()) + ")");
    const std::vector<std::string> asked = text_inputs(questions, "ask");
    if (k < 1) throw py::value_error("ask: k must be at least 1, got " + std::to_string(k));
    std::vector<std::vector<VqaAnswerer::Answer>> answers;
    {
      py::gil_scoped_release release;
      answers = vqa_->answer(transform_images(inputs, 0, 1, image_res_)[0], asked, k);
    }
    py::list out;
    for (const auto& ranked : answers) {
      py::list one;
      for (const VqaAnswerer::Answer& answer : ranked) one.append(py::make_tuple(answer.answer, answer.probability));
      out.append(one);
    }
    if (py::isinstance<py::str>(questions)) return out[0];
    return std::move(out);
  }

  py::object classify(const char* method, const std::string& needs, const std::vector<ImageInput>& inputs,
                      const py::object& sentences) {
    if (!classifier_ || kind_ != (std::string(method) == "classify_ve" ? "ve" : "nlvr")) throw wrong_kind(method, needs);
    const std::vector<std::string> texts = text_inputs(sentences, method);
    at::Tensor probabilities;
    {
      py::gil_scoped_release release;
      const at::Tensor pixels = transform_images(inputs, 0, static_cast<int64_t>(inputs.size()), image_res_);
      probabilities = classifier_->probabilities(std::vector<at::Tensor>(pixels.unbind(0)), texts);
    }
    const std::vector<std::string>& names = classifier_->class_names();
    py::list out;
    for (int64_t t = 0; t < probabilities.size(0); ++t) {
      py::dict by_class;
      for (size_t c = 0; c < names.size(); ++c) by_class[py::str(names[c])] = probabilities[t][static_cast<int64_t>(c)].item<double>();
      out.append(py::dict("prediction"_a = names[static_cast<size_t>(probabilities[t].argmax().item<int64_t>())],
                          "probabilities"_a = by_class));
    }
    if (py::isinstance<py::str>(sentences)) return out[0];
    return std::move(out);
  }

  py::object classify_ve(const py::object& image, const py::object& sentences) {
    const std::vector<ImageInput> inputs = image_inputs(image, "classify_ve");
    if (inputs.size() != 1) throw py::value_error("classify_ve: give one image (got " + std::to_string(inputs.size()) + ")");
    return classify("classify_ve", "a fine-tuned SNLI-VE checkpoint (VE.py's or `albef ve`'s)", inputs, sentences);
  }

  py::object classify_nlvr(const py::object& left, const py::object& right, const py::object& sentences) {
    std::vector<ImageInput> inputs = image_inputs(left, "classify_nlvr");
    std::vector<ImageInput> second = image_inputs(right, "classify_nlvr");
    if (inputs.size() != 1 || second.size() != 1)
      throw py::value_error("classify_nlvr: give one left and one right image");
    inputs.push_back(std::move(second.front()));
    return classify("classify_nlvr", "a fine-tuned NLVR2 checkpoint (NLVR.py's or `albef nlvr`'s)", inputs, sentences);
  }

  const std::string& kind() const { return kind_; }
  const ModelArguments& arguments() const { return arguments_; }
  int64_t image_res() const { return image_res_; }
  int64_t embed_dim() { return embedder("embed_dim").config().embed_dim; }
  std::vector<std::string> missing_keys() { return embedder_ ? embedder_->load_report().missing_keys : std::vector<std::string>{}; }

  std::string repr() const {
    return "albef.Model(kind='" + kind_ + "', config='" + arguments_.config + "', checkpoint='" +
           arguments_.checkpoint + "', precision='" + arguments_.precision + "', image_res=" +
           std::to_string(image_res_) + ")";
  }

 private:
  Error wrong_kind(const std::string& method, const std::string& needs) const {
    return Error(method + " needs " + needs + "; " + arguments_.checkpoint + " was loaded as a " + kind_ +
                 " model (`albef info " + arguments_.checkpoint + "`)");
  }

  AlbefInference& embedder(const std::string& method) {
    if (!embedder_) throw wrong_kind(method, "a pretraining, retrieval or grounding checkpoint");
    return *embedder_;
  }

  ModelArguments arguments_;
  std::string kind_;
  int64_t image_res_ = 0;
  int64_t gradcam_block_ = 0;
  std::unique_ptr<AlbefInference> embedder_;
  std::unique_ptr<VqaAnswerer> vqa_;
  std::optional<SentenceClassifier> classifier_;
  std::mutex gradcam_mutex_;
};

}  // namespace

void bind_model(py::module_& module) {
  py::class_<Model>(module, "Model", R"doc(
An ALBEF checkpoint loaded for inference, with the official preprocessing.

Model(config, checkpoint, precision="fp32", threads=0, device="cpu",
      batch_size=32, text_encoder="", task="auto", answer_list="")

config:       the task's YAML (the official configs: Retrieval_coco.yaml, VQA.yaml, ...)
checkpoint:   an official, LAVIS or albef `.pth`
precision:    "fp32", "bf16" or "int8" (the encoders' linear layers in int8; no Grad-CAM)
threads:      compute threads for every model of the process (0 = every core)
batch_size:   images or texts per forward pass
text_encoder: the vocabulary, as the official --text_encoder (default bert-base-uncased, bundled)
task:         "auto" (what `albef info` finds the checkpoint to be), or pretrain,
              retrieval, grounding, vqa, ve or nlvr
answer_list:  VQA: the candidate answers' JSON (default: the config's answer_list)

A pretraining, retrieval or grounding checkpoint embeds, scores, searches and
draws Grad-CAM maps; a VQA checkpoint answers questions (ask); SNLI-VE and
NLVR2 checkpoints classify sentences (classify_ve, classify_nlvr). Images are
paths or HxWx3 uint8 RGB arrays (np.asarray(pil_image)), one or a list.
Inference releases the GIL: threads can share a model.
)doc")
      .def(py::init([](const std::string& config, const py::object& checkpoint, const std::string& precision,
                       int threads, const std::string& device, int64_t batch_size, const std::string& text_encoder,
                       const std::string& task, const std::string& answer_list) {
             if (batch_size < 1) throw py::value_error("batch_size must be at least 1, got " + std::to_string(batch_size));
             if (threads < 0) throw py::value_error("threads must be 0 (every core) or more, got " + std::to_string(threads));
             ModelArguments arguments;
             arguments.config = config;
             arguments.checkpoint = fspath(checkpoint);
             arguments.precision = precision;
             arguments.threads = threads;
             arguments.device = device;
             arguments.batch_size = batch_size;
             arguments.text_encoder = text_encoder;
             arguments.task = task;
             arguments.answer_list = answer_list;
             py::gil_scoped_release release;
             return std::make_unique<Model>(arguments);
           }),
           "config"_a, "checkpoint"_a, "precision"_a = "fp32", "threads"_a = 0, "device"_a = "cpu",
           "batch_size"_a = 32, "text_encoder"_a = "", "task"_a = "auto", "answer_list"_a = "")
      .def("embed_images", &Model::embed_images, "images"_a,
           "Normalised ITC image features: float32 [N, embed_dim], in input order (the features `albef embed` writes).")
      .def("embed_texts", &Model::embed_texts, "texts"_a,
           "Normalised ITC text features: float32 [M, embed_dim] (pre_caption, 30 tokens, as Retrieval.py).")
      .def("score", &Model::score, "images"_a, "texts"_a,
           "ITC similarity and ITM match probability of image i with text i (one of either pairs with all):\n"
           "{'itc': float64 [N], 'itm': float64 [N]}.")
      .def("tokenize", &Model::tokenize, "texts"_a,
           "What the model receives: {'input_ids': int64 [M, L], 'attention_mask': int64 [M, L]}, padded to the longest.")
      .def("search", &Model::search, "gallery"_a, "texts"_a, "k"_a = 10, "rerank"_a = 0,
           "The gallery's best images per text: a list per text of {'id', 'path', 'itc'} (best first); with rerank,\n"
           "the ITC top `rerank` re-ordered by the ITM head as the official evaluation, adding 'itm_logit' and 'itm'.")
      .def("gradcam", &Model::gradcam, "image"_a, "caption"_a, "per_word"_a = false, "mode"_a = "itm",
           "block_num"_a = py::none(),
           "Grad-CAM of one image and caption, as Grounding.py and `albef gradcam`: {'map': float32 [g, g] (g: the\n"
           "patch grid's side), 'caption', 'mode', 'block_num'}; per_word adds 'words' (word pieces after [CLS]) and\n"
           "'word_maps' float32 [words, g, g]. block_num defaults to the third fusion layer (8 at full size).")
      .def("ask", &Model::ask, "image"_a, "questions"_a, "k"_a = 5,
           "VQA: the k best (answer, probability) of the answer list for a question about one image, best first\n"
           "(a list of them per question when questions is a list).")
      .def("classify_ve", &Model::classify_ve, "image"_a, "sentences"_a,
           "SNLI-VE: {'prediction', 'probabilities': {class: p}} of a sentence about an image (classes\n"
           "contradiction, neutral, entailment); a list of them for a list of sentences.")
      .def("classify_nlvr", &Model::classify_nlvr, "left"_a, "right"_a, "sentences"_a,
           "NLVR2: {'prediction', 'probabilities': {'False': p, 'True': p}} of a sentence about two images; a list of\n"
           "them for a list of sentences.")
      .def_property_readonly("kind", &Model::kind, "The task whose model this is (pretrain, retrieval, vqa, ...).")
      .def_property_readonly("image_res", &Model::image_res, "The side of the square images the model reads.")
      .def_property_readonly("embed_dim", &Model::embed_dim, "The width of the ITC features.")
      .def_property_readonly("config", [](const Model& m) { return m.arguments().config; })
      .def_property_readonly("checkpoint", [](const Model& m) { return m.arguments().checkpoint; })
      .def_property_readonly("precision", [](const Model& m) { return m.arguments().precision; })
      .def_property_readonly("missing_keys", &Model::missing_keys,
                             "Model parameters the checkpoint did not hold (left at their initial values).")
      .def("__repr__", &Model::repr);
}

}  // namespace albef::python
