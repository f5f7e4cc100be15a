// `albef vqa` (the official VQA.py, same flags) and `albef ask`.

#include "albef/tasks/vqa.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/loader.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/image.h"
#include "tasks/flags.h"
#include "tasks/registry.h"
#include "tasks/vqa/accuracy.h"
#include "tasks/vqa/data.h"
#include "tasks/vqa/model.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

namespace albef {
namespace fs = std::filesystem;
namespace {

using nlohmann::json;

// The candidate answers with eos, tokenized once (VQA.py: padding='longest', no truncation).
struct AnswerList {
  std::vector<std::string> answers;  // as written in answer_list.json
  at::Tensor ids, mask;              // [N, La]
};

AnswerList tokenize_answers(std::vector<std::string> answers, const text::BertTokenizer& tokenizer,
                            const Config& config) {
  std::vector<std::string> with_eos;
  for (const std::string& answer : answers) with_eos.push_back(answer + config.eos);
  const text::BatchEncoding encoding = tokenizer.encode_batch(
      with_eos, static_cast<int>(config.bert.max_position_embeddings), text::Padding::Longest);
  return {std::move(answers), encoding.input_ids, encoding.attention_mask};
}

// Python's json.dumps of a string (ensure_ascii), for the official result layout.
std::string py_string(const std::string& s) { return json(s).dump(-1, ' ', /*ensure_ascii=*/true); }

// The rows of `rows` that rank `rank` of `world_size` evaluates (the official split).
std::pair<int64_t, int64_t> share_of(int64_t rows, int rank, int world_size) {
  const int64_t step = rows / world_size + 1;
  const int64_t begin = std::min<int64_t>(rows, rank * step);
  return {begin, std::min(rows, begin + step)};
}

// VQA.py's evaluation of test_file: every question's k_test best answers.
class Evaluator {
 public:
  Evaluator(const Config& config, std::shared_ptr<const text::BertTokenizer> tokenizer, Precision precision)
      : config_(config), tokenizer_(std::move(tokenizer)), precision_(precision) {
    if (config.test_file.empty()) fail(config.path, ": no test_file to answer");
    if (config.answer_list.empty()) fail(config.path, ": no answer_list to rank");
    test_ = vqa::load_test_set(config.resolve(config.test_file[0]), config.resolve(config.vqa_root),
                               config.resolve(config.vg_root));
    answers_ = tokenize_answers(vqa::load_answer_list(config.resolve(config.answer_list)), *tokenizer_, config);
    if (config.k_test > static_cast<int64_t>(answers_.answers.size()))
      fail(config.path, ": k_test ", config.k_test, " is larger than the ", answers_.answers.size(),
           " answers of ", config.answer_list);
  }

