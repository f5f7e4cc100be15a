// VQA (models/model_vqa.py, VQA.py) against the official code's fixtures:
// `literal` keeps VQA.py's hard-coded 6 decoder layers (with the tiny
// 4-layer encoder nothing maps, so they start random: extras_after_load.pth
// holds them), `scaled` uses the tiny model's own fusion depth (2 layers).

#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/tasks/vqa.h"
#include "albef/text/tokenizer.h"
#include "tasks/vqa/accuracy.h"
#include "tasks/vqa/data.h"
#include "tasks/vqa/model.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

namespace {

using albef::testing::data_path;
using albef::testing::expect_relative;
using albef::testing::source_path;
using albef::testing::state_tensor;

constexpr double kTolerance = 1e-5;

struct Variant {
  std::string folder;           // tests/data/vqa/<folder>
  int64_t decoder_layers;       // 6 (literal) or 2 (scaled)
  int64_t first_decoder_layer;  // VQA.py's threshold: 6, or the tiny fusion layer 2
};

const Variant kLiteral{"literal", 6, 6};
const Variant kScaled{"scaled", 2, 2};

at::Tensor fixture(const Variant& variant, const std::string& name) {
  return albef::io::read_npy(data_path("vqa/" + variant.folder + "/npy/" + name + ".npy"));
}

// The tiny VQA config with absolute paths (VQA.yaml's keys).
std::string write_config(const std::string& dir, const Variant& variant) {
  const std::string fixtures = data_path("vqa/" + variant.folder);
  std::ofstream(dir + "/VQA_tiny.yaml")
      << "train_file: ['" << fixtures << "/vqa_train.json']\n"
      << "test_file: ['" << fixtures << "/vqa_test.json']\n"
      << "answer_list: '" << fixtures << "/answer_list.json'\n"
      << "vqa_root: '" << source_path("data/coco-by") << "/'\n"
      << "vg_root: '" << source_path("data/coco-by") << "/'\n"
      << "bert_config: '" << data_path("tiny/config_bert.json") << "'\n"
      << "image_res: 32\nbatch_size_train: 4\nbatch_size_test: 4\nk_test: 4\nalpha: 0.4\ndistill: true\n"
      << "warm_up: true\neos: '[SEP]'\ndecoder_layers: " << variant.decoder_layers << "\n"
      << "optimizer: {opt: adamW, lr: 2.0e-05, weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: 2.0e-05, epochs: 8, min_lr: 1.0e-06, decay_rate: 1, warmup_lr: 1.0e-05, "
         "warmup_epochs: 4, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  return dir + "/VQA_tiny.yaml";
}

// The official model after VQA.py's load (and, literal, the random decoder layers it left).
albef::AlbefModel load_vqa_model(const Variant& variant, albef::LoadReport* report = nullptr) {
  const std::string dir = albef::testing::make_temp_dir("vqa_model_" + variant.folder);
  const albef::Config config = albef::load_config(write_config(dir, variant));
  albef::ModelOptions options = albef::vqa_model_options(config, /*momentum_encoders=*/true);
  options.checkpoint_keys = [&variant](const std::string& key) {
    return albef::vqa_checkpoint_keys(key, variant.first_decoder_layer);
  };
  albef::AlbefModel model(config, options);
  const albef::LoadReport loaded = albef::load_checkpoint(model, data_path("tiny/albef_pretrain_tiny.pth"));
  if (report) *report = loaded;
  const albef::io::StateDict extras = albef::io::state_dict_from(
      albef::io::read_torch_file(data_path("vqa/" + variant.folder + "/extras_after_load.pth")), "extras");
  if (!extras.empty()) albef::load_state_dict(model, extras, "extras_after_load.pth");
  return model;
}

void expect_manifest(albef::AlbefModel& model, const Variant& variant) {
  albef::testing::expect_state_manifest(model, data_path("vqa/" + variant.folder + "/state_after_load_manifest.json"));
}

TEST(VqaModel, CheckpointLoadsAsVqaPyLoadsIt) {
  for (const Variant& variant : {kLiteral, kScaled}) {
    albef::LoadReport report;
    albef::AlbefModel model = load_vqa_model(variant, &report);
    // literal: every decoder layer missing (the tiny encoder has no layer 6+); scaled: nothing.
    EXPECT_EQ(report.missing_keys.size(), variant.folder == "literal" ? 312u : 0u) << variant.folder;
    for (const std::string& key : report.missing_keys)
      EXPECT_EQ(key.rfind("text_decoder", 0), 0u) << key;
    std::vector<std::string> unexpected = report.unexpected_keys;
    std::sort(unexpected.begin(), unexpected.end());
    EXPECT_EQ(unexpected, (std::vector<std::string>{
                              "image_queue", "itm_head.bias", "itm_head.weight", "queue_ptr", "temp", "text_proj.bias",
                              "text_proj.weight", "text_proj_m.bias", "text_proj_m.weight", "text_queue",
                              "vision_proj.bias", "vision_proj.weight", "vision_proj_m.bias", "vision_proj_m.weight"}));
    expect_manifest(model, variant);
  }
}

TEST(VqaModel, SimlaCheckpointLoadsAsSimlaVqaPyLoadsIt) {
  // SIMLA's VQA.py on its single-stream BERT: the encoder takes every layer of the checkpoint; the
  // decoder, as deep as the BERT, takes its embeddings and MLM head and its layers from 6 on (VQA.py's
  // literal), which the tiny model does not have: its 4 decoder layers keep their init.
  const albef::Config config = albef::load_config(data_path("simla/Pretrain_tiny.yaml"));
  albef::AlbefModel model(config, albef::vqa_model_options(config, /*momentum_encoders=*/true));
  const std::string path = data_path("simla/simla_pretrain_tiny.pth");
  const albef::LoadReport report = albef::load_checkpoint(model, path);
  const albef::io::StateDict stored = albef::io::state_dict_from(albef::io::read_torch_file(path), path);
  auto checkpoint = [&](const std::string& key) {
    for (const auto& [name, tensor] : stored)
      if (name == key) return tensor.to(at::kFloat);
    ADD_FAILURE() << key << " is not in the checkpoint";
    return at::Tensor();
  };
  for (const auto& [model_key, checkpoint_key] : std::vector<std::pair<std::string, std::string>>{
           {"text_encoder.encoder.layer.3.crossattention.self.key.weight",
            "text_encoder.bert.encoder.layer.3.crossattention.self.key.weight"},
           {"text_encoder_m.encoder.layer.0.attention.self.query.weight",
            "text_encoder_m.bert.encoder.layer.0.attention.self.query.weight"},
           {"text_decoder.bert.embeddings.word_embeddings.weight", "text_encoder.bert.embeddings.word_embeddings.weight"},
           {"text_decoder.cls.predictions.transform.dense.weight", "text_encoder.cls.predictions.transform.dense.weight"}})
    EXPECT_TRUE(at::equal(state_tensor(model, model_key), checkpoint(checkpoint_key))) << model_key;
  EXPECT_EQ(report.missing_keys.size(), 2u * 4u * 26u);  // both decoders' 4 layers x 26 tensors
  for (const std::string& key : report.missing_keys) EXPECT_EQ(key.rfind("text_decoder", 0), 0u) << key;
}

TEST(VqaModel, DecoderKeysFollowVqaPy) {
  using albef::vqa_checkpoint_keys;
  using Keys = std::vector<std::string>;
  EXPECT_EQ(vqa_checkpoint_keys("text_encoder.bert.encoder.layer.7.output.dense.weight", 6),
            (Keys{"text_encoder.encoder.layer.7.output.dense.weight",
                  "text_decoder.bert.encoder.layer.1.output.dense.weight"}));
  EXPECT_EQ(vqa_checkpoint_keys("text_encoder.bert.encoder.layer.3.attention.self.query.bias", 6),
            (Keys{"text_encoder.encoder.layer.3.attention.self.query.bias"}));
  EXPECT_EQ(vqa_checkpoint_keys("text_encoder_m.bert.embeddings.LayerNorm.weight", 6),
            (Keys{"text_encoder_m.embeddings.LayerNorm.weight", "text_decoder_m.bert.embeddings.LayerNorm.weight"}));
  EXPECT_EQ(vqa_checkpoint_keys("text_encoder.cls.predictions.bias", 6), (Keys{"text_decoder.cls.predictions.bias"}));
  EXPECT_EQ(vqa_checkpoint_keys("visual_encoder.pos_embed", 6), (Keys{"visual_encoder.pos_embed"}));
  // A VQA checkpoint (fine-tuned or resumed) loads as it is.
  EXPECT_EQ(vqa_checkpoint_keys("text_encoder.encoder.layer.0.output.dense.weight", 6),
            (Keys{"text_encoder.encoder.layer.0.output.dense.weight"}));
  EXPECT_EQ(vqa_checkpoint_keys("text_decoder.bert.encoder.layer.0.output.dense.weight", 6),
            (Keys{"text_decoder.bert.encoder.layer.0.output.dense.weight"}));
}

TEST(VqaModel, FullSizeKeysAndShapesAreTheOfficialOnes) {
  const albef::Config config = albef::load_config(source_path("configs/VQA.yaml"));
  albef::AlbefModel model(config, albef::vqa_model_options(config, true));
  albef::testing::expect_official_keys(model, data_path("keys/vqa.json"));
}

void expect_training_step(const Variant& variant, double expected_loss) {
  albef::AlbefModel model = load_vqa_model(variant);
  model->train();
  const albef::VqaTrainOutputs out = albef::vqa_forward(
      model, fixture(variant, "inputs__image"), fixture(variant, "train__question_input_ids"),
      fixture(variant, "train__question_attention_mask"), fixture(variant, "train__answer_input_ids"),
      fixture(variant, "train__answer_attention_mask"), fixture(variant, "train__weights"),
      fixture(variant, "train__n"), 0.4, /*distill=*/true);
  EXPECT_NEAR(out.loss.item<double>(), expected_loss, kTolerance) << variant.folder;
  EXPECT_NEAR(out.loss.item<double>(), fixture(variant, "train__loss").item<double>(), kTolerance);
  EXPECT_TENSOR_NEAR(out.per_answer_loss, fixture(variant, "train__per_answer_loss"), kTolerance);
  EXPECT_TENSOR_NEAR(out.image_embeds, fixture(variant, "train__image_embeds"), kTolerance);
  EXPECT_TENSOR_NEAR(out.question_states, fixture(variant, "train__question_states"), kTolerance);
  const std::string momentum = "text_decoder_m.bert.encoder.layer.0.crossattention.self.query.weight";
  EXPECT_TENSOR_NEAR(state_tensor(model, momentum), fixture(variant, "train__momentum_after__" + momentum), 1e-6);

  out.loss.backward();
  const std::string last_layer = variant.folder == "literal" ? "5" : "1";
  for (const std::string& name : std::vector<std::string>{
           "visual_encoder.pos_embed", "visual_encoder.blocks.0.attn.qkv.weight",
           "text_encoder.encoder.layer.0.attention.self.query.weight",
           "text_encoder.encoder.layer.3.crossattention.self.key.weight",
           "text_decoder.bert.encoder.layer.0.crossattention.self.query.weight",
           "text_decoder.bert.encoder.layer." + last_layer + ".output.dense.weight",
           "text_decoder.cls.predictions.transform.dense.weight", "text_decoder.cls.predictions.bias"})
    expect_relative(state_tensor(model, name).grad(), fixture(variant, "train__grad__" + name), 1e-4, name);
  // The word embeddings are tied to the LM head: their gradient is both.
  const std::string embeddings = "text_decoder.bert.embeddings.word_embeddings.weight";
  const at::Tensor gradient = state_tensor(model, embeddings).grad();
  expect_relative(gradient.index_select(0, fixture(variant, "train__grad__" + embeddings + "__row_ids")),
                  fixture(variant, "train__grad__" + embeddings + "__rows"), 1e-4, embeddings);
  EXPECT_NEAR(gradient.to(at::kDouble).norm().item<double>(),
              fixture(variant, "train__grad__" + embeddings + "__fro_norm").item<double>(), 1e-4);
  // Over model.parameters() as PyTorch lists them: a tied tensor once.
  double squares = 0.0;
  std::set<const void*> seen;
  for (const auto& parameter : model->parameters())
    if (parameter.grad().defined() && seen.insert(parameter.unsafeGetTensorImpl()).second)
      squares += parameter.grad().to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(std::sqrt(squares), fixture(variant, "train__grad_norm_total").item<double>(), 1e-4);
}

TEST(VqaModel, TrainingLossAndGradientsMatchOfficialLiteral) { expect_training_step(kLiteral, 18.903219); }

TEST(VqaModel, TrainingLossAndGradientsMatchOfficialScaled) { expect_training_step(kScaled, 18.908033); }

TEST(VqaModel, AnswerRankingMatchesOfficial) {
  for (const Variant& variant : {kLiteral, kScaled}) {
    albef::AlbefModel model = load_vqa_model(variant);
    model->eval();
    at::NoGradGuard no_grad;
    const at::Tensor mask = fixture(variant, "eval__question_attention_mask");
    const at::Tensor states = albef::encode_questions(model, fixture(variant, "inputs__image_eval"),
                                                      fixture(variant, "eval__question_input_ids"), mask);
    const albef::AnswerRanking ranking = albef::rank_answers(
        model, states, mask, fixture(variant, "answers__input_ids"), fixture(variant, "answers__attention_mask"), 4);
    expect_relative(ranking.prob_first_token, fixture(variant, "eval__prob_first_token"), 1e-4, "prob_first_token");
    EXPECT_TRUE(ranking.first_stage_ids.equal(fixture(variant, "eval__first_stage_topk_ids"))) << variant.folder;
    expect_relative(ranking.first_stage_probs, fixture(variant, "eval__first_stage_topk_probs"), 1e-4, "first stage");
    EXPECT_TENSOR_NEAR(ranking.answer_loss, fixture(variant, "eval__rank_answer_loss"), kTolerance);
    EXPECT_TENSOR_NEAR(ranking.log_probs_sum, fixture(variant, "eval__log_probs_sum"), kTolerance);
    EXPECT_TRUE(ranking.topk_ids.equal(fixture(variant, "eval__topk_ids"))) << variant.folder;
    EXPECT_TENSOR_NEAR(ranking.topk_probs, fixture(variant, "eval__topk_probs"), kTolerance);
  }
}

TEST(VqaCli, EvaluateWritesTheOfficialResult) {
  const std::string dir = albef::testing::make_temp_dir("vqa_cli_evaluate");
  albef::AlbefModel model = load_vqa_model(kScaled);
  const std::string checkpoint = dir + "/vqa_scaled.pth";
  albef::io::write_torch_file(checkpoint, albef::io::state_dict_to_object(albef::state_dict(*model)));
  std::string output;
  ASSERT_EQ(albef::testing::run_command(std::string(ALBEF_CLI) + " vqa --config " + write_config(dir, kScaled) +
                                            " --checkpoint " + checkpoint + " --output_dir " + dir + "/out --evaluate",
                                        &output),
            0)
      << output;
  std::ifstream result(dir + "/out/vqa_result.json"), expected(data_path("vqa/scaled/vqa_result.json"));
  EXPECT_EQ(nlohmann::json::parse(result), nlohmann::json::parse(expected));
  std::ifstream topk(dir + "/out/vqa_topk.json");
  const nlohmann::json ranked = nlohmann::json::parse(topk);
  ASSERT_EQ(ranked.size(), 4u);
  const at::Tensor ids = fixture(kScaled, "eval__topk_ids");
  const std::vector<std::string> answers = albef::vqa::load_answer_list(data_path("vqa/scaled/answer_list.json"));
  for (int64_t q = 0; q < 4; ++q) {
    EXPECT_EQ(ranked[q]["question_id"].get<int64_t>(), 1001 + q);
    for (int64_t j = 0; j < 4; ++j)
      EXPECT_EQ(ranked[q]["answers"][j].get<std::string>(), answers[ids[q][j].item<int64_t>()]);
  }
  // `ask` ranks the same way for one image.
  ASSERT_EQ(albef::testing::run_command(std::string(ALBEF_CLI) + " ask --config " + dir + "/VQA_tiny.yaml" +
                                            " --checkpoint " + checkpoint + " --image " +
                                            source_path("data/coco-by/images/000000000790.jpg") +
                                            " --question 'How many people are at the table?' --top 2 --json",
                                        &output),
            0)
      << output;
  const nlohmann::json asked = nlohmann::json::parse(output);
  ASSERT_EQ(asked[0]["answers"].size(), 2u);
  EXPECT_EQ(asked[0]["answers"][0]["answer"].get<std::string>(), answers[ids[0][0].item<int64_t>()]);
}

TEST(VqaData, QuestionsAnswersAndWeightsAsTheOfficialDataset) {
  const albef::vqa::TrainSet set =
      albef::vqa::load_train_set({data_path("vqa/scaled/vqa_train.json")}, "root/", "vg/");
  ASSERT_EQ(set.questions.size(), 4u);
  EXPECT_EQ(set.questions[0].image, "root/images/000000000790.jpg");
  EXPECT_EQ(set.questions[0].answers, (std::vector<std::string>{"four", "five"}));
  EXPECT_NEAR(set.questions[0].weights[0], 0.75, 1e-12);
  EXPECT_EQ(set.questions[2].image, "vg/images/000000084284.jpg");  // a Visual Genome item
  EXPECT_EQ(set.questions[2].weights, std::vector<double>{0.5});
  EXPECT_EQ(set.questions[3].answers, (std::vector<std::string>{"blue", "light blue"}));
  EXPECT_NEAR(set.questions[3].weights[0], 2.0 / 3.0, 1e-12);
  EXPECT_EQ(albef::text::pre_question("What color is the street-sign?", 30), "what color is the street sign");
  EXPECT_EQ(albef::text::pre_question("  Is  it (really) blue?  ", 50), "  is  it really blue");
  EXPECT_EQ(albef::text::pre_question("a b  c d", 3), "a b ");  // split(' ') counts the empty word
}

TEST(VqaData, BadFilesNameTheFileAndEntry) {
  const std::string dir = albef::testing::make_temp_dir("vqa_bad_files");
  auto expect_error = [&](const std::string& name, const std::string& text, const std::string& needle, auto load) {
    const std::string path = dir + "/" + name;
    std::ofstream(path) << text;
    try {
      load(path);
      ADD_FAILURE() << "no error for " << name;
    } catch (const albef::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(path), std::string::npos) << message;
      EXPECT_NE(message.find(needle), std::string::npos) << message;
    }
  };
  auto train = [](const std::string& path) { albef::vqa::load_train_set({path}, "", ""); };
  auto test = [](const std::string& path) { albef::vqa::load_test_set(path, "", ""); };
  auto answers = [](const std::string& path) { albef::vqa::load_answer_list(path); };
  expect_error("no_question.json", R"([{"image": "a.jpg", "answer": ["x"], "dataset": "vqa"}])",
               "entry 0: missing \"question\"", train);
  expect_error("bad_dataset.json", R"([{"image": "a.jpg", "question": "q", "answer": "x", "dataset": "coco"}])",
               "\"dataset\" must be", train);
  expect_error("empty_answers.json", R"([{"image": "a.jpg", "question": "q", "answer": [], "dataset": "vqa"}])",
               "empty list", train);
  expect_error("no_id.json", R"([{"image": "a.jpg", "question": "q"}, {"image": "b.jpg"}])",
               "entry 0: missing \"question_id\"", test);
  expect_error("answers_empty.json", "[]", "empty", answers);
  expect_error("answers_object.json", R"({"a": 1})", "JSON list", answers);
  expect_error("answers_number.json", R"(["yes", 2])", "answer 1", answers);
}

