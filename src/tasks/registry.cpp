#include "tasks/registry.h"

namespace albef::tasks {

// One line per task: X(name) stands for the `Task name_task()` its folder
// defines (src/tasks/<folder>/<folder>.cpp; NLVR2's folder holds both of its
// scripts). Adding a task adds its folder and a line.
#define ALBEF_TASKS(X) \
  X(pretrain)          \
  X(retrieval)         \
  X(vqa)               \
  X(pretrain_nlvr)     \
  X(nlvr)              \
  X(ve)                \
  X(grounding)         \
  X(classify)

#define ALBEF_DECLARE_TASK(name) Task name##_task();
ALBEF_TASKS(ALBEF_DECLARE_TASK)
#undef ALBEF_DECLARE_TASK

const std::vector<Task>& registry() {
#define ALBEF_LIST_TASK(name) name##_task(),
  static const std::vector<Task> tasks = {ALBEF_TASKS(ALBEF_LIST_TASK)};
#undef ALBEF_LIST_TASK
  return tasks;
}

const Task* find_task(const std::string& name) {
  for (const Task& task : registry())
    if (task.name == name || (!task.official_script.empty() && task.official_script == name)) return &task;
  return nullptr;
}

}  // namespace albef::tasks
