// Faults that must lose nothing: the disk filling up while a checkpoint is
// written, SIGKILL in the middle of writing one or of `albef index --append`,
// and a corrupt newest checkpoint when a run is resumed.

#include "albef/core/fs.h"
#include "albef/io/checkpoint.h"
#include "albef/serve/image_index.h"
#include "albef/train/checkpointing.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

namespace {

namespace fs = std::filesystem;
using namespace albef::testing;

// 16 captions of 4 images: 4 steps per epoch at the tiny config's batch of 4.
std::string write_small_pretrain_config(const std::string& dir) {
  std::ifstream in(source_path("data/coco-by/captions.json"));
  const nlohmann::json all = nlohmann::json::parse(in);
  nlohmann::json pairs = nlohmann::json::array();
  for (size_t i = 0; i < 4; ++i)
    for (size_t c = 0; c < 4; ++c)
      pairs.push_back({{"image", source_path("data/coco-by/" + all[i]["image"].get<std::string>())},
                       {"caption", all[i]["caption"][c]}});
  std::ofstream(dir + "/pairs.json") << pairs.dump();
  return write_tiny_pretrain_config(dir, dir + "/pairs.json");
}

std::string pretrain(const std::string& config, const std::string& out, const std::string& extra) {
  return std::string(ALBEF_CLI) + " pretrain --config " + config + " --output_dir " + out +
         " --threads 1 --workers 1 --seed 7 --print_freq 1000 " + extra;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Faults, DiskFullWhileWritingACheckpointKeepsThePreviousOneAndSaysSo) {
  const std::string dir = make_temp_dir("faults_disk_full");
  const std::string config = write_small_pretrain_config(dir);
  std::string output;
  ASSERT_EQ(run_command(pretrain(config, dir + "/roomy", "--epochs 1"), &output), 0) << output;
  const std::string first = read_bytes(dir + "/roomy/checkpoint_00.pth");

  // Room for the first checkpoint and half of the second.
  const std::string full = dir + "/full";
  fs::create_directories(full);
  const std::string size = "size=" + std::to_string(first.size() * 3 / 2);
  if (::mount("tmpfs", full.c_str(), "tmpfs", 0, size.c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root, as CI runs): " << std::strerror(errno);
  const int code = run_command(pretrain(config, full, "--epochs 2"), &output);
  const std::string kept = read_bytes(full + "/checkpoint_00.pth");
  const std::vector<std::string> left = files_in(full);
  ::umount(full.c_str());

  EXPECT_NE(code, 0);
  EXPECT_NE(output.find(full + "/checkpoint_01.pth"), std::string::npos) << output;
  EXPECT_NE(output.find("No space left on device"), std::string::npos) << output;
  EXPECT_EQ(kept, first) << "the previous checkpoint changed";
  for (const std::string& name : left) EXPECT_EQ(name.find(".tmp"), std::string::npos) << "left behind: " << name;
  EXPECT_EQ(std::count(left.begin(), left.end(), "checkpoint_01.pth"), 0);
}

TEST(Faults, SigkillWhileWritingACheckpointResumesFromTheLastCompleteOne) {
  const std::string dir = make_temp_dir("faults_kill_in_write");
  const std::string config = write_small_pretrain_config(dir);
  std::string output;
  ASSERT_EQ(run_command(pretrain(config, dir + "/straight", "--epochs 3"), &output), 0) << output;

  // Started directly (not through a shell) so that its pid names its temporary file.
  const std::string out = dir + "/killed";
  const pid_t pid = spawn_quietly({ALBEF_CLI, "pretrain", "--config", config, "--output_dir", out, "--threads", "1",
                                   "--workers", "1", "--seed", "7", "--print_freq", "1000", "--epochs", "3"});
  ASSERT_GT(pid, 0);
  const std::string partial = out + "/checkpoint_01.pth.tmp." + std::to_string(pid);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(partial) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(fs::exists(partial)) << "the run never wrote checkpoint_01.pth";
  if (fs::exists(out + "/checkpoint_01.pth")) GTEST_SKIP() << "the write finished before the kill landed";

  ASSERT_EQ(run_command(pretrain(config, out, "--epochs 3 --resume"), &output), 0) << output;
  EXPECT_NE(output.find("resuming from " + out + "/checkpoint_00.pth"), std::string::npos) << output;
  EXPECT_FALSE(fs::exists(partial)) << "the half-written checkpoint is still there";
  EXPECT_NE(output.find("removed " + partial), std::string::npos) << output;
  const auto straight = read_json_lines(dir + "/straight/train_steps.jsonl");
  const auto resumed = read_json_lines(out + "/train_steps.jsonl");
  ASSERT_EQ(resumed.size(), straight.size()) << "steps lost or repeated";
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_EQ(resumed[i]["step"], straight[i]["step"]);
    EXPECT_NEAR(resumed[i]["loss_ita"].get<double>(), straight[i]["loss_ita"].get<double>(), 1e-6) << "line " << i;
  }
  EXPECT_EQ(read_bytes(out + "/checkpoint_02.pth").size(), read_bytes(dir + "/straight/checkpoint_02.pth").size());
}

// What a killed write_atomically leaves is recognised by its name alone.
TEST(Faults, AtomicWriteTemporariesAreKnownByTheirName) {
  EXPECT_EQ(albef::atomic_temporary_target("checkpoint_01.pth.tmp.123"),
            std::make_optional(std::make_pair(std::string("checkpoint_01.pth"), int64_t{123})));
  EXPECT_EQ(albef::atomic_temporary_target("g.index.commit.tmp.7")->first, "g.index.commit");
  for (const std::string name : {"checkpoint_01.pth", "a.tmp.", "a.tmp.12x", ".tmp.5", "a.tmp.-3", "a.tmp.0"})
    EXPECT_FALSE(albef::atomic_temporary_target(name).has_value()) << name;
}

// Only half-written checkpoints of processes that are gone: a live writer's
// file, complete checkpoints and other files stay.
TEST(Faults, ResumeRemovesOnlyTheCheckpointsOfWritersThatAreGone) {
  const std::string dir = make_temp_dir("faults_partial_checkpoints");
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);  // its pid now names no process
  const std::string gone = std::to_string(child), alive = std::to_string(::getppid());
  const std::vector<std::string> removable = {"checkpoint_01.pth.tmp." + gone, "checkpoint_02_step000100.pth.tmp." + gone,
                                              "checkpoint_best.pth.tmp." + gone};
  const std::vector<std::string> kept = {"checkpoint_01.pth", "checkpoint_03.pth.tmp." + alive, "log.txt.tmp." + gone,
                                         "my_checkpoint_01.pth.tmp." + gone};
  for (const auto& names : {removable, kept})
    for (const std::string& name : names) std::ofstream(dir + "/" + name) << "x";
  std::vector<std::string> removed = albef::remove_partial_checkpoints(dir);
  std::sort(removed.begin(), removed.end());
  std::vector<std::string> expected;
  for (const std::string& name : removable) expected.push_back(dir + "/" + name);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(removed, expected);
  for (const std::string& name : kept) EXPECT_TRUE(fs::exists(dir + "/" + name)) << name;
  EXPECT_TRUE(albef::remove_partial_checkpoints(dir + "/missing").empty());
}

