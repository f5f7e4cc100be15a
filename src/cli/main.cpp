// albef: one binary, one subcommand per job.

#include "cli/common.h"

#include "albef/core/error.h"
#include "tasks/registry.h"

#include <c10/util/Exception.h>

#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"albef: ALBEF (Align before Fuse) vision-language model on LibTorch"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "albef-cpp 0.1.0");
  albef::cli::add_embed_command(app);
  albef::cli::add_tokenize_command(app);
  albef::cli::add_tokenize_image_command(app);
  albef::cli::add_score_command(app);
  // Pretraining and the downstream tasks, each a unit in src/tasks/<name>/.
  for (const albef::tasks::Task& task : albef::tasks::registry()) {
    CLI::App* command = app.add_subcommand(task.name, task.summary);
    if (!task.official_script.empty()) command->alias(task.official_script);
    command->callback(task.add_command(*command));
    if (task.add_tools) task.add_tools(app);
  }
  albef::cli::add_index_command(app);
  albef::cli::add_search_command(app);
  albef::cli::add_serve_command(app);
  albef::cli::add_bench_command(app);
  albef::cli::add_launch_command(app);
  albef::cli::add_info_command(app);
  albef::cli::add_convert_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const albef::Error& e) {
    std::cerr << "albef: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "albef: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "albef: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
