#include "albef/config/config.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/text/tokenizer.h"
#include "core/paths.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <set>
#include <type_traits>

namespace albef {
namespace fs = std::filesystem;
namespace {

// Every top-level key of every official config (configs/*.yaml of
// salesforce/ALBEF), plus albef-cpp's own: vision_config (ViT sizes) and
// vocab (the WordPiece vocabulary; the official code downloads it by name).
const std::set<std::string> kKnownKeys = {
    "train_file", "val_file", "test_file", "image_root", "bert_config", "image_res",
    "vision_width", "embed_dim", "batch_size", "batch_size_train", "batch_size_test",
    "temp", "mlm_probability", "queue_size", "momentum", "alpha", "distill", "warm_up",
    "k_test", "eval_ema", "optimizer", "schedular", "refcoco_data", "det_file",
    "coco_file", "answer_list", "vqa_root", "vg_root", "eos", "vision_config", "vocab",
    "decoder_layers",  // albef's own: the VQA answer decoder's depth (VQA.py hard-codes 6)
    "search_space", "train_epochs",  // GRIT-VLP's configs/Pretrain.yaml
    "pretrain_mode",                 // albef's own: `grit` trains GRIT-VLP's objectives and sampler
    // SIMLA's configs/Pretrain.yaml, and two keys its Pretrain.py reads with config.get that albef
    // ignores (it never downloads DeiT weights, and logs no wandb).
    "image_tokenizer_path", "from_scratch", "disable_wandb",
    "vit_mask_token",  // SIMLA's fine-tuning configs say false: their models have no mask token, as albef's
    "mim", "independent_views", "masking_generator",  // albef's own for SIMLA (docs/simla.md)
};
const std::set<std::string> kMaskingKeys = {"num_masking_patches", "min_num_patches", "max_num_patches", "min_aspect",
                                            "max_aspect"};
const std::set<std::string> kOptimizerKeys = {"opt", "lr", "weight_decay"};
const std::set<std::string> kSchedulerKeys = {"sched",     "lr",        "epochs",        "min_lr",
                                              "decay_rate", "warmup_lr", "warmup_epochs", "cooldown_epochs"};
const std::set<std::string> kVisionKeys = {"patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio"};
// Fields a HuggingFace BERT config.json may carry (ALBEF's config_bert.json
// has a subset; fusion_layer and encoder_width are ALBEF's).
const std::set<std::string> kBertKeys = {
    "architectures", "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob",
    "hidden_size", "initializer_range", "intermediate_size", "layer_norm_eps",
    "max_position_embeddings", "model_type", "num_attention_heads", "num_hidden_layers",
    "pad_token_id", "type_vocab_size", "vocab_size", "fusion_layer", "encoder_width",
    "position_embedding_type", "use_cache", "gradient_checkpointing", "transformers_version",
    "classifier_dropout", "add_cross_attention", "chunk_size_feed_forward", "torch_dtype",
    "output_attentions", "output_hidden_states"};

template <typename T>
T scalar(const YAML::Node& node, const std::string& key, const std::string& file) {
  try {
    T value = node.as<T>();
    // A NUL would cut a file name short: another file than the one written would be read.
    if constexpr (std::is_same_v<T, std::string>)
      if (value.find('\0') != std::string::npos)
        fail(file, ": key '", key, "' (line ", node.Mark().line + 1, ") holds a NUL byte");
    return value;
  } catch (const YAML::Exception&) {
    fail(file, ": key '", key, "' (line ", node.Mark().line + 1, "): cannot read '",
         YAML::Dump(node), "' as a ", std::is_same_v<T, bool> ? "boolean" : std::is_same_v<T, std::string> ? "string" : "number");
  }
}

// A mapping key as text; YAML's complex keys (a list or mapping after '?') are no config's.
std::string key_name(const YAML::Node& key, const std::string& file) {
  if (!key.IsScalar()) fail(file, ": line ", key.Mark().line + 1, ": a key must be a plain name");
  return key.Scalar();
}

void check_keys(const YAML::Node& map, const std::set<std::string>& known, const std::string& prefix,
                const std::string& file) {
  if (!map.IsMap()) fail(file, ": '", prefix, "' must be a mapping");
  for (const auto& item : map) {
    const std::string key = key_name(item.first, file);
    if (!known.count(key))
      fail(file, ": unknown key '", prefix.empty() ? "" : prefix + ".", key, "' (line ", item.first.Mark().line + 1,
           "); none of the official ALBEF configs has it");
  }
}

std::vector<std::string> string_list(const YAML::Node& node, const std::string& key, const std::string& file) {
  std::vector<std::string> out;
  if (node.IsSequence()) {
    for (const auto& item : node) out.push_back(scalar<std::string>(item, key, file));
  } else {
    out.push_back(scalar<std::string>(node, key, file));
  }
  return out;
}

nlohmann::json to_json(const YAML::Node& node, const std::string& file) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& item : node) out[key_name(item.first, file)] = to_json(item.second, file);
      return out;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) out.push_back(to_json(item, file));
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string text = node.Scalar();
      if (node.Tag() == "!") return text;  // quoted: always a string
      if (text == "True" || text == "true") return true;
      if (text == "False" || text == "false") return false;
      try {
        size_t used = 0;
        const long long value = std::stoll(text, &used);
        if (used == text.size()) return value;
      } catch (...) {
      }
      try {
        size_t used = 0;
        const double value = std::stod(text, &used);
        if (used == text.size()) return value;
      } catch (...) {
      }
      return text;
    }
    default:
      return nullptr;
  }
}

