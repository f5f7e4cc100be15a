// `albef index` and `albef search` end to end on the tiny model and the
// bundled images: unreadable images skipped and counted, appends, ITC
// ranking equal to the features' dot products, ITM re-ranking in the
// official order, JSON and HTML output.

#include "albef/io/npy.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <set>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;

namespace fs = std::filesystem;

namespace {

std::string model_flags() {
  return " --config " + data_path("tiny/Pretrain.yaml") + " --checkpoint " + data_path("tiny/albef_pretrain_tiny.pth") +
         " --threads 1";
}

// The bundled images in a folder, plus a truncated JPEG and a text file named .png.
std::string gallery_with_bad_files(const std::string& dir) {
  const std::string gallery = dir + "/gallery";
  fs::create_directories(gallery);
  for (const auto& entry : fs::directory_iterator(source_path("data/coco-by/images")))
    fs::copy_file(entry.path(), gallery + "/" + entry.path().filename().string());
  std::ifstream jpeg(source_path("data/coco-by/images/000000000790.jpg"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(jpeg)), std::istreambuf_iterator<char>());
  std::ofstream(gallery + "/truncated.jpg", std::ios::binary) << bytes.substr(0, bytes.size() / 4);
  std::ofstream(gallery + "/notes.png") << "not an image";
  return gallery;
}

}  // namespace

TEST(SearchCli, IndexSkipsUnreadableImagesAndSearchRanksByItcThenItm) {
  const std::string dir = make_temp_dir("search_cli");
  const std::string gallery = gallery_with_bad_files(dir);
  const std::string index = dir + "/gallery.index";
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " index" + model_flags() + " --images " + gallery + " --out " + index,
                        &output),
            0)
      << output;
  EXPECT_NE(output.find("indexed 26 images"), std::string::npos) << output;
  EXPECT_NE(output.find("skipped 2 unreadable image(s)"), std::string::npos) << output;
  EXPECT_NE(output.find("truncated.jpg"), std::string::npos) << output;
  EXPECT_NE(output.find("notes.png"), std::string::npos) << output;

  // ITC only: the order and scores of the features' dot products (albef embed).
  const std::string caption = "horses standing and laying down in the grass on a hill above a lake";
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " search" + model_flags() + " --index " + index + " --k 5 --json '" +
                            caption + "'",
                        &output),
            0)
      << output;
  const nlohmann::json itc = nlohmann::json::parse(output);
  ASSERT_EQ(itc.size(), 1u);
  ASSERT_EQ(itc[0]["results"].size(), 5u);
  EXPECT_EQ(itc[0]["ranked_by"], "itc");
  std::string embed_output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " embed" + model_flags() + " --images " + index + ".paths --text '" +
                            caption + "' --out " + dir + "/embed",
                        &embed_output),
            0)
      << embed_output;
  const at::Tensor scores = at::matmul(albef::io::read_npy(dir + "/embed/text_feat.npy"),
                                       albef::io::read_npy(dir + "/embed/image_feat.npy").t())[0];
  const at::Tensor order = std::get<1>(scores.topk(5));
  for (int64_t r = 0; r < 5; ++r) {
    const auto& result = itc[0]["results"][r];
    EXPECT_EQ(result["id"].get<int64_t>(), order[r].item<int64_t>()) << r;
    EXPECT_NEAR(result["itc"].get<double>(), scores[order[r]].item<double>(), 1e-5);
    EXPECT_FALSE(result.contains("itm_logit"));
  }

  // Re-ranking the ITC top 10 by the ITM logit, with an HTML page.
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " search" + model_flags() + " --index " + index +
                            " --k 10 --rerank 10 --json --html " + dir + "/results.html '" + caption + "' 'a desk'",
                        &output),
            0)
      << output;
  const nlohmann::json reranked = nlohmann::json::parse(output);
  ASSERT_EQ(reranked.size(), 2u);
  std::set<int64_t> itc_top10;
  for (int64_t r = 0; r < 10; ++r) itc_top10.insert(std::get<1>(scores.topk(10))[r].item<int64_t>());
  EXPECT_EQ(reranked[0]["ranked_by"], "itm_logit");
  const auto& results = reranked[0]["results"];
  ASSERT_EQ(results.size(), 10u);
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_TRUE(itc_top10.count(results[r]["id"].get<int64_t>())) << r;
    const double match = results[r]["itm_match"].get<double>();
    EXPECT_TRUE(match >= 0.0 && match <= 1.0);
    if (r > 0) EXPECT_GE(results[r - 1]["itm_logit"].get<double>(), results[r]["itm_logit"].get<double>());
  }
  std::ifstream html(dir + "/results.html");
  const std::string page((std::istreambuf_iterator<char>(html)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("<img src=\"data:image/jpeg;base64,"), std::string::npos);
  EXPECT_NE(page.find("a desk"), std::string::npos);

  // Every format shows the score the order comes from: the table and the
  // page list the ITM logit first (non-increasing), its probability labelled.
  const auto shown_logits = [](const std::string& text, const std::string& label) {
    std::vector<double> values;
    for (size_t at = text.find(label); at != std::string::npos; at = text.find(label, at + 1))
      values.push_back(std::stod(text.substr(at + label.size())));
    return values;
  };
  const std::vector<double> on_page = shown_logits(page, "ITM logit ");
  ASSERT_EQ(on_page.size(), 20u);
  for (size_t r = 1; r < 10; ++r) EXPECT_GE(on_page[r - 1], on_page[r]) << r;
  EXPECT_NE(page.find("(p "), std::string::npos);
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " search" + model_flags() + " --index " + index + " --k 10 --rerank 10 '" +
                            caption + "'",
                        &output),
            0)
      << output;
  const std::vector<double> in_table = shown_logits(output, "itm logit ");
  ASSERT_EQ(in_table.size(), 10u) << output;
  for (size_t r = 0; r < 10; ++r) {
    EXPECT_NEAR(in_table[r], results[r]["itm_logit"].get<double>(), 1e-4) << r;
    if (r > 0) EXPECT_GE(in_table[r - 1], in_table[r]) << r;
  }
  EXPECT_NE(output.find("(p "), std::string::npos) << output;
}

TEST(SearchCli, AppendAddsOnlyNewImages) {
  const std::string dir = make_temp_dir("search_append");
  const std::string index = dir + "/g.index";
  std::ofstream(dir + "/first.txt") << source_path("data/coco-by/images/000000000790.jpg") << "\n"
                                    << source_path("data/coco-by/images/000000078499.jpg") << "\n";
  std::ofstream(dir + "/second.txt") << source_path("data/coco-by/images/000000078499.jpg") << "\n"
                                     << source_path("data/coco-by/images/000000084284.jpg") << "\n";
  std::string output;
  const std::string base = std::string(ALBEF_CLI) + " index" + model_flags() + " --out " + index;
  ASSERT_EQ(run_command(base + " --images " + dir + "/first.txt", &output), 0) << output;
  ASSERT_EQ(run_command(base + " --images " + dir + "/second.txt --append", &output), 0) << output;
  EXPECT_NE(output.find("indexed 1 images"), std::string::npos) << output;
  EXPECT_NE(output.find("holds 3 images; 1 were indexed already"), std::string::npos) << output;
  std::ifstream paths(index + ".paths");
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(paths, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[2].find("000000084284.jpg"), std::string::npos);
}