TEST(Faults, ACorruptNewestCheckpointAtResumeIsNamedWithTheWayBack) {
  const std::string dir = make_temp_dir("faults_corrupt_newest");
  const std::string config = write_small_pretrain_config(dir);
  const std::string out = dir + "/run";
  std::string output;
  ASSERT_EQ(run_command(pretrain(config, out, "--epochs 2"), &output), 0) << output;
  const std::string newest = out + "/checkpoint_01.pth", previous = out + "/checkpoint_00.pth";
  fs::resize_file(newest, fs::file_size(newest) / 2);

  EXPECT_NE(run_command("{ " + pretrain(config, out, "--epochs 3 --resume") + " 2>&1 >/dev/null; }", &output), 0);
  EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), 1) << output;
  EXPECT_NE(output.find(newest), std::string::npos) << output;
  EXPECT_NE(output.find(previous), std::string::npos) << "no way back named: " << output;
  EXPECT_EQ(output.find("starting from scratch"), std::string::npos) << output;

  // The way back the message gives works.
  fs::rename(newest, out + "/corrupt_checkpoint_01.pth.bad");
  ASSERT_EQ(run_command(pretrain(config, out, "--epochs 3 --resume"), &output), 0) << output;
  EXPECT_NE(output.find("resuming from " + previous), std::string::npos) << output;
}


// ---- a gallery (`albef index`): three files that must agree ----------------

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool has_save_leftovers(const std::string& dir) {
  for (const std::string& name : files_in(dir))
    if (name.find(".new.") != std::string::npos || name.find(".commit") != std::string::npos) return true;
  return false;
}