template <typename T>
void read_json_field(const nlohmann::json& json, const char* key, T& field, const std::string& file) {
  if (!json.contains(key)) return;
  const nlohmann::json& value = json.at(key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // get<int64_t> would truncate a float (undefined past int64's range) and wrap a uint64.
    if (!value.is_number_integer() ||
        (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())))
      fail(file, ": key '", key, "' must be an integer within range, got ", value.dump());
  }
  try {
    field = value.get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(file, ": key '", key, "' has the wrong type (", value.dump(), ")");
  }
}

void require_positive(const std::string& file, const char* key, int64_t value) {
  if (value < 1) fail(file, ": ", key, " must be at least 1, got ", value);
}

constexpr const char* kPointElsewhere =
    "set 'vocab:' in the config, or pass --text_encoder with a folder holding vocab.txt, a vocabulary file, or "
    "bert-base-uncased (bundled with albef)";

// The WordPiece vocabulary, first found of: the config's `vocab:` key; the
// --text_encoder flag (the official scripts' name for the BERT they load:
// `bert-base-uncased`, or a folder as HuggingFace saves a tokenizer, or a
// vocabulary file); bert-base-uncased-vocab.txt beside config_bert.json; the
// bundled bert-base-uncased vocabulary.
std::string find_vocabulary(const Config& config, const YAML::Node* vocab_key, const std::string& text_encoder) {
  if (vocab_key) {
    const std::string written = scalar<std::string>(*vocab_key, "vocab", config.path);
    const std::string found = config.resolve(written);
    if (paths::is_file(found)) return found;
    const fs::path dir = fs::path(config.path).parent_path();
    fail(config.path, ": vocab '", written, "' (line ", vocab_key->Mark().line + 1, ") is not a file; looked in ",
         fs::absolute(written).lexically_normal().string(), ", ", fs::absolute(dir / written).lexically_normal().string(), " and ",
         fs::absolute(dir.parent_path() / written).lexically_normal().string(), "; ", kPointElsewhere);
  }
  if (!text_encoder.empty()) {
    const fs::path given(text_encoder);
    if (paths::is_folder(given)) {
      if (paths::is_file(given / "vocab.txt")) return (given / "vocab.txt").string();
      fail("--text_encoder ", text_encoder, ": the folder has no vocab.txt (HuggingFace's tokenizer files); ",
           kPointElsewhere);
    }
    if (paths::is_file(given)) return text_encoder;
    if (text_encoder == "bert-base-uncased") return text::kBundledVocabulary;
    fail("--text_encoder ", text_encoder, ": no such folder or file (", fs::absolute(given).string(),
         "), and the only vocabulary bundled with albef is bert-base-uncased's, the one every official ALBEF "
         "config uses; ", kPointElsewhere);
  }
  const fs::path beside_bert_config = fs::path(config.bert_config).parent_path() / "bert-base-uncased-vocab.txt";
  if (paths::is_file(beside_bert_config)) return beside_bert_config.string();
  return text::kBundledVocabulary;
}

}  // namespace

