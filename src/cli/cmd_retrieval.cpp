// albef retrieval: the official Retrieval.py (evaluation).

#include "cli/common.h"

#include "albef/tasks/retrieval.h"

#include <memory>

namespace albef::cli {

void add_retrieval_command(CLI::App& app) {
  auto options = std::make_shared<RetrievalOptions>();
  auto compute = std::make_shared<ComputeFlags>();
  auto evaluate = std::make_shared<bool>(false);
  CLI::App* command = app.add_subcommand(
      "retrieval", "Image-text retrieval evaluation: ITC top-k, ITM re-ranking, the official recall metrics");
  command->add_option("--config", options->config_path, "Retrieval config (configs/Retrieval_coco.yaml)")->required();
  command->add_option("--checkpoint", options->checkpoint, "Pretrained or fine-tuned checkpoint")->required();
  command->add_option("--output_dir,--output-dir", options->output_dir, "Where log.txt and the score matrices go");
  command->add_flag("--evaluate", *evaluate, "Evaluate the checkpoint on val_file and test_file")->required();
  compute->add_to(*command);
  command->callback([options, compute] {
    compute->apply_to(*options);
    run_retrieval_evaluation(*options);
  });
}

}  // namespace albef::cli
