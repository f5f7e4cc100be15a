#pragma once
// The task registry: pretraining and each downstream task as one unit that
// the binary lists, whose command it adds, and that `albef launch` checks
// names against. A task's folder (src/tasks/<name>/) holds its heads, data,
// forward, evaluation and command; registry.cpp holds one line per task.

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
};

/// Every task, in the order `albef --help` lists them.
const std::vector<Task>& registry();

/// The task called `name`, or null.
const Task* find_task(const std::string& name);

}  // namespace albef::tasks
