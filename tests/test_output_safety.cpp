// A second run never destroys the first, and outputs are checked before the
// work: every training command refuses a fresh run in an output_dir that
// holds an earlier run (--resume continues it, --overwrite moves it aside),
// and every command that writes files fails at once, naming the flag and the
// path, when it cannot write them.

#include "test_util.h"

#include <filesystem>
#include <fstream>
#include <sstream>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;

namespace fs = std::filesystem;

namespace {

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Runs from the source tree, where the demo configs' data/ paths resolve.
std::string in_source_tree(const std::string& args) {
  return "cd " + source_path("") + " && " + std::string(ALBEF_CLI) + " " + args + " --threads 1";
}

struct TrainingCommand {
  std::string name;    // the subcommand
  std::string config;  // its bundled demo config
};

class EarlierRun : public ::testing::TestWithParam<TrainingCommand> {};

// A folder holding a regular file where a parent folder should be: nothing
// can be created below it, whoever runs the test (root included).
std::string unwritable_below(const std::string& dir) {
  std::ofstream(dir + "/a_file") << "not a folder";
  return dir + "/a_file/sub";
}

}  // namespace

TEST_P(EarlierRun, AFreshRunIsRefusedAndTheEarlierFilesAreKept) {
  const TrainingCommand& command = GetParam();
  const std::string out = make_temp_dir("earlier_run_" + command.name) + "/out";
  fs::create_directories(out);
  std::ofstream(out + "/log.txt") << "{\"epoch\": 0}\n";
  std::ofstream(out + "/checkpoint_00.pth") << "three days of training";
  std::string output;
  EXPECT_NE(run_command(in_source_tree(command.name + " --config " + command.config + " --output_dir " + out), &output), 0)
      << output;
  EXPECT_TRUE(contains(output, out + " already holds a run (checkpoint_00.pth, log.txt)")) << output;
  EXPECT_TRUE(contains(output, "--resume continues it")) << output;
  EXPECT_TRUE(contains(output, "--overwrite moves its files to " + out + "/previous_run_N/")) << output;
  EXPECT_EQ(contents(out + "/checkpoint_00.pth"), "three days of training");
  EXPECT_EQ(contents(out + "/log.txt"), "{\"epoch\": 0}\n");
  EXPECT_FALSE(fs::exists(out + "/previous_run_1"));
}

INSTANTIATE_TEST_SUITE_P(EveryTrainingCommand, EarlierRun,
                         ::testing::Values(TrainingCommand{"pretrain", "configs/demo.yaml"},
                                           TrainingCommand{"retrieval", "configs/demo_retrieval.yaml"},
                                           TrainingCommand{"vqa", "configs/demo_vqa.yaml"},
                                           TrainingCommand{"pretrain_nlvr", "configs/demo_nlvr_pretrain.yaml"},
                                           TrainingCommand{"nlvr", "configs/demo_nlvr.yaml"},
                                           TrainingCommand{"ve", "configs/demo_ve.yaml"}),
                         [](const auto& info) { return info.param.name; });

TEST(EarlierRunOverwrite, MovesTheEarlierRunAsideAndStartsOver) {
  const std::string dir = make_temp_dir("earlier_run_overwrite");
  const std::string config = albef::testing::write_tiny_pretrain_config(dir, source_path("data/coco-by/captions.json"));
  const std::string out = dir + "/out";
  const std::string pretrain = std::string(ALBEF_CLI) + " pretrain --config " + config + " --output_dir " + out +
                               " --threads 1 --workers 1 --epochs 1";
  std::string output;
  ASSERT_EQ(run_command(pretrain, &output), 0) << output;
  const std::string first_checkpoint = contents(out + "/checkpoint_00.pth");
  const std::string first_log = contents(out + "/log.txt");
  ASSERT_FALSE(first_checkpoint.empty());

  ASSERT_NE(run_command(pretrain, &output), 0) << output;
  EXPECT_EQ(contents(out + "/checkpoint_00.pth"), first_checkpoint);

  ASSERT_EQ(run_command(pretrain + " --overwrite --seed 3", &output), 0) << output;
  EXPECT_TRUE(contains(output, "--overwrite: moved the earlier run's files to " + out + "/previous_run_1")) << output;
  for (const char* name : {"checkpoint_00.pth", "log.txt", "train_steps.jsonl", "config.yaml", "loss_curve.png"})
    EXPECT_TRUE(fs::exists(out + "/previous_run_1/" + name)) << name;
  EXPECT_EQ(contents(out + "/previous_run_1/checkpoint_00.pth"), first_checkpoint);
  EXPECT_EQ(contents(out + "/previous_run_1/log.txt"), first_log);
  EXPECT_TRUE(fs::exists(out + "/checkpoint_00.pth"));
  EXPECT_NE(contents(out + "/checkpoint_00.pth"), first_checkpoint);  // another seed: the new run's own weights

  // A further --overwrite keeps both earlier runs.
  ASSERT_EQ(run_command(pretrain + " --overwrite", &output), 0) << output;
  EXPECT_TRUE(fs::exists(out + "/previous_run_2/checkpoint_00.pth"));
  EXPECT_EQ(contents(out + "/previous_run_1/checkpoint_00.pth"), first_checkpoint);
}