  /// Writes vqa_result.json and vqa_topk.json to output_dir (rank 0) and
  /// returns the evaluation; with `group` the ranks share the questions.
  VqaEvaluation operator()(AlbefModel& model, const std::string& output_dir, distributed::ProcessGroup* group) const {
    at::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    const c10::Device device = model->parameters().front().device();
    const auto questions = static_cast<int64_t>(test_.questions.size());
    const int64_t k = config_.k_test;
    const auto [begin, end] = share_of(questions, group ? group->rank() : 0, group ? group->world_size() : 1);
    // Filled on this rank's rows, zero elsewhere: summed over the ranks.
    at::Tensor ids = at::zeros({questions, k}, at::kDouble), probs = at::zeros({questions, k}, at::kDouble);
    const std::vector<std::string> all_paths = test_.image_paths();
    data::EvalImageLoader images({all_paths.begin() + begin, all_paths.begin() + end},
                                 static_cast<int>(config_.image_res), config_.batch_size_test);
    const at::Tensor answer_ids = answers_.ids.to(device), answer_mask = answers_.mask.to(device);
    while (auto batch = images.next()) {
      const int64_t first = begin + batch->indices[0].item<int64_t>(), count = batch->images.size(0);
      std::vector<std::string> cleaned;
      for (int64_t q = first; q < first + count; ++q)
        cleaned.push_back(text::pre_question(test_.questions[static_cast<size_t>(q)].question, 50));
      const text::BatchEncoding encoding = tokenizer_->encode_batch(
          cleaned, static_cast<int>(config_.bert.max_position_embeddings), text::Padding::Longest);
      const at::Tensor mask = encoding.attention_mask.to(device);
      PrecisionGuard precision(precision_, device);
      const at::Tensor states =
          encode_questions(model, batch->images.to(device), encoding.input_ids.to(device), mask);
      const AnswerRanking ranking = rank_answers(model, states, mask, answer_ids, answer_mask, k);
      ids.slice(0, first, first + count).copy_(ranking.topk_ids.to(at::kCPU, at::kDouble));
      probs.slice(0, first, first + count).copy_(ranking.topk_probs.to(at::kCPU, at::kDouble));
    }
    if (group) {
      group->sum(ids);
      group->sum(probs);
    }
    if (was_training) model->train();
    VqaEvaluation evaluation;
    if (group && group->rank() != 0) return evaluation;
    fs::create_directories(output_dir);
    evaluation.result_file = output_dir + "/vqa_result.json";
    evaluation.topk_file = output_dir + "/vqa_topk.json";
    std::string result = "[";
    json topk = json::array();
    std::vector<vqa::ScoredAnswer> scored;
    const auto id_at = ids.accessor<double, 2>();
    const auto prob_at = probs.accessor<double, 2>();
    for (int64_t q = 0; q < questions; ++q) {
      const vqa::TestQuestion& question = test_.questions[static_cast<size_t>(q)];
      json candidates = json::array(), probabilities = json::array();
      for (int64_t j = 0; j < k; ++j) {
        candidates.push_back(answers_.answers[static_cast<size_t>(id_at[q][j])]);
        probabilities.push_back(prob_at[q][j]);
      }
      // probs are sorted descending: VQA.py's argmax is the first.
      const std::string& answer = candidates[0].get_ref<const std::string&>();
      result += std::string(q ? ", " : "") + "{\"question_id\": " + std::to_string(question.question_id) +
                ", \"answer\": " + py_string(answer) + "}";
      json entry = json::object();
      entry["question_id"] = question.question_id;
      entry["answers"] = candidates;
      entry["probabilities"] = probabilities;
      topk.push_back(entry);
      scored.push_back({answer, question.answers, question.answer_type});
    }
    result += "]";
    write_atomically(evaluation.result_file, [&](const std::string& tmp) { std::ofstream(tmp) << result; });
    write_atomically(evaluation.topk_file, [&](const std::string& tmp) { std::ofstream(tmp) << topk.dump(1); });
    std::cout << "result file saved to " << evaluation.result_file << "\n";
    if (test_.has_answers()) {
      evaluation.accuracy = vqa::accuracy_report(scored);
      std::cout << "VQA accuracy on " << questions << " questions: " << evaluation.accuracy.dump() << "\n";
    }
    return evaluation;
  }

  const vqa::TestSet& test_set() const { return test_; }

