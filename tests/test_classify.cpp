// `albef classify`: zero-shot probabilities against the formula applied to
// `albef embed`'s features, the ITM re-rank against `albef score`, bad label
// files, unreadable images, --append after an interruption, ground truth.

#include "albef/api/inference.h"
#include "albef/io/npy.h"
#include "albef/tasks/classify.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace {

namespace fs = std::filesystem;
using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;
using nlohmann::json;

std::string image(const std::string& name) { return source_path("data/coco-by/images/" + name + ".jpg"); }

struct Classifier {
  std::string dir, config, checkpoint = data_path("tiny/albef_pretrain_tiny.pth");
  std::string base() const {
    return std::string(ALBEF_CLI) + " classify --config " + config + " --checkpoint " + checkpoint + " --threads 1";
  }
};

Classifier setup(const std::string& name) {
  Classifier s;
  s.dir = make_temp_dir(name);
  s.config = albef::testing::write_tiny_retrieval_config(s.dir);
  return s;
}

json parse_output_json(const std::string& output) {
  const size_t begin = output.find("[\n");
  EXPECT_NE(begin, std::string::npos) << output;
  return json::parse(output.substr(begin, output.rfind(']') - begin + 1));
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A classify CSV (no quoted fields here) as image -> its other fields; every image once.
std::map<std::string, std::vector<std::string>> rows_of(const std::vector<std::string>& lines) {
  std::map<std::string, std::vector<std::string>> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> fields;
    std::stringstream in(lines[i]);
    for (std::string field; std::getline(in, field, ',');) fields.push_back(field);
    const std::string image = fields.front();
    EXPECT_TRUE(rows.emplace(image, std::vector<std::string>(fields.begin() + 1, fields.end())).second)
        << image << " appears twice";
  }
  return rows;
}

// The same images with the same labels, probabilities equal to 1e-5 (another
// batch composition may move the last printed digit).
void expect_same_rows(const std::vector<std::string>& actual, const std::vector<std::string>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  EXPECT_EQ(actual[0], expected[0]);
  const auto a = rows_of(actual), b = rows_of(expected);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [image, fields] : b) {
    ASSERT_TRUE(a.count(image)) << image;
    const std::vector<std::string>& other = a.at(image);
    ASSERT_EQ(other.size(), fields.size());
    for (size_t i = 0; i < fields.size(); i += 2) {
      EXPECT_EQ(other[i], fields[i]) << image;
      EXPECT_NEAR(std::stod(other[i + 1]), std::stod(fields[i + 1]), 1e-5) << image;
    }
  }
}

}  // namespace

TEST(Classify, ProbabilitiesEqualTheFormulaOnEmbedFeatures) {
  const Classifier s = setup("classify_formula");
  std::ofstream(s.dir + "/templates.txt") << "a photo of a {}.\n\nart of the {}!\n";
  const std::vector<std::string> labels = {"birthday cake", "bike", "stop sign"};
  const std::vector<std::string> images = {image("000000000790"), image("000000107438")};
  std::string output;
  ASSERT_EQ(run_command(s.base() + " --labels 'birthday cake, bike,stop sign' --templates " + s.dir +
                            "/templates.txt --image " + images[0] + " --image " + images[1] + " --top 3 --json",
                        &output),
            0)
      << output;
  const json results = parse_output_json(output);
  ASSERT_EQ(results.size(), 2u);

  // The same from albef embed's features: label feature = normalise(mean over templates).
  std::string captions;
  for (const std::string& label : labels) captions += " --text 'a photo of a " + label + ".' --text 'art of the " + label + "!'";
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " embed --config " + s.config + " --checkpoint " + s.checkpoint +
                            " --threads 1 --image " + images[0] + " --image " + images[1] + captions + " --out " +
                            s.dir + "/embed",
                        &output),
            0)
      << output;
  const at::Tensor image_feat = albef::io::read_npy(s.dir + "/embed/image_feat.npy");
  at::Tensor label_feat = albef::io::read_npy(s.dir + "/embed/text_feat.npy").view({3, 2, -1}).mean(1);
  label_feat = label_feat / label_feat.norm(2, 1, true);
  albef::InferenceOptions options;
  options.config_path = s.config;
  options.checkpoint_path = s.checkpoint;
  albef::AlbefInference albef(options);
  const at::Tensor expected = at::softmax(at::matmul(image_feat, label_feat.t()) / albef.model()->temp.item<float>(), 1);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(results[i]["image"], images[i]);
    ASSERT_EQ(results[i]["labels"].size(), 3u);
    double previous = 1.0;
    for (const json& entry : results[i]["labels"]) {
      const auto index = std::find(labels.begin(), labels.end(), entry["label"].get<std::string>()) - labels.begin();
      EXPECT_NEAR(entry["probability"].get<double>(), expected[static_cast<int64_t>(i)][index].item<double>(), 1e-5);
      EXPECT_LE(entry["probability"].get<double>(), previous);  // best first
      previous = entry["probability"].get<double>();
    }
  }
}