BertConfig BertConfig::from_json_file(const std::string& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!json.is_object()) fail(path, ": a BERT config must be a JSON object");
  for (const auto& item : json.items())
    if (!kBertKeys.count(item.key())) fail(path, ": unknown key '", item.key(), "' in the BERT config");
  BertConfig config;
  read_json_field(json, "vocab_size", config.vocab_size, path);
  read_json_field(json, "hidden_size", config.hidden_size, path);
  read_json_field(json, "num_hidden_layers", config.num_hidden_layers, path);
  read_json_field(json, "num_attention_heads", config.num_attention_heads, path);
  read_json_field(json, "intermediate_size", config.intermediate_size, path);
  read_json_field(json, "hidden_act", config.hidden_act, path);
  read_json_field(json, "hidden_dropout_prob", config.hidden_dropout_prob, path);
  read_json_field(json, "attention_probs_dropout_prob", config.attention_probs_dropout_prob, path);
  read_json_field(json, "max_position_embeddings", config.max_position_embeddings, path);
  read_json_field(json, "type_vocab_size", config.type_vocab_size, path);
  read_json_field(json, "initializer_range", config.initializer_range, path);
  read_json_field(json, "layer_norm_eps", config.layer_norm_eps, path);
  read_json_field(json, "pad_token_id", config.pad_token_id, path);
  read_json_field(json, "fusion_layer", config.fusion_layer, path);
  bool add_cross_attention = false;
  read_json_field(json, "add_cross_attention", add_cross_attention, path);
  // SIMLA's shared_bert.json: cross-attention in every layer and no fusion_layer.
  if (add_cross_attention && !json.contains("fusion_layer")) {
    config.single_stream = true;
    config.fusion_layer = 0;
  }
  read_json_field(json, "encoder_width", config.encoder_width, path);
  if (json.contains("position_embedding_type") && json["position_embedding_type"] != "absolute")
    fail(path, ": only position_embedding_type 'absolute' is supported");
  if (config.hidden_act != "gelu") fail(path, ": hidden_act '", config.hidden_act, "' is not supported (ALBEF uses 'gelu')");
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"vocab_size", config.vocab_size},
                                   {"hidden_size", config.hidden_size},
                                   {"num_hidden_layers", config.num_hidden_layers},
                                   {"num_attention_heads", config.num_attention_heads},
                                   {"intermediate_size", config.intermediate_size},
                                   {"max_position_embeddings", config.max_position_embeddings},
                                   {"type_vocab_size", config.type_vocab_size},
                                   {"encoder_width", config.encoder_width}})
    require_positive(path, key, value);
  if (config.hidden_size % config.num_attention_heads != 0)
    fail(path, ": hidden_size ", config.hidden_size, " is not a multiple of num_attention_heads ", config.num_attention_heads);
  if (config.fusion_layer < 0 || config.fusion_layer > config.num_hidden_layers)
    fail(path, ": fusion_layer ", config.fusion_layer, " is outside [0, num_hidden_layers=", config.num_hidden_layers, "]");
  return config;
}

std::string Config::resolve(const std::string& relative) const {
  if (relative.empty() || fs::path(relative).is_absolute() || paths::exists(relative)) return relative;
  const fs::path dir = fs::path(path).parent_path();
  for (const fs::path& base : {dir, dir.parent_path()}) {
    const fs::path candidate = base / relative;
    if (paths::exists(candidate)) return candidate.lexically_normal().string();
  }
  return relative;
}

