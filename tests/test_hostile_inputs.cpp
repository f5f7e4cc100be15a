// Inputs the fuzzers (fuzz/, scripts/fuzz.sh) found or that a hostile file
// would carry, kept in tests/data/fuzz/<reader>/: each is refused with
// albef::Error naming the file, by the library and by the command line.
#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/vision/image.h"
#include "test_util.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using namespace albef::testing;

std::vector<std::string> inputs_of(const std::string& reader) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(data_path("fuzz/" + reader))) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// The message albef::Error carries, or a failure naming what else escaped.
std::string refusal(const std::function<void()>& read) {
  try {
    read();
  } catch (const albef::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an albef::Error: " << e.what();
    return {};
  }
  ADD_FAILURE() << "accepted";
  return {};
}

const std::map<std::string, std::function<void(const std::string&)>>& readers() {
  static const std::map<std::string, std::function<void(const std::string&)>> all = {
      {"bert_config", [](const std::string& path) { albef::BertConfig::from_json_file(path); }},
      {"checkpoint", [](const std::string& path) { albef::io::read_torch_file(path); }},
      {"config", [](const std::string& path) { albef::load_config(path); }},
      {"image", [](const std::string& path) { albef::vision::read_rgb(path); }},
      {"npy", [](const std::string& path) { albef::io::read_npy(path); }},
  };
  return all;
}

TEST(HostileInputs, EveryReaderRefusesItsInputsNamingTheFile) {
  for (const auto& [reader, read] : readers()) {
    for (const std::string& path : inputs_of(reader)) {
      SCOPED_TRACE(path);
      const std::string message = refusal([&] { read(path); });
      // A config refused for a file it names (config_bert.json, the vocabulary) names that one.
      const bool names_a_file = message.find(path) != std::string::npos ||
                                (reader == "config" && message.find(".json") != std::string::npos);
      EXPECT_TRUE(names_a_file) << message;
    }
  }
}

TEST(HostileInputs, TheCommandLineExitsNonZeroWithOneLineNamingTheFile) {
  const std::string dir = make_temp_dir("hostile_cli");
  struct Case {
    std::string args, file;
  };
  const std::vector<Case> cases = {
      {"embed --config " + data_path("fuzz/config/vocab_name_too_long.yaml") + " --checkpoint x.pth --text a --out " + dir,
       data_path("fuzz/config/vocab_name_too_long.yaml")},
      {"embed --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " +
           data_path("fuzz/checkpoint/entry_offset_past_end.pth") + " --text a --out " + dir,
       data_path("fuzz/checkpoint/entry_offset_past_end.pth")},
      {"score --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " + data_path("tiny/albef_pretrain_tiny.pth") +
           " --image " + data_path("fuzz/image/truncated.jpg") + " --text a",
       data_path("fuzz/image/truncated.jpg")},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    std::string output;
    const int code = run_command("{ " + std::string(ALBEF_CLI) + " " + c.args + " 2>&1 >/dev/null; }", &output);
    EXPECT_NE(code, 0);
    EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), 1) << output;
    EXPECT_NE(output.find(c.file), std::string::npos) << output;
  }
}

}  // namespace
