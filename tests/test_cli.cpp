// The real albef binary on the tiny fixture model: its outputs equal the
// official ones, and bad input gives one clear error line, a non-zero exit
// and no output files.

#include "albef/io/npy.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;

namespace {

const char* kImages[] = {"000000000790.jpg", "000000078499.jpg", "000000084284.jpg", "000000107438.jpg"};

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

nlohmann::json fixture_inputs() {
  std::ifstream in(data_path("tiny/inputs.json"));
  return nlohmann::json::parse(in);
}

std::string model_flags() {
  return " --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " + data_path("tiny/albef_pretrain_tiny.pth") +
         " --threads 1";
}

std::string image_path(int i) { return source_path(std::string("data/coco-by/images/") + kImages[i]); }

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("tiny/npy/" + name + ".npy")); }

// Runs albef, expecting failure with a single error line that names `needle`.
void expect_one_line_error(const std::string& args, const std::string& needle) {
  std::string output;
  const int code = run_command(std::string(ALBEF_CLI) + " " + args, &output);
  EXPECT_NE(code, 0) << output;
  EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), 1) << output;
  EXPECT_EQ(output.rfind("albef: error: ", 0), 0u) << output;
  EXPECT_NE(output.find(needle), std::string::npos) << output;
}

}  // namespace

TEST(Cli, TokenizeGivesOfficialIds) {
  const nlohmann::json inputs = fixture_inputs();
  std::string command = std::string(ALBEF_CLI) + " tokenize --config " + data_path("tiny/Pretrain.yaml") + " --max_length 25";
  for (const auto& raw : inputs["raw_captions"]) command += " " + quote(raw.get<std::string>());
  std::string output;
  ASSERT_EQ(run_command(command, &output), 0) << output;
  std::istringstream lines(output);
  std::string line;
  for (size_t i = 0; i < inputs["raw_captions"].size(); ++i) {
    ASSERT_TRUE(std::getline(lines, line));
    const nlohmann::json record = nlohmann::json::parse(line);
    EXPECT_EQ(record["caption"], inputs["captions"][i]);
    std::vector<int64_t> expected = {101};
    for (const auto& id : inputs["wordpiece_ids_npm"][i]) expected.push_back(id.get<int64_t>());
    EXPECT_EQ(record["input_ids"].get<std::vector<int64_t>>(), expected);
    EXPECT_EQ(record["attention_mask"].get<std::vector<int64_t>>(), std::vector<int64_t>(expected.size(), 1));
  }
}

TEST(Cli, EmbedWritesOfficialFeatures) {
  const nlohmann::json inputs = fixture_inputs();
  const std::string out = make_temp_dir("cli_embed") + "/feats";
  std::string command = std::string(ALBEF_CLI) + " embed" + model_flags() + " --out " + out;
  for (int i = 0; i < 4; ++i) command += " --image " + image_path(i);
  for (const auto& raw : inputs["raw_captions"]) command += " --text " + quote(raw.get<std::string>());
  std::string output;
  ASSERT_EQ(run_command(command, &output), 0) << output;
  EXPECT_TENSOR_NEAR(albef::io::read_npy(out + "/image_feat.npy"), fixture("eval__comp__image_feat"), 1e-5);
  EXPECT_TENSOR_NEAR(albef::io::read_npy(out + "/text_feat.npy"), fixture("eval__comp__text_feat"), 1e-5);
  std::ifstream in(out + "/index.json");
  const nlohmann::json index = nlohmann::json::parse(in);
  EXPECT_EQ(index["images"].size(), 4u);
  EXPECT_EQ(index["texts"][1], inputs["raw_captions"][1]);
}

TEST(Cli, ScoreGivesOfficialItcAndItm) {
  const nlohmann::json inputs = fixture_inputs();
  std::string command = std::string(ALBEF_CLI) + " score --json" + model_flags();
  for (int i = 0; i < 4; ++i)
    command += " --image " + image_path(i) + " --text " + quote(inputs["raw_captions"][i].get<std::string>());
  std::string output;
  ASSERT_EQ(run_command(command, &output), 0) << output;
  const nlohmann::json scores = nlohmann::json::parse(output);
  ASSERT_EQ(scores.size(), 4u);
  const at::Tensor itc = (fixture("eval__comp__image_feat") * fixture("eval__comp__text_feat")).sum(-1);
  const at::Tensor itm = at::softmax(fixture("eval__comp__itm_logits_pos"), -1).select(1, 1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(scores[i]["itc"].get<double>(), itc[i].item<double>(), 1e-5);
    EXPECT_NEAR(scores[i]["itm"].get<double>(), itm[i].item<double>(), 1e-5);
  }
}

