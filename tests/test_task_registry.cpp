// The task registry: every task is one unit the binary lists and runs, with
// the training flags every task command shares.

#include "tasks/registry.h"

#include "test_util.h"

#include <set>
#include <string>

namespace {

TEST(TaskRegistry, ListsEveryTaskOnce) {
  std::vector<std::string> names;
  for (const albef::tasks::Task& task : albef::tasks::registry()) {
    names.push_back(task.name);
    EXPECT_FALSE(task.summary.empty()) << task.name;
    EXPECT_TRUE(task.add_command) << task.name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"pretrain", "retrieval", "vqa", "pretrain_nlvr", "nlvr", "ve", "grounding", "classify"}));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size());
  ASSERT_NE(albef::tasks::find_task("retrieval"), nullptr);
  EXPECT_EQ(albef::tasks::find_task("retrieval")->name, "retrieval");
  EXPECT_EQ(albef::tasks::find_task("tokenize"), nullptr);
}

TEST(TaskRegistry, EveryDataParallelTaskTakesTheTrainingFlags) {
  for (const albef::tasks::Task& task : albef::tasks::registry()) {
    if (!task.data_parallel) continue;
    CLI::App app;
    CLI::App* command = app.add_subcommand(task.name, task.summary);
    const std::function<void()> run = task.add_command(*command);
    EXPECT_TRUE(run) << task.name;
    for (const char* flag : {"--config", "--output_dir", "--checkpoint", "--resume", "--seed", "--threads",
                             "--precision", "--device", "--save_every_steps", "--epochs"})
      EXPECT_NE(command->get_option_no_throw(flag), nullptr) << task.name << " has no " << flag;
  }
}

TEST(TaskRegistry, TheBinaryOffersEveryTask) {
  std::string help;
  ASSERT_EQ(albef::testing::run_command(std::string(ALBEF_CLI) + " --help", &help), 0) << help;
  for (const albef::tasks::Task& task : albef::tasks::registry())
    EXPECT_NE(help.find(task.name), std::string::npos) << task.name << " missing from --help:\n" << help;
}

TEST(TaskRegistry, LaunchRunsOnlyTasks) {
  std::string output;
  EXPECT_NE(albef::testing::run_command(std::string(ALBEF_CLI) + " launch --nproc 2 -- tokenize hello", &output), 0);
  EXPECT_NE(output.find("'tokenize' is not a task"), std::string::npos) << output;
  EXPECT_NE(output.find("pretrain, retrieval, vqa, pretrain_nlvr, nlvr, ve, grounding"), std::string::npos) << output;
  // classify is a task of one process.
  EXPECT_NE(albef::testing::run_command(std::string(ALBEF_CLI) + " launch --nproc 2 -- classify --labels a", &output), 0);
  EXPECT_NE(output.find("'classify' is not a data-parallel task"), std::string::npos) << output;
}

}  // namespace
