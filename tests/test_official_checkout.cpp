// albef run from a checkout of the official repository, as a user coming
// from it would: its configs/ unchanged, no vocabulary file anywhere, and
// the official scripts' command lines with `albef` in the launcher's place.

#include "albef/io/npy.h"
#include "albef/text/tokenizer.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::read_json_lines;
using albef::testing::run_command;
using albef::testing::source_path;
namespace fs = std::filesystem;

namespace {

const char* kOfficialConfigs[] = {"Grounding",        "NLVR", "NLVR_pretrain", "Pretrain", "Retrieval_coco",
                                  "Retrieval_flickr", "VE",   "VQA"};
const char* kImages[] = {"000000000790.jpg", "000000078499.jpg", "000000084284.jpg", "000000107438.jpg"};

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A copy of the official repository's configs/ (and nothing else) in a fresh
// folder, plus `configs/Retrieval_tiny.yaml`: Retrieval_coco.yaml's keys for
// the tiny fixture model, its paths written as the official configs write
// theirs (relative to the checkout), its BERT config beside config_bert.json.
std::string make_checkout(const std::string& name) {
  const std::string root = make_temp_dir(name);
  fs::copy(data_path("official_checkout/configs"), root + "/configs", fs::copy_options::recursive);
  fs::copy_file(data_path("tiny/config_bert.json"), root + "/configs/config_bert_tiny.json");
  fs::create_directories(root + "/data");
  fs::copy_file(source_path("data/coco-by/captions.json"), root + "/data/coco_tiny.json");
  std::ofstream(root + "/configs/Retrieval_tiny.yaml")
      << "train_file: ['data/coco_tiny.json']\nval_file: 'data/coco_tiny.json'\ntest_file: 'data/coco_tiny.json'\n"
      << "image_root: '" << source_path("data/coco-by") << "'\n"
      << "bert_config: 'configs/config_bert_tiny.json'\n"
      << "image_res: 32\nbatch_size_train: 16\nbatch_size_test: 16\nqueue_size: 16\nalpha: 0.4\nk_test: 4\n"
      << "vision_width: 64\nembed_dim: 32\ntemp: 0.07\ndistill: True\nwarm_up: True\n"
      << "optimizer: {opt: adamW, lr: 1e-4, weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: 1e-4, epochs: 1, min_lr: 1e-6, decay_rate: 1, warmup_lr: 1e-5, "
         "warmup_epochs: 1, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  return root;
}

bool has_vocabulary_file(const std::string& root) {
  for (const auto& entry : fs::recursive_directory_iterator(root))
    if (entry.path().filename().string().find("vocab") != std::string::npos) return true;
  return false;
}

// `albef ARGS` run in `dir`; its exit code, output in `output`.
int albef_in(const std::string& dir, const std::string& args, std::string* output) {
  return run_command("cd " + quote(dir) + " && " + ALBEF_CLI + " " + args, output);
}

}  // namespace

TEST(OfficialCheckout, EveryOfficialConfigTokenizesWithTheBundledVocabulary) {
  const std::string checkout = make_checkout("official_tokenize");
  ASSERT_FALSE(has_vocabulary_file(checkout));
  const std::vector<std::string> captions = {"A man riding a wave on top of a surfboard.", "Zürich's café, 1998!"};
  const albef::text::BertTokenizer bundled(albef::text::kBundledVocabulary);
  for (const char* name : kOfficialConfigs) {
    for (const std::string flag : {"", " --text_encoder bert-base-uncased"}) {
      std::string command = std::string("tokenize --config ./configs/") + name + ".yaml" + flag;
      for (const std::string& caption : captions) command += " " + quote(caption);
      std::string output;
      ASSERT_EQ(albef_in(checkout, command, &output), 0) << name << ": " << output;
      std::istringstream lines(output);
      for (const std::string& caption : captions) {
        std::string line;
        ASSERT_TRUE(std::getline(lines, line)) << output;
        const nlohmann::json record = nlohmann::json::parse(line);
        EXPECT_EQ(record["input_ids"].get<std::vector<int64_t>>(),
                  bundled.encode(albef::text::pre_caption(caption, 30), 30))
            << name << flag;
      }
    }
  }
}