TEST(Cli, ScoreEncodesARepeatedImageOnceWithThePerPairScores) {
  // Pairs that share an image (and one --image for several captions) must
  // score exactly as each pair scored on its own.
  const nlohmann::json inputs = fixture_inputs();
  auto caption = [&](int i) { return quote(inputs["raw_captions"][i].get<std::string>()); };
  auto score = [&](const std::string& pairs) {
    std::string output;
    EXPECT_EQ(run_command(std::string(ALBEF_CLI) + " score --json" + model_flags() + pairs, &output), 0) << output;
    return nlohmann::json::parse(output);
  };
  const nlohmann::json shared = score(" --image " + image_path(0) + " --text " + caption(0) + " --image " +
                                      image_path(1) + " --text " + caption(1) + " --image " + image_path(0) +
                                      " --text " + caption(2));
  const nlohmann::json one_image =
      score(" --image " + image_path(0) + " --text " + caption(0) + " --text " + caption(2));
  ASSERT_EQ(shared.size(), 3u);
  ASSERT_EQ(one_image.size(), 2u);
  const int pair_image[] = {0, 1, 0};
  for (int i = 0; i < 3; ++i) {
    const nlohmann::json alone = score(" --image " + image_path(pair_image[i]) + " --text " + caption(i));
    for (const char* key : {"itc", "itm"}) {
      EXPECT_NEAR(shared[i][key].get<double>(), alone[0][key].get<double>(), 1e-6) << key << " pair " << i;
      if (pair_image[i] == 0)
        EXPECT_NEAR(one_image[i / 2][key].get<double>(), alone[0][key].get<double>(), 1e-6) << key << " pair " << i;
    }
  }
  EXPECT_EQ(one_image[1]["image"], image_path(0));
}

TEST(Cli, CorruptJpegIsOneErrorLineAndWritesNothing) {
  const std::string dir = make_temp_dir("cli_corrupt");
  const std::string bad = dir + "/broken.jpg";
  {
    std::ifstream in(image_path(0), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(bad, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  expect_one_line_error("embed" + model_flags() + " --image " + image_path(1) + " --image " + bad + " --out " + dir + "/out",
                        "broken.jpg");
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
  expect_one_line_error("score" + model_flags() + " --image " + bad + " --text hello", "broken.jpg");
}

TEST(Cli, TruncatedCheckpointIsOneErrorLine) {
  const std::string dir = make_temp_dir("cli_truncated");
  const std::string bad = dir + "/half.pth";
  {
    std::ifstream in(data_path("tiny/albef_pretrain_tiny.pth"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(bad, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  expect_one_line_error("embed --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " + bad + " --text hi --out " +
                            dir + "/out",
                        "half.pth");
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
}

TEST(Cli, PickleNamingOsSystemIsRefused) {
  const std::string dir = make_temp_dir("cli_evil");
  const std::string marker = dir + "/pwned";
  const std::pair<std::string, std::string> globals[] = {{"os\\nsystem", "os.system"},
                                                         {"builtins\\neval", "builtins.eval"}};
  for (const auto& [pickled, dotted] : globals) {
    const std::string evil = dir + "/evil.pth";
    // A zip checkpoint whose data.pkl calls the global on a shell command.
    const std::string make = std::string(ALBEF_PYTHON3) +
                             " -c \"import zipfile,sys,struct; c=('touch '+sys.argv[2]).encode(); "
                             "z=zipfile.ZipFile(sys.argv[1],'w'); z.writestr('archive/version', '3'); z.writestr('archive/data.pkl', b'\\x80\\x02c" +
                             pickled + "\\nX'+struct.pack('<I',len(c))+c+b'\\x85R.'); z.close()\" " + evil + " " +
                             marker;
    std::string output;
    ASSERT_EQ(run_command(make, &output), 0) << output;
    expect_one_line_error("score --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " + evil +
                              " --image " + image_path(0) + " --text hi",
                          dotted);
    EXPECT_FALSE(std::filesystem::exists(marker));
  }
}

TEST(Cli, MisspeltConfigKeyIsOneErrorLine) {
  const std::string dir = make_temp_dir("cli_typo");
  std::ifstream in(data_path("tiny/Pretrain.yaml"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find("queue_size"), 10, "queue_sise");
  // Keep the relative paths working from the temp folder.
  text.replace(text.find("'tiny/config_bert.json'"), 23, "'" + data_path("tiny/config_bert.json") + "'");
  std::ofstream(dir + "/typo.yaml") << text;
  expect_one_line_error("tokenize --config " + dir + "/typo.yaml hello", "queue_sise");
}

TEST(Cli, VocabWithoutClsIsOneErrorLine) {
  const std::string dir = make_temp_dir("cli_vocab");
  std::ofstream(dir + "/vocab.txt") << "[PAD]\n[UNK]\n[SEP]\n[MASK]\nhello\n";
  std::ofstream(dir + "/cfg.yaml") << "bert_config: '" << data_path("tiny/config_bert.json")
                                   << "'\nvocab: vocab.txt\nimage_res: 32\nvision_width: 64\n"
                                      "vision_config: {embed_dim: 64, depth: 2, num_heads: 2}\n";
  expect_one_line_error("tokenize --config " + dir + "/cfg.yaml hello", "vocab.txt");
}

TEST(Cli, Bf16EmbeddingsAgreeWithFp32) {
  const nlohmann::json inputs = fixture_inputs();
  const std::string out = make_temp_dir("cli_bf16");
  std::string command = std::string(ALBEF_CLI) + " embed --precision bf16" + model_flags() + " --out " + out;
  for (int i = 0; i < 4; ++i) command += " --image " + image_path(i);
  for (const auto& raw : inputs["raw_captions"]) command += " --text " + quote(raw.get<std::string>());
  std::string output;
  ASSERT_EQ(run_command(command, &output), 0) << output;
  // Unit vectors: bf16 matmuls keep them within a few hundredths of fp32.
  EXPECT_TENSOR_NEAR(albef::io::read_npy(out + "/image_feat.npy"), fixture("eval__comp__image_feat"), 0.05);
  EXPECT_TENSOR_NEAR(albef::io::read_npy(out + "/text_feat.npy"), fixture("eval__comp__text_feat"), 0.05);
}