Config load_config(const std::string& path, const std::string& text_encoder) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    if (!paths::exists(path)) fail_missing(path, ": cannot open the config file (no such file)");
    fail(path, ": cannot open the config file");
  } catch (const YAML::Exception& e) {
    fail(path, ": invalid YAML at line ", e.mark.line + 1, ": ", e.msg);
  }
  if (!root.IsMap()) fail(path, ": a config must be a YAML mapping of keys");
  check_keys(root, kKnownKeys, "", path);

  Config config;
  config.path = path;
  config.raw = to_json(root, path);
  auto has = [&](const char* key) { return static_cast<bool>(root[key]); };
  auto get_int = [&](const char* key, int64_t& field) {
    if (has(key)) field = scalar<int64_t>(root[key], key, path);
  };
  auto get_double = [&](const char* key, double& field) {
    if (has(key)) field = scalar<double>(root[key], key, path);
  };
  auto get_bool = [&](const char* key, bool& field) {
    if (has(key)) field = scalar<bool>(root[key], key, path);
  };

  if (has("train_file")) config.train_file = string_list(root["train_file"], "train_file", path);
  if (has("val_file")) config.val_file = string_list(root["val_file"], "val_file", path);
  if (has("test_file")) config.test_file = string_list(root["test_file"], "test_file", path);
  if (has("image_root")) config.image_root = scalar<std::string>(root["image_root"], "image_root", path);
  get_int("image_res", config.image_res);
  get_int("vision_width", config.vision_width);
  get_int("embed_dim", config.embed_dim);
  get_int("batch_size", config.batch_size);
  get_int("batch_size_train", config.batch_size_train);
  get_int("batch_size_test", config.batch_size_test);
  get_double("temp", config.temp);
  get_double("mlm_probability", config.mlm_probability);
  get_int("queue_size", config.queue_size);
  get_double("momentum", config.momentum);
  get_double("alpha", config.alpha);
  get_bool("distill", config.distill);
  get_bool("warm_up", config.warm_up);
  get_int("k_test", config.k_test);
  if (has("answer_list")) config.answer_list = scalar<std::string>(root["answer_list"], "answer_list", path);
  if (has("vqa_root")) config.vqa_root = scalar<std::string>(root["vqa_root"], "vqa_root", path);
  if (has("vg_root")) config.vg_root = scalar<std::string>(root["vg_root"], "vg_root", path);
  if (has("eos")) config.eos = scalar<std::string>(root["eos"], "eos", path);
  get_int("decoder_layers", config.decoder_layers);
  get_int("search_space", config.search_space);
  get_int("train_epochs", config.train_epochs);
  if (has("pretrain_mode")) config.pretrain_mode = scalar<std::string>(root["pretrain_mode"], "pretrain_mode", path);
  if (config.pretrain_mode != "albef" && config.pretrain_mode != "grit" && config.pretrain_mode != "simla")
    fail(path, ": pretrain_mode '", config.pretrain_mode, "' is none of 'albef', 'grit', 'simla'");
  if (has("image_tokenizer_path") && !root["image_tokenizer_path"].IsNull())
    config.image_tokenizer_path = scalar<std::string>(root["image_tokenizer_path"], "image_tokenizer_path", path);
  get_bool("mim", config.mim);
  get_bool("independent_views", config.independent_views);
  if (has("masking_generator")) {
    const YAML::Node node = root["masking_generator"];
    check_keys(node, kMaskingKeys, "masking_generator", path);
    auto& m = config.masking_generator;
    auto key = [](const char* name) { return std::string("masking_generator.") + name; };
    if (node["num_masking_patches"])
      m.num_masking_patches = scalar<int64_t>(node["num_masking_patches"], key("num_masking_patches"), path);
    if (node["min_num_patches"])
      m.min_num_patches = scalar<int64_t>(node["min_num_patches"], key("min_num_patches"), path);
    if (node["max_num_patches"] && !node["max_num_patches"].IsNull())
      m.max_num_patches = scalar<int64_t>(node["max_num_patches"], key("max_num_patches"), path);
    if (node["min_aspect"]) m.min_aspect = scalar<double>(node["min_aspect"], key("min_aspect"), path);
    if (node["max_aspect"] && !node["max_aspect"].IsNull())
      m.max_aspect = scalar<double>(node["max_aspect"], key("max_aspect"), path);
  }
  if (config.decoder_layers < 1) fail(path, ": decoder_layers must be at least 1, got ", config.decoder_layers);

  if (has("optimizer")) {
    const YAML::Node node = root["optimizer"];
    check_keys(node, kOptimizerKeys, "optimizer", path);
    if (node["opt"]) config.optimizer.opt = scalar<std::string>(node["opt"], "optimizer.opt", path);
    if (node["lr"]) config.optimizer.lr = scalar<double>(node["lr"], "optimizer.lr", path);
    if (node["weight_decay"])
      config.optimizer.weight_decay = scalar<double>(node["weight_decay"], "optimizer.weight_decay", path);
  }
  if (has("schedular")) {
    const YAML::Node node = root["schedular"];
    check_keys(node, kSchedulerKeys, "schedular", path);
    auto& s = config.schedular;
    if (node["sched"]) s.sched = scalar<std::string>(node["sched"], "schedular.sched", path);
    if (node["lr"]) s.lr = scalar<double>(node["lr"], "schedular.lr", path);
    if (node["epochs"]) s.epochs = scalar<int64_t>(node["epochs"], "schedular.epochs", path);
    if (node["min_lr"]) s.min_lr = scalar<double>(node["min_lr"], "schedular.min_lr", path);
    if (node["decay_rate"]) s.decay_rate = scalar<double>(node["decay_rate"], "schedular.decay_rate", path);
    if (node["warmup_lr"]) s.warmup_lr = scalar<double>(node["warmup_lr"], "schedular.warmup_lr", path);
    if (node["warmup_epochs"]) s.warmup_epochs = scalar<int64_t>(node["warmup_epochs"], "schedular.warmup_epochs", path);
    if (node["cooldown_epochs"])
      s.cooldown_epochs = scalar<int64_t>(node["cooldown_epochs"], "schedular.cooldown_epochs", path);
  }
  if (has("vision_config")) {
    const YAML::Node node = root["vision_config"];
    check_keys(node, kVisionKeys, "vision_config", path);
    auto& v = config.vision;
    if (node["patch_size"]) v.patch_size = scalar<int64_t>(node["patch_size"], "vision_config.patch_size", path);
    if (node["embed_dim"]) v.embed_dim = scalar<int64_t>(node["embed_dim"], "vision_config.embed_dim", path);
    if (node["depth"]) v.depth = scalar<int64_t>(node["depth"], "vision_config.depth", path);
    if (node["num_heads"]) v.num_heads = scalar<int64_t>(node["num_heads"], "vision_config.num_heads", path);
    if (node["mlp_ratio"]) v.mlp_ratio = scalar<double>(node["mlp_ratio"], "vision_config.mlp_ratio", path);
  }
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"image_res", config.image_res},
                                   {"vision_config.patch_size", config.vision.patch_size},
                                   {"vision_config.embed_dim", config.vision.embed_dim},
                                   {"vision_config.depth", config.vision.depth},
                                   {"vision_config.num_heads", config.vision.num_heads}})
    require_positive(path, key, value);
  if (config.vision.embed_dim % config.vision.num_heads != 0)
    fail(path, ": vision_config.embed_dim ", config.vision.embed_dim, " is not a multiple of num_heads ",
         config.vision.num_heads);
  if (config.image_res % config.vision.patch_size != 0)
    fail(path, ": image_res ", config.image_res, " is not a multiple of the patch size ", config.vision.patch_size);
  // Configs without vision_width (VQA.yaml, NLVR.yaml) take the ViT's width, as their models hard-code it.
  if (!has("vision_width")) config.vision_width = config.vision.embed_dim;
  if (config.vision_width != config.vision.embed_dim)
    fail(path, ": vision_width ", config.vision_width, " differs from the ViT width ", config.vision.embed_dim);

  if (!has("bert_config")) fail(path, ": missing key 'bert_config' (the path of config_bert.json)");
  config.bert_config = config.resolve(scalar<std::string>(root["bert_config"], "bert_config", path));
  try {
    config.bert = BertConfig::from_json_file(config.bert_config);
  } catch (const Error& e) {
    fail(path, ": bert_config: ", e.what());
  }
  if (config.bert.encoder_width != config.vision_width)
    fail(config.bert_config, ": encoder_width ", config.bert.encoder_width, " differs from vision_width ",
         config.vision_width, " of ", path);
  if (config.pretrain_mode == "simla" && !config.bert.single_stream)
    fail(path, ": pretrain_mode simla needs SIMLA's single-stream BERT (add_cross_attention true, no fusion_layer, as "
         "configs/shared_bert.json); ", config.bert_config, " is not");
  const YAML::Node vocab_key = root["vocab"];
  config.vocab = find_vocabulary(config, vocab_key ? &vocab_key : nullptr, text_encoder);
  return config;
}

}  // namespace albef