TEST(VqaAccuracy, TheOfficialMetric) {
  using albef::vqa::question_accuracy;
  const std::vector<std::string> ten(10, "2");
  EXPECT_DOUBLE_EQ(question_accuracy("two", ten), 1.0);  // number words become digits
  // 1, 2 and 3 matching humans out of 10: the leave-one-out average of min(matches / 3, 1).
  std::vector<std::string> humans = {"red", "blue", "blue", "green", "green", "green", "x", "y", "z", "w"};
  EXPECT_NEAR(question_accuracy("red", humans), 0.3, 1e-12);
  EXPECT_NEAR(question_accuracy("blue", humans), (8 * 2.0 / 3 + 2 * 1.0 / 3) / 10, 1e-12);
  EXPECT_NEAR(question_accuracy("green", humans), (7 * 1.0 + 3 * 2.0 / 3) / 10, 1e-12);
  EXPECT_NEAR(question_accuracy("purple", humans), 0.0, 1e-12);
  // Articles, punctuation and case of the answer do not count; "dont" gets its apostrophe.
  EXPECT_NEAR(question_accuracy("The Dog.", std::vector<std::string>(10, "dog")), 1.0, 1e-12);
  EXPECT_EQ(albef::vqa::process_digit_article("I dont know the answer"), "i don't know answer");
  EXPECT_EQ(albef::vqa::process_punctuation("yes, it is"), "yes it is");   // touches a space: deleted
  EXPECT_EQ(albef::vqa::process_punctuation("black-white"), "black white");  // else a space
  EXPECT_EQ(albef::vqa::process_punctuation("1,000"), "1000");                // digit,digit
  EXPECT_EQ(albef::vqa::process_punctuation("3.5 ft."), "3.5 ft");           // '.' before a digit stays
  const nlohmann::json report = albef::vqa::accuracy_report(
      {{"2", ten, "number"}, {"red", humans, "other"}, {"yes", std::vector<std::string>(10, "no"), "yes/no"}});
  EXPECT_DOUBLE_EQ(report["overall"].get<double>(), 43.33);
  EXPECT_DOUBLE_EQ(report["perAnswerType"]["number"].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(report["perAnswerType"]["other"].get<double>(), 30.0);
  EXPECT_DOUBLE_EQ(report["perAnswerType"]["yes/no"].get<double>(), 0.0);
}

}  // namespace

