// The faiss gallery index: exact flat search, approximate IVF/HNSW that
// still find what they should, the three files round-trip, and damaged
// files are refused with the file named.

#include "albef/core/error.h"
#include "albef/serve/image_index.h"

#include "test_util.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

using albef::serve::ImageIndex;
using albef::serve::IndexKind;
using albef::testing::make_temp_dir;

namespace {

at::Tensor random_unit_rows(int64_t n, int64_t dim, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor x = at::randn({n, dim});
  return x / x.norm(2, 1, true);
}

std::vector<std::string> names(int64_t n, const std::string& prefix = "img") {
  std::vector<std::string> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i) + ".jpg");
  return out;
}

}  // namespace

TEST(ImageIndex, FlatSearchIsExactTopK) {
  const at::Tensor gallery = random_unit_rows(500, 32, 1), queries = random_unit_rows(7, 32, 2);
  ImageIndex index(32, IndexKind::Auto, 500);
  EXPECT_EQ(index.kind_name(), "flat");
  index.add(gallery.slice(0, 0, 200), names(200));
  index.add(gallery.slice(0, 200), names(300, "more"));
  ASSERT_EQ(index.size(), 500);
  EXPECT_EQ(index.path(200), "more0.jpg");
  const auto hits = index.search(queries, 10);
  const auto [best, ids] = at::matmul(queries, gallery.t()).topk(10, 1);
  for (int64_t q = 0; q < 7; ++q) {
    ASSERT_EQ(hits[q].size(), 10u);
    for (int64_t r = 0; r < 10; ++r) {
      EXPECT_EQ(hits[q][r].id, ids[q][r].item<int64_t>());
      EXPECT_NEAR(hits[q][r].score, best[q][r].item<float>(), 1e-5);
    }
  }
  // More than the gallery holds: all of it.
  EXPECT_EQ(index.search(queries.slice(0, 0, 1), 1000)[0].size(), 500u);
}

TEST(ImageIndex, ApproximateIndexesFindEachImageItself) {
  const at::Tensor gallery = random_unit_rows(4000, 32, 3);
  for (const IndexKind kind : {IndexKind::Ivf, IndexKind::Hnsw}) {
    ImageIndex index(32, kind, 4000);
    EXPECT_GT(index.training_size(), kind == IndexKind::Ivf ? 0 : -1);
    index.add(gallery, names(4000));
    EXPECT_EQ(index.training_size(), 0);
    const auto hits = index.search(gallery.slice(0, 0, 200), 5);
    int64_t found = 0;
    for (int64_t q = 0; q < 200; ++q) found += !hits[q].empty() && hits[q][0].id == q;
    EXPECT_GE(found, 198) << index.kind_name();
    for (const auto& hit : hits[0])  // scores are exact dot products
      EXPECT_NEAR(hit.score, (gallery[0] * gallery[hit.id]).sum().item<float>(), 1e-5);
  }
}

TEST(ImageIndex, SavesAndLoadsTheThreeFiles) {
  const std::string dir = make_temp_dir("index_files");
  const at::Tensor gallery = random_unit_rows(50, 16, 4);
  ImageIndex index(16, IndexKind::Flat, 50);
  index.info()["checkpoint"] = "model.pth";
  index.add(gallery, names(50));
  index.save(dir + "/gallery.index");
  for (const char* suffix : {"", ".paths", ".json"}) EXPECT_TRUE(std::filesystem::exists(dir + "/gallery.index" + suffix));

  ImageIndex loaded = ImageIndex::load(dir + "/gallery.index");
  EXPECT_EQ(loaded.size(), 50);
  EXPECT_EQ(loaded.dim(), 16);
  EXPECT_EQ(loaded.path(49), "img49.jpg");
  EXPECT_EQ(loaded.info()["checkpoint"], "model.pth");
  EXPECT_EQ(loaded.search(gallery.slice(0, 7, 8), 1)[0][0].id, 7);
  // Appending after a reload keeps ids consecutive.
  loaded.add(random_unit_rows(3, 16, 5), names(3, "new"));
  EXPECT_EQ(loaded.path(52), "new2.jpg");
}

TEST(ImageIndex, DamagedFilesAreRefusedByName) {
  const std::string dir = make_temp_dir("index_damaged");
  ImageIndex index(8, IndexKind::Flat, 10);
  index.add(random_unit_rows(10, 8, 6), names(10));
  index.save(dir + "/a.index");
  // A paths file that lost lines (a save cut short or a hand edit).
  std::ofstream(dir + "/a.index.paths") << "img0.jpg\nimg1.jpg\n";
  try {
    ImageIndex::load(dir + "/a.index");
    FAIL() << "expected an error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.index"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rebuild"), std::string::npos) << e.what();
  }
  // Not a faiss file.
  index.save(dir + "/b.index");
  std::ofstream(dir + "/b.index") << "garbage";
  EXPECT_THROW(ImageIndex::load(dir + "/b.index"), albef::Error);
  // No description.
  EXPECT_THROW(ImageIndex::load(dir + "/missing.index"), albef::Error);
  // Wrong shapes are named.
  try {
    index.add(at::zeros({2, 9}), names(2));
    FAIL() << "expected an error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 9]"), std::string::npos) << e.what();
  }
}