TEST(OutputPaths, TrainingFailsBeforeTheWorkWhenOutputDirCannotBeCreated) {
  const std::string blocked = unwritable_below(make_temp_dir("output_paths_train"));
  std::string output;
  EXPECT_NE(run_command(in_source_tree("ve --config configs/demo_ve.yaml --output_dir " + blocked), &output), 0);
  EXPECT_TRUE(contains(output, "--output_dir " + blocked + ": cannot create the folder")) << output;
  EXPECT_FALSE(contains(output, "epoch")) << output;
}

TEST(OutputPaths, IndexCreatesMissingFoldersAndNamesAnUnwritablePathBeforeIndexing) {
  const std::string dir = make_temp_dir("output_paths_index");
  std::ofstream(dir + "/images.txt") << source_path("data/coco-by/images/000000000790.jpg") << "\n";
  const std::string index = std::string(ALBEF_CLI) + " index --config " + data_path("tiny/Pretrain.yaml") +
                            " --checkpoint " + data_path("tiny/albef_pretrain_tiny.pth") + " --threads 1 --images " +
                            dir + "/images.txt --out ";
  std::string output;
  ASSERT_EQ(run_command(index + dir + "/new/folders/gallery", &output), 0) << output;
  EXPECT_TRUE(fs::exists(dir + "/new/folders/gallery.paths"));

  const std::string blocked = unwritable_below(dir);
  EXPECT_NE(run_command(index + blocked + "/gallery", &output), 0);
  EXPECT_TRUE(contains(output, "--out " + blocked + ": cannot create the folder")) << output;
  EXPECT_FALSE(contains(output, "indexed")) << output;
  EXPECT_FALSE(contains(output, "faiss")) << output;
}

TEST(OutputPaths, EmbedSearchBenchAndEvaluateNameAnUnwritablePathAtOnce) {
  const std::string dir = make_temp_dir("output_paths_commands");
  const std::string blocked = unwritable_below(dir);
  const std::string model = " --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " +
                            data_path("tiny/albef_pretrain_tiny.pth") + " --threads 1";
  std::string output;
  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " embed" + model + " --text 'a dog' --out " + blocked, &output), 0);
  EXPECT_TRUE(contains(output, "--out " + blocked + ": cannot create the folder")) << output;

  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " search" + model + " --index " + dir + "/none.index --html " + blocked +
                            "/page.html 'a dog'",
                        &output),
            0);
  EXPECT_TRUE(contains(output, "--html " + blocked + ": cannot create the folder")) << output;

  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " bench --no-pytorch --workload image_b1 --json " + blocked + "/r.json",
                        &output),
            0);
  EXPECT_TRUE(contains(output, "--json " + blocked + ": cannot create the folder")) << output;
  EXPECT_FALSE(contains(output, "measuring")) << output;

  EXPECT_NE(run_command(in_source_tree("vqa --evaluate --config configs/demo_vqa.yaml --checkpoint " + dir +
                                       "/none.pth --output_dir " + blocked),
                        &output),
            0);
  EXPECT_TRUE(contains(output, "--output_dir " + blocked + ": cannot create the folder")) << output;
}