namespace {

// configs/demo_vqa.yaml with `file_key`'s file replaced by `file`, written to dir/vqa.yaml.
std::string demo_config_with(const std::string& dir, const std::string& file_key, const std::string& file) {
  std::ifstream in(source_path("configs/demo_vqa.yaml"));
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t line = config.find("\n" + file_key + ": ") + 1;
  const size_t end = config.find('\n', line);
  config.replace(line, end - line, file_key + ": ['" + file + "']");
  std::ofstream(dir + "/vqa.yaml") << config;
  return dir + "/vqa.yaml";
}

TEST(VqaCli, TheBundledDemoTrainsAndAnswers) {
  // configs/demo_vqa.yaml from random weights, 6 epochs: the loss falls, the
  // test questions are answered and scored with the official metric.
  const std::string dir = albef::testing::make_temp_dir("vqa_demo");
  std::string output;
  ASSERT_EQ(albef::testing::run_command("cd " + source_path("") + " && " + std::string(ALBEF_CLI) +
                                            " vqa --config configs/demo_vqa.yaml --output_dir " + dir +
                                            " --epochs 6 --print_freq 100",
                                        &output),
            0)
      << output;
  const std::vector<nlohmann::json> log = albef::testing::read_json_lines(dir + "/log.txt");
  ASSERT_EQ(log.size(), 6u) << output;
  const double first = std::stod(log[0]["train_loss"].get<std::string>());
  const double last = std::stod(log[5]["train_loss"].get<std::string>());
  EXPECT_LT(last, first * 0.9) << output;
  ASSERT_TRUE(log[5].contains("test_accuracy")) << log[5].dump();
  EXPECT_EQ(log[5]["test_accuracy"]["questions"].get<int64_t>(), 26);
  std::ifstream result(dir + "/vqa_result.json");
  EXPECT_EQ(nlohmann::json::parse(result).size(), 26u);
  for (const std::string file : {"checkpoint_05.pth", "train_steps.jsonl", "loss_curve.png", "vqa_topk.json"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + file)) << file;
}

TEST(VqaCli, FineTunesASimlaCheckpoint) {
  // The demo's questions on SIMLA's tiny pretraining checkpoint (single-stream BERT): questions fused from
  // the words, a decoder as deep as the BERT; two epochs train, and the test questions are answered.
  const std::string dir = albef::testing::make_temp_dir("vqa_simla");
  std::ofstream(dir + "/vqa.yaml") << "train_file: ['" << source_path("data/coco-by/vqa/train.json") << "']\n"
                                   << "test_file: ['" << source_path("data/coco-by/vqa/test.json") << "']\n"
                                   << "answer_list: '" << source_path("data/coco-by/vqa/answer_list.json") << "'\n"
                                   << "vqa_root: '" << source_path("data/coco-by") << "'\n"
                                   << "vg_root: '" << source_path("data/coco-by") << "'\n"
                                   << "bert_config: '" << data_path("simla/shared_bert_tiny.json") << "'\n"
                                   << "image_res: 64\nvision_width: 64\nbatch_size_train: 16\nbatch_size_test: 16\n"
                                   << "k_test: 16\nalpha: 0.4\ndistill: True\nwarm_up: True\neos: '[SEP]'\n"
                                   << "vit_mask_token: false\n"
                                   << "optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}\n"
                                   << "schedular: {sched: cosine, lr: 1e-4, epochs: 2, min_lr: 1e-6, decay_rate: 1, "
                                      "warmup_lr: 1e-5, warmup_epochs: 1, cooldown_epochs: 0}\n"
                                   << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, "
                                      "mlp_ratio: 4}\n";
  std::string output;
  ASSERT_EQ(albef::testing::run_command(std::string(ALBEF_CLI) + " vqa --config " + dir + "/vqa.yaml --checkpoint " +
                                            data_path("simla/simla_pretrain_tiny.pth") + " --output_dir " + dir +
                                            "/run --threads 1 --print_freq 100",
                                        &output),
            0)
      << output;
  const std::vector<nlohmann::json> log = albef::testing::read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 2u) << output;
  EXPECT_TRUE(std::isfinite(std::stod(log[1]["train_loss"].get<std::string>()))) << log[1].dump();
  std::ifstream result(dir + "/run/vqa_result.json");
  EXPECT_EQ(nlohmann::json::parse(result).size(), 26u);
}