 private:
  const Config& config_;
  std::shared_ptr<const text::BertTokenizer> tokenizer_;
  Precision precision_;
  vqa::TestSet test_;
  AnswerList answers_;
};

void append_log(const std::string& output_dir, const json& line) {
  std::ofstream out(output_dir + "/log.txt", std::ios::app);
  out << line.dump() << "\n";
  if (!out) fail(output_dir, "/log.txt: cannot append");
}

}  // namespace

VqaEvaluation run_vqa(const VqaOptions& options) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path, options.text_encoder);
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  // Read before anything is written: a malformed test file or answer list fails at once.
  const Evaluator evaluate(config, tokenizer, options.precision);

  if (options.evaluate) {
    if (options.checkpoint.empty()) fail("--evaluate needs --checkpoint");
    prepare_output_dir(options.output_dir, "--output_dir");  // before the work, not after it
    AlbefModel model = load_inference_model(config, vqa_model_options(config, false), options.checkpoint,
                                            parse_device(options.device), options.precision);
    const std::unique_ptr<distributed::ProcessGroup> group = distributed::join_process_group(
        parse_device(options.device), std::chrono::duration_cast<std::chrono::milliseconds>(options.dist_timeout));
    VqaEvaluation evaluation = evaluate(model, options.output_dir, group.get());
    if (!group || group->rank() == 0) {
      json line = {{"epoch", 0}};
      if (!evaluation.accuracy.is_null()) line["test_accuracy"] = evaluation.accuracy;
      append_log(options.output_dir, line);
    }
    return evaluation;
  }

  if (config.train_file.empty()) fail(options.config_path, ": no train_file to fine-tune on");
  std::vector<std::string> train_files;
  for (const auto& file : config.train_file) train_files.push_back(config.resolve(file));
  auto train_set = std::make_shared<vqa::TrainSet>(
      vqa::load_train_set(train_files, config.resolve(config.vqa_root), config.resolve(config.vg_root)));

  TrainingTask task;
  task.model = vqa_model_options(config, /*momentum_encoders=*/config.distill);
  task.schedule = TrainingSchedule::pretrain(config);  // VQA.py steps its schedule as Pretrain.py
  task.schedule.alpha_warm_up = config.warm_up;
  task.loss_names = {"loss"};
  const bool distill = config.distill;
  task.data = [&config, train_set, tokenizer, distill](data::TrainLoaderOptions loader, c10::Device device) {
    loader.batch_size = config.batch_size_train;
    auto questions = std::make_unique<vqa::TrainLoader>(std::move(*train_set), config, loader);
    return bind_train_data(std::move(questions), [tokenizer, device, distill](AlbefModel& model,
                                                                             const vqa::TrainBatch& batch,
                                                                             double alpha, const FeatureGather&) {
      // VQA.py: questions padding='longest', truncation=True, max_length=25; answers padding='longest'.
      const text::BatchEncoding questions = tokenizer->encode_batch(batch.questions, 25, text::Padding::Longest);
      const text::BatchEncoding answers = tokenizer->encode_batch(
          batch.answers, static_cast<int>(model->config().bert.max_position_embeddings), text::Padding::Longest);
      const VqaTrainOutputs out = vqa_forward(
          model, batch.images.to(device), questions.input_ids.to(device), questions.attention_mask.to(device),
          answers.input_ids.to(device), answers.attention_mask.to(device), batch.weights.to(device),
          batch.answers_per_question, alpha, distill);
      return std::vector<at::Tensor>{out.loss};
    });
  };
  // VQA.py answers the test questions once, after the last epoch.
  const int64_t end_epoch =
      options.epochs > 0 ? std::min(options.epochs, config.schedular.epochs) : config.schedular.epochs;
  auto evaluation = std::make_shared<VqaEvaluation>();
  const std::string output_dir = options.output_dir;
  task.evaluate = [&evaluate, evaluation, end_epoch, output_dir](AlbefModel& model, int64_t epoch,
                                                                 distributed::ProcessGroup* group) {
    json metrics = json::object();
    if (epoch + 1 != end_epoch) return metrics;
    *evaluation = evaluate(model, output_dir, group);
    if (!evaluation->accuracy.is_null()) metrics["test_accuracy"] = evaluation->accuracy;
    return metrics;
  };
  run_training(options, config, std::move(task));
  return *evaluation;
}

struct VqaAnswerer::Impl {
  Config config;
  text::BertTokenizer tokenizer;
  AnswerList answers;
  c10::Device device;
  Precision precision;
  AlbefModel model{nullptr};
};

VqaAnswerer::VqaAnswerer(const std::string& config_path, const std::string& checkpoint,
                         const std::string& answers_path, const std::string& text_encoder, const std::string& device,
                         Precision precision) {
  Config config = load_config(config_path, text_encoder);
  text::BertTokenizer tokenizer(config.vocab);
  const std::string list = answers_path.empty() ? config.resolve(config.answer_list) : answers_path;
  if (list.empty()) fail(config_path, ": no answer_list; give the candidate answers (a JSON list)");
  AnswerList answers = tokenize_answers(vqa::load_answer_list(list), tokenizer, config);
  const c10::Device on = parse_device(device);
  AlbefModel model = load_inference_model(config, vqa_model_options(config, false), checkpoint, on, precision);
  impl_.reset(new Impl{std::move(config), std::move(tokenizer), std::move(answers), on, precision, std::move(model)});
}

VqaAnswerer::~VqaAnswerer() = default;

const Config& VqaAnswerer::config() const { return impl_->config; }

std::vector<std::vector<VqaAnswerer::Answer>> VqaAnswerer::answer(const at::Tensor& image,
                                                                  const std::vector<std::string>& questions,
                                                                  int64_t top) const {
  Impl& m = *impl_;
  if (questions.empty()) return {};
  const int64_t k = std::min<int64_t>(m.config.k_test, static_cast<int64_t>(m.answers.answers.size()));
  top = std::max<int64_t>(1, std::min(top, k));
  at::NoGradGuard no_grad;
  std::vector<std::string> cleaned;
  for (const std::string& question : questions) cleaned.push_back(text::pre_question(question, 50));
  const text::BatchEncoding encoding = m.tokenizer.encode_batch(
      cleaned, static_cast<int>(m.config.bert.max_position_embeddings), text::Padding::Longest);
  const auto count = static_cast<int64_t>(cleaned.size());
  AnswerRanking ranking;
  {
    PrecisionGuard guard(m.precision, m.device);
    const at::Tensor mask = encoding.attention_mask.to(m.device);
    // One image for every question: encoded once, its tokens broadcast over the questions.
    const at::Tensor image_embeds = m.model->encode_image(image.unsqueeze(0).to(m.device));
    const at::Tensor states =
        fuse_questions(m.model, encoding.input_ids.to(m.device), mask, image_embeds.expand({count, -1, -1}));
    ranking = rank_answers(m.model, states, mask, m.answers.ids.to(m.device), m.answers.mask.to(m.device), k);
  }
  std::vector<std::vector<Answer>> out(static_cast<size_t>(count));
  for (int64_t q = 0; q < count; ++q)
    for (int64_t j = 0; j < top; ++j)
      out[static_cast<size_t>(q)].push_back(
          {m.answers.answers[static_cast<size_t>(ranking.topk_ids[q][j].item<int64_t>())],
           ranking.topk_probs[q][j].item<double>()});
  return out;
}

