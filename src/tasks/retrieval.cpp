#include "albef/tasks/retrieval.h"

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/data/annotations.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace albef {
namespace fs = std::filesystem;

nlohmann::json run_retrieval_evaluation(const RetrievalOptions& options) {
  init_runtime(options.threads);
  const Config config = load_config(options.config_path);
  const text::BertTokenizer tokenizer(config.vocab);
  const c10::Device device = parse_device(options.device);
  if (config.test_file.empty()) fail(options.config_path, ": no test_file to evaluate on");

  // Evaluation needs neither the momentum encoders nor the queues.
  AlbefModel model(config, ModelOptions{ModelKind::Retrieval, /*momentum_encoders=*/false});
  const auto state = io::state_dict_from(io::read_torch_file(options.checkpoint), options.checkpoint);
  const LoadReport report = load_state_dict(model, state, options.checkpoint);
  for (const auto& key : report.missing_keys)
    if (key != "temp") fail(options.checkpoint, ": the checkpoint has no '", key, "'");
  model->to(device);

  RetrievalEvalOptions eval;
  eval.k_test = config.k_test;
  eval.image_batch = config.batch_size_test;
  eval.precision = options.precision;
  fs::create_directories(options.output_dir);

  nlohmann::json log = nlohmann::json::object();
  nlohmann::json test_metrics;
  const std::vector<std::pair<std::string, std::string>> splits = {
      {"val", config.val_file.empty() ? "" : config.val_file[0]}, {"test", config.test_file[0]}};
  for (const auto& [split, file] : splits) {
    if (file.empty()) continue;
    const data::RetrievalEvalDataset dataset = data::load_retrieval_eval_dataset(config.resolve(file), config.image_root);
    const RetrievalScores scores = evaluate_retrieval(model, tokenizer, dataset.image_paths(), dataset.text, eval);
    const nlohmann::json metrics = itm_eval(scores.i2t, scores.t2i, dataset.txt2img, dataset.img2txt);
    // Also the ITC ranking alone, before the ITM re-ranking (shows what each stage contributes).
    const nlohmann::json itc_metrics = itm_eval(scores.itc, scores.itc.t(), dataset.txt2img, dataset.img2txt);
    for (const auto& [key, value] : metrics.items()) log[split + "_" + key] = value;
    // By chance, R@1 is 1/images in both directions (an image's own captions
    // are its share of the texts).
    std::printf("%s: %lld images, %lld texts (R@1 by chance: %.1f)\n", split.c_str(),
                static_cast<long long>(dataset.num_images()), static_cast<long long>(dataset.num_texts()),
                100.0 / dataset.num_images());
    for (const auto& [stage, values] : {std::make_pair("ITC + ITM re-rank", metrics), std::make_pair("ITC only", itc_metrics)}) {
      std::printf("  %-17s image->text R@1 %5.1f R@5 %5.1f R@10 %5.1f | text->image R@1 %5.1f R@5 %5.1f R@10 %5.1f\n",
                  stage, values["txt_r1"].get<double>(), values["txt_r5"].get<double>(), values["txt_r10"].get<double>(),
                  values["img_r1"].get<double>(), values["img_r5"].get<double>(), values["img_r10"].get<double>());
    }
    for (const auto& [key, value] : itc_metrics.items()) log[split + "_itc_" + key] = value;
    if (split == "test") {
      io::write_npy(options.output_dir + "/score_i2t.npy", scores.i2t);
      io::write_npy(options.output_dir + "/score_t2i.npy", scores.t2i);
      test_metrics = metrics;
    }
  }
  log["epoch"] = 0;
  std::ofstream out(options.output_dir + "/log.txt", std::ios::app);
  out << log.dump() << "\n";
  if (!out) fail(options.output_dir, "/log.txt: cannot append");
  return test_metrics;
}

}  // namespace albef