TEST(Classify, ItmRerankEqualsScore) {
  const Classifier s = setup("classify_rerank");
  std::string output;
  ASSERT_EQ(run_command(s.base() + " --labels 'cake,bike,sign,dog' --image " + image("000000000790") +
                            " --top 4 --rerank 3 --json",
                        &output),
            0)
      << output;
  const json labels = parse_output_json(output)[0]["labels"];
  ASSERT_EQ(labels.size(), 4u);
  std::string score = std::string(ALBEF_CLI) + " score --config " + s.config + " --checkpoint " + s.checkpoint +
                      " --threads 1 --json --image " + image("000000000790");
  for (size_t i = 0; i < 3; ++i) score += " --text 'a photo of a " + labels[i]["label"].get<std::string>() + ".'";
  ASSERT_EQ(run_command(score, &output), 0) << output;
  const json scored = parse_output_json(output);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(labels[i]["itm_match"].get<double>(), scored[i]["itm"].get<double>(), 1e-5) << i;
    if (i > 0) EXPECT_LE(labels[i]["itm_match"].get<double>(), labels[i - 1]["itm_match"].get<double>());
  }
  EXPECT_FALSE(labels[3].contains("itm_match"));  // past --rerank: ITC only
}

TEST(Classify, BadLabelAndTemplateFilesAreNamed) {
  const Classifier s = setup("classify_bad");
  std::ofstream(s.dir + "/empty.txt") << "\n  \n";
  std::ofstream(s.dir + "/twice.txt") << "cat\ndog\n\ncat\n";
  std::ofstream(s.dir + "/templates.txt") << "a photo of a {}.\na photo.\n";
  const std::string one_image = " --image " + image("000000000790");
  for (const auto& [args, needles] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {" --labels " + s.dir + "/empty.txt", {"empty.txt", "no labels"}},
           {" --labels " + s.dir + "/twice.txt", {"twice.txt", "\"cat\" is given twice (lines 1 and 4)"}},
           {" --labels 'cat, dog,cat'", {"--labels", "\"cat\" is given twice (items 1 and 3)"}},
           {" --labels cat,dog --templates " + s.dir + "/templates.txt", {"templates.txt", "line 2", "no {}"}},
           {" --labels cat,dog --ground_truth " + s.dir + "/missing.json", {"missing.json"}}}) {
    std::string output;
    EXPECT_NE(run_command(s.base() + args + one_image, &output), 0) << args;
    for (const std::string& needle : needles) EXPECT_NE(output.find(needle), std::string::npos) << output;
  }
}

TEST(Classify, FolderWithACorruptImageSkipsAndNamesIt) {
  const Classifier s = setup("classify_corrupt");
  fs::create_directories(s.dir + "/photos");
  fs::copy_file(image("000000000790"), s.dir + "/photos/a.jpg");
  fs::copy_file(image("000000107438"), s.dir + "/photos/c.jpg");
  std::ofstream(s.dir + "/photos/b.jpg") << "not a jpeg at all";
  std::string output;
  ASSERT_EQ(run_command(s.base() + " --labels cake,bike --images " + s.dir + "/photos --json", &output), 0) << output;
  const json results = parse_output_json(output);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0]["image"], s.dir + "/photos/a.jpg");
  EXPECT_EQ(results[1]["image"], s.dir + "/photos/c.jpg");
  EXPECT_NE(output.find("skipped 1 unreadable image(s)"), std::string::npos) << output;
  EXPECT_NE(output.find("photos/b.jpg"), std::string::npos) << output;
}