TEST(OfficialCheckout, ScoreWithTheTinyCheckpointNeedsNoVocabularyFile) {
  const std::string checkout = make_checkout("official_score");
  ASSERT_FALSE(has_vocabulary_file(checkout));
  std::ifstream in(data_path("tiny/inputs.json"));
  const nlohmann::json inputs = nlohmann::json::parse(in);
  std::string command = "score --json --threads 1 --config ./configs/Retrieval_tiny.yaml --checkpoint " +
                        data_path("tiny/albef_pretrain_tiny.pth");
  for (int i = 0; i < 4; ++i)
    command += " --image " + source_path(std::string("data/coco-by/images/") + kImages[i]) + " --text " +
               quote(inputs["raw_captions"][i].get<std::string>());
  std::string output;
  ASSERT_EQ(albef_in(checkout, command, &output), 0) << output;
  const nlohmann::json scores = nlohmann::json::parse(output);
  const auto fixture = [](const std::string& name) { return albef::io::read_npy(data_path("tiny/npy/" + name + ".npy")); };
  const at::Tensor itc = (fixture("eval__comp__image_feat") * fixture("eval__comp__text_feat")).sum(-1);
  const at::Tensor itm = at::softmax(fixture("eval__comp__itm_logits_pos"), -1).select(1, 1);
  ASSERT_EQ(scores.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(scores[i]["itc"].get<double>(), itc[i].item<double>(), 1e-5);
    EXPECT_NEAR(scores[i]["itm"].get<double>(), itm[i].item<double>(), 1e-5);
  }
}

TEST(OfficialCheckout, RetrievalPyCommandLineRunsAsWritten) {
  // Retrieval.py's flags, every one of them, after the script's name.
  const std::string checkout = make_checkout("official_retrieval");
  std::string output;
  ASSERT_EQ(albef_in(checkout,
                     "Retrieval.py --config ./configs/Retrieval_tiny.yaml --output_dir output/Retrieval_tiny "
                     "--checkpoint " + data_path("tiny/albef_pretrain_tiny.pth") +
                         " --evaluate --text_encoder bert-base-uncased --device cpu --seed 42 --world_size 1 "
                         "--dist_url env:// --distributed True --threads 1 2>&1",
                     &output),
            0)
      << output;
  EXPECT_NE(output.find("note: --world_size is ignored"), std::string::npos) << output;
  EXPECT_NE(output.find("note: --distributed is ignored"), std::string::npos) << output;
  const std::vector<nlohmann::json> log = read_json_lines(checkout + "/output/Retrieval_tiny/log.txt");
  ASSERT_FALSE(log.empty());
  EXPECT_TRUE(log.back().contains("test_r_mean")) << log.back().dump();
}

TEST(OfficialCheckout, TorchDistributedLaunchWordsStartTheProcesses) {
  // python -m torch.distributed.launch --nproc_per_node=2 --use_env Retrieval.py ...
  const std::string checkout = make_checkout("official_launch");
  std::string output;
  ASSERT_EQ(albef_in(checkout,
                     "launch --nproc_per_node=2 --use_env Retrieval.py --config ./configs/Retrieval_tiny.yaml "
                     "--output_dir output/Retrieval_tiny --checkpoint " +
                         data_path("tiny/albef_pretrain_tiny.pth") + " --evaluate 2>&1",
                     &output),
            0)
      << output;
  const std::vector<nlohmann::json> log = read_json_lines(checkout + "/output/Retrieval_tiny/log.txt");
  ASSERT_FALSE(log.empty()) << output;
  EXPECT_TRUE(log.back().contains("test_r_mean")) << log.back().dump();
}

TEST(OfficialCheckout, FlagsWithoutAMeaningHereFailClearly) {
  const std::string checkout = make_checkout("official_bad_flags");
  std::string output;
  // argparse's type=bool reads `--resume False` as True: refused rather than guessed.
  EXPECT_NE(albef_in(checkout, "Pretrain.py --config ./configs/Retrieval_tiny.yaml --resume False 2>&1", &output), 0);
  EXPECT_NE(output.find("--resume False"), std::string::npos) << output;
  EXPECT_NE(albef_in(checkout, "retrieval --config ./configs/Retrieval_tiny.yaml --dist_url file:///tmp/x 2>&1", &output),
            0);
  EXPECT_NE(output.find("tcp://HOST:PORT"), std::string::npos) << output;
  EXPECT_NE(albef_in(checkout, "tokenize --config ./configs/VQA.yaml --text_encoder bert-large-cased hi 2>&1", &output), 0);
  EXPECT_NE(output.find("bundled"), std::string::npos) << output;
}
