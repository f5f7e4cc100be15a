// albef retrieval: the official Retrieval.py, same flags.

#include "cli/common.h"

#include "albef/tasks/retrieval.h"

#include <memory>

namespace albef::cli {

void add_retrieval_command(CLI::App& app) {
  auto options = std::make_shared<RetrievalOptions>();
  options->output_dir = "output/Retrieval";  // Retrieval.py's default
  auto flags = std::make_shared<TrainFlags>();
  CLI::App* command = app.add_subcommand(
      "retrieval",
      "Image-text retrieval: fine-tune a pretrained checkpoint, or --evaluate one (ITC top-k, ITM re-ranking, "
      "the official recall metrics)");
  flags->add_to(*command, *options, "Retrieval config (configs/Retrieval_coco.yaml, Retrieval_flickr.yaml)");
  command->add_flag("--evaluate", options->evaluate, "Only evaluate --checkpoint on val_file and test_file");
  command->callback([options, flags] {
    flags->compute.apply_to(*options);
    run_retrieval(*options);
  });
}

}  // namespace albef::cli