TEST(Classify, AppendCompletesAnInterruptedCsvWithoutDuplicates) {
  const Classifier s = setup("classify_append");
  fs::create_directories(s.dir + "/photos");
  std::vector<std::string> all;
  for (const auto& entry : fs::directory_iterator(source_path("data/coco-by/images")))
    for (int copy = 0; copy < 2; ++copy) {
      const std::string path = s.dir + "/photos/" + std::to_string(copy) + "_" + entry.path().filename().string();
      fs::copy_file(entry.path(), path);
      all.push_back(path);
    }
  const std::string run = s.base() + " --labels cake,bike,sign,dog,table --images " + s.dir +
                          "/photos --batch-size 4 --top 2 --csv ";
  std::string output;
  ASSERT_EQ(run_command(run + s.dir + "/straight.csv", &output), 0) << output;
  const std::vector<std::string> straight = lines_of(s.dir + "/straight.csv");
  ASSERT_EQ(straight.size(), all.size() + 1);
  EXPECT_EQ(straight[0], "image,label_1,probability_1,label_2,probability_2");

  // A run killed while writing row 10: the file ends in half a line.
  std::string cut;
  for (size_t i = 0; i < 10; ++i) cut += straight[i] + "\n";
  cut += straight[10].substr(0, straight[10].size() / 2);
  std::ofstream(s.dir + "/cut.csv") << cut;
  EXPECT_NE(run_command(run + s.dir + "/cut.csv", &output), 0);  // without --append: refused, file untouched
  EXPECT_NE(output.find("--append"), std::string::npos) << output;
  ASSERT_EQ(run_command(run + s.dir + "/cut.csv --append", &output), 0) << output;
  EXPECT_NE(output.find("9 images already classified"), std::string::npos) << output;
  expect_same_rows(lines_of(s.dir + "/cut.csv"), straight);

  // A real SIGKILL at some point of the run, then --append.
  std::vector<std::string> args = {ALBEF_CLI, "classify", "--config", s.config, "--checkpoint", s.checkpoint,
                                   "--threads", "1", "--labels", "cake,bike,sign,dog,table", "--images",
                                   s.dir + "/photos", "--batch-size", "4", "--top", "2", "--csv", s.dir + "/killed.csv"};
  ASSERT_TRUE(albef::testing::run_until_file_then_kill(args, s.dir + "/killed.csv"));
  ASSERT_EQ(run_command(run + s.dir + "/killed.csv --append", &output), 0) << output;
  expect_same_rows(lines_of(s.dir + "/killed.csv"), straight);
}

TEST(Classify, GroundTruthGivesAccuraciesAndAConfusionMatrix) {
  const Classifier s = setup("classify_truth");
  // By file name, as users label folders.
  std::ofstream(s.dir + "/truth.json") << R"({"000000000790.jpg": "cake", "000000107438.jpg": "bike",
                                              "000000525891.jpg": "sign"})";
  std::string output;
  ASSERT_EQ(run_command(s.base() + " --labels cake,bike,sign,dog,table,car --image " + image("000000000790") +
                            " --image " + image("000000107438") + " --image " + image("000000525891") +
                            " --ground_truth " + s.dir + "/truth.json --confusion " + s.dir + "/confusion.png --json",
                        &output),
            0)
      << output;
  const json results = parse_output_json(output);
  int top1 = 0, top5 = 0;
  const std::vector<std::string> truth = {"cake", "bike", "sign"};
  for (size_t i = 0; i < 3; ++i) {
    const json& labels = results[i]["labels"];
    top1 += labels[0]["label"] == truth[i];
    for (size_t k = 0; k < 5; ++k) top5 += labels[k]["label"] == truth[i];
  }
  char expected[96];
  std::snprintf(expected, sizeof expected, "accuracy on 3 labelled images: top-1 %.2f%%, top-5 %.2f%%", 100.0 * top1 / 3,
                100.0 * top5 / 3);
  EXPECT_NE(output.find(expected), std::string::npos) << output;
  const cv::Mat png = cv::imread(s.dir + "/confusion.png");
  ASSERT_FALSE(png.empty());
  EXPECT_GT(png.cols, 6 * 12);

  std::ofstream(s.dir + "/wrong.json") << R"({"000000000790.jpg": "zebra"})";
  EXPECT_NE(run_command(s.base() + " --labels cake,bike --image " + image("000000000790") + " --ground_truth " + s.dir +
                            "/wrong.json",
                        &output),
            0);
  EXPECT_NE(output.find("\"zebra\", which is not one of the --labels"), std::string::npos) << output;
}