TEST(Faults, SigkillWhileAppendingToAGalleryLeavesTheOldOrTheNewOne) {
  const std::string dir = make_temp_dir("faults_index_append");
  std::ofstream(dir + "/first.txt") << source_path("data/coco-by/images/000000000790.jpg") << "\n"
                                    << source_path("data/coco-by/images/000000078499.jpg") << "\n";
  std::ofstream(dir + "/second.txt") << source_path("data/coco-by/images/000000084284.jpg") << "\n"
                                     << source_path("data/coco-by/images/000000525891.jpg") << "\n";
  const std::vector<std::string> model = {"--config", data_path("tiny/Pretrain.yaml"), "--checkpoint",
                                          data_path("tiny/albef_pretrain_tiny.pth"), "--threads", "1"};
  const auto index_command = [&](const std::string& out, const std::string& images, bool append) {
    std::vector<std::string> args = {ALBEF_CLI, "index", "--images", images, "--out", out};
    args.insert(args.end(), model.begin(), model.end());
    if (append) args.push_back("--append");
    return args;
  };
  const auto shell = [](const std::vector<std::string>& args) {
    std::string line;
    for (const std::string& arg : args) line += "'" + arg + "' ";
    return line;
  };
  std::string output;
  const std::string old_dir = dir + "/old";
  fs::create_directories(old_dir);
  ASSERT_EQ(run_command(shell(index_command(old_dir + "/g.index", dir + "/first.txt", false)), &output), 0) << output;

  // The kill has to land inside the save, which takes about a millisecond:
  // try a few times, and check what every attempt leaves.
  int landed_inside = 0;
  for (int attempt = 0; attempt < 8 && landed_inside < 2; ++attempt) {
    const std::string run_dir = dir + "/attempt" + std::to_string(attempt), index = run_dir + "/g.index";
    fs::copy(old_dir, run_dir);
    const pid_t pid = spawn_quietly(index_command(index, dir + "/second.txt", true));
    ASSERT_GT(pid, 0);
    const std::string partial = index + ".new." + std::to_string(pid);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    int status = 0;
    while (!fs::exists(partial) && std::chrono::steady_clock::now() < deadline && ::waitpid(pid, &status, WNOHANG) == 0)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    if (has_save_leftovers(run_dir)) ++landed_inside;

    // Old or new, whole: the three files agree (load checks their counts).
    const albef::serve::ImageIndex gallery = albef::serve::ImageIndex::load(index);
    EXPECT_TRUE(gallery.size() == 2 || gallery.size() == 4) << "attempt " << attempt << ": " << gallery.size();
    EXPECT_FALSE(fs::exists(index + ".commit")) << "load() finishes an interrupted save";
    // Running the command again completes the gallery, each image once.
    ASSERT_EQ(run_command(shell(index_command(index, dir + "/second.txt", true)), &output), 0) << output;
    const std::vector<std::string> paths = lines_of(index + ".paths");
    ASSERT_EQ(paths.size(), 4u) << "attempt " << attempt;
    EXPECT_EQ(std::set<std::string>(paths.begin(), paths.end()).size(), 4u);
    EXPECT_FALSE(has_save_leftovers(run_dir)) << "attempt " << attempt;
  }
  if (landed_inside == 0) GTEST_SKIP() << "no kill landed inside a save in 8 attempts";
}

TEST(Faults, AGallerySaveStoppedAfterItsCommitNoteIsFinishedByTheNextLoad) {
  using albef::serve::ImageIndex;
  const std::string dir = make_temp_dir("faults_index_commit");
  const auto gallery = [](int64_t n) {
    ImageIndex index(4, albef::serve::IndexKind::Flat, n);
    std::vector<std::string> paths;
    for (int64_t i = 0; i < n; ++i) paths.push_back("image" + std::to_string(i) + ".jpg");
    const at::Tensor features = at::randn({n, 4});
    index.add(features / features.norm(2, 1, true), paths);
    return index;
  };
  const std::string path = dir + "/g.index", next = dir + "/next/g.index";
  fs::create_directories(dir + "/next");
  gallery(2).save(path);
  gallery(3).save(next);

  // What a save of the 3-image gallery killed after its first rename leaves.
  fs::copy_file(next, path, fs::copy_options::overwrite_existing);
  fs::copy_file(next + ".paths", path + ".paths.new.77");
  fs::copy_file(next + ".json", path + ".json.new.77");
  std::ofstream(path + ".commit") << ".new.77\n";
  EXPECT_EQ(ImageIndex::load(path).size(), 3);
  EXPECT_FALSE(has_save_leftovers(dir));

  // Killed before its note was in place (its files written, the note's own
  // temporary file half written): the previous gallery stands, and the next
  // save clears what the stopped one wrote.
  fs::copy_file(next, path + ".new.78");
  std::ofstream(path + ".commit.tmp.78") << ".ne";
  EXPECT_EQ(ImageIndex::load(path).size(), 3);
  gallery(5).save(path);
  EXPECT_EQ(ImageIndex::load(path).size(), 5);
  EXPECT_FALSE(has_save_leftovers(dir));
}

}  // namespace