TEST(VqaCli, UnreadableTrainingImagesAreSkippedAndCounted) {
  const std::string dir = albef::testing::make_temp_dir("vqa_bad_image");
  std::ifstream in(source_path("data/coco-by/vqa/train.json"));
  nlohmann::json items = nlohmann::json::parse(in);
  items[0]["image"] = "images/missing.jpg";
  const std::string absolute = source_path("data/coco-by");
  for (auto& item : items) item["image"] = absolute + "/" + item["image"].get<std::string>();
  std::ofstream(dir + "/train.json") << items.dump();
  const std::string config = demo_config_with(dir, "train_file", dir + "/train.json");
  std::string output;
  ASSERT_EQ(albef::testing::run_command("cd " + source_path("") + " && " + std::string(ALBEF_CLI) + " vqa --config " +
                                            config + " --output_dir " + dir + "/out --epochs 1",
                                        &output),
            0)
      << output;
  EXPECT_NE(output.find("skipped 1 unreadable image"), std::string::npos) << output;
  EXPECT_NE(output.find("missing.jpg"), std::string::npos) << output;
}

TEST(VqaCli, AMalformedTestFileWritesNothing) {
  const std::string dir = albef::testing::make_temp_dir("vqa_bad_test");
  std::ofstream(dir + "/test.json") << R"([{"image": "images/000000000790.jpg", "question": "what?"}])";
  const std::string config = demo_config_with(dir, "test_file", dir + "/test.json");
  std::string output;
  EXPECT_NE(albef::testing::run_command("cd " + source_path("") + " && " + std::string(ALBEF_CLI) + " vqa --config " +
                                            config + " --output_dir " + dir + "/out",
                                        &output),
            0);
  EXPECT_NE(output.find(dir + "/test.json: entry 0: missing \"question_id\""), std::string::npos) << output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
}

}  // namespace