namespace {

struct AskFlags {
  std::string config, checkpoint, image, answers_path, text_encoder;
  std::vector<std::string> questions;
  int64_t top = 5;
  bool as_json = false;
  tasks::ComputeFlags compute;
};

// `albef ask`: answers for one image, without a dataset file.
void run_ask(const AskFlags& flags) {
  init_runtime(flags.compute.threads);
  flags.compute.warn_if_bf16_is_emulated();
  const VqaAnswerer answerer(flags.config, flags.checkpoint, flags.answers_path, flags.text_encoder,
                             flags.compute.device, parse_precision(flags.compute.precision));
  const at::Tensor image = vision::load_test_image(flags.image, static_cast<int>(answerer.config().image_res));
  const std::vector<std::vector<VqaAnswerer::Answer>> answers = answerer.answer(image, flags.questions, flags.top);
  json out = json::array();
  for (size_t q = 0; q < answers.size(); ++q) {
    json found = json::array();
    for (const VqaAnswerer::Answer& answer : answers[q])
      found.push_back({{"answer", answer.answer}, {"probability", answer.probability}});
    out.push_back({{"question", flags.questions[q]}, {"answers", found}});
  }
  if (flags.as_json) {
    std::cout << out.dump(1) << "\n";
    return;
  }
  for (const json& entry : out) {
    std::cout << entry["question"].get<std::string>() << "\n";
    for (const json& answer : entry["answers"])
      std::printf("  %-30s %6.2f%%\n", answer["answer"].get<std::string>().c_str(),
                  100.0 * answer["probability"].get<double>());
  }
}

}  // namespace

namespace tasks {

Task vqa_task() {
  Task task{"vqa",
            "Visual question answering: fine-tune a pretrained checkpoint with the answer decoder, or --evaluate one "
            "(ranks answer_list for every test question; vqa_result.json, accuracy when answers are given)",
            [](CLI::App& command) {
              command.add_option_function<std::string>(
                  "--text_decoder",
                  [](const std::string&) {
                    std::cerr << "albef: note: --text_decoder is accepted for VQA.py's command lines; the answer "
                                 "decoder's weights come from --checkpoint (VQA.py loads bert-base-uncased into it "
                                 "and then overwrites it from the checkpoint the same way)\n";
                  },
                  "Accepted for VQA.py's command lines (the decoder comes from --checkpoint)");
              return add_fine_tuning_flags<VqaOptions>(
                  command, "output/vqa",  // VQA.py's default
                  "VQA config (configs/VQA.yaml)", "Only answer the test questions with --checkpoint",
                  [](const VqaOptions& options) { run_vqa(options); });
            },
            {}};
  task.official_script = "VQA.py";
  task.checkpoint_model = [](const Config& config) { return vqa_model_options(config); };
  task.add_tools = [](CLI::App& app) {
    auto flags = std::make_shared<AskFlags>();
    CLI::App* command = app.add_subcommand("ask", "Answer questions about one image (VQA model), with probabilities");
    command->add_option("--config", flags->config, "VQA config (configs/VQA.yaml)")->required();
    command->add_option("--checkpoint", flags->checkpoint, "A VQA checkpoint (albef vqa or the official VQA.py)")
        ->required();
    command->add_option("--image", flags->image, "The image")->required();
    command->add_option("--question", flags->questions, "A question (repeatable)")->required();
    command->add_option("--top", flags->top, "Answers to show per question")->check(CLI::PositiveNumber);
    command->add_option("--answers", flags->answers_path, "Candidate answers (JSON list; default: answer_list)");
    add_text_encoder_flag(*command, flags->text_encoder);
    command->add_flag("--json", flags->as_json, "Print JSON instead of a list");
    flags->compute.add_to(*command);
    command->callback([flags] { run_ask(*flags); });
  };
  return task;
}

}  // namespace tasks
}  // namespace albef
