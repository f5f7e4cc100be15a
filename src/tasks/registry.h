#pragma once
// The task registry: pretraining and each downstream task as one unit that
// the binary lists, whose command it adds, and that `albef launch` checks
// names against. A task's folder (src/tasks/<name>/) holds its heads, data,
// forward, evaluation and command; registry.cpp holds one line per task.

#include "albef/config/config.h"
#include "albef/model/albef.h"

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace albef::tasks {

/// A task as the binary knows it.
struct Task {
  std::string name;     ///< its command: `albef <name>`
  std::string summary;  ///< the command's help line
  /// Declares the command's flags on `command` and returns what runs the
  /// task once they are parsed.
  std::function<std::function<void()>(CLI::App& command)> add_command;
  /// Further commands of the unit that serve its model rather than train it
  /// (VQA's `ask`); `albef launch` does not run them. Optional.
  std::function<void(CLI::App& app)> add_tools;
  /// Trains or evaluates across processes, with the training flags: what
  /// `albef launch` runs. False for a unit that runs in one process (classify).
  bool data_parallel = true;
  /// The official script the task reproduces ("Retrieval.py"): its command
  /// also answers to that name, so an official command line runs with
  /// `albef` in its launcher's place. Empty for albef's own tasks.
  std::string official_script = {};
  /// The model its checkpoints hold (momentum encoders included), for a
  /// config: what `albef info` compares a checkpoint's entries with. Unset
  /// for a task that writes no checkpoints (classify).
  std::function<ModelOptions(const Config& config)> checkpoint_model = nullptr;
};

/// Every task, in the order `albef --help` lists them.
const std::vector<Task>& registry();

/// The task called `name` (or whose official_script is `name`), or null.
const Task* find_task(const std::string& name);

}  // namespace albef::tasks
