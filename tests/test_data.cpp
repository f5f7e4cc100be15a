// The data pipeline: the official annotation formats on the bundled
// data/coco-by set, malformed files, DistributedSampler against torch's, and
// the threaded loaders (determinism across runs and thread counts, resuming
// mid-epoch, unreadable images, errors from workers).

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/data/annotations.h"
#include "albef/data/loader.h"
#include "albef/data/sampler.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/augment.h"
#include "albef/vision/image.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace albef::data {
namespace {

using albef::testing::make_temp_dir;
using albef::testing::source_path;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kRes = 32;  // small images keep the loader tests fast

std::string coco_annotations() { return source_path("data/coco-by/captions.json"); }

const json& coco_json() {
  static const json doc = json::parse(read_file(coco_annotations()));
  return doc;
}

void write_text(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

size_t count_words(const std::string& text) {
  std::istringstream in(text);
  return static_cast<size_t>(std::distance(std::istream_iterator<std::string>(in), {}));
}

// Runs `statement`, expecting an albef::Error whose message contains every
// one of `parts`.
template <typename F>
void expect_error(F&& statement, const std::vector<std::string>& parts) {
  try {
    statement();
    ADD_FAILURE() << "no error; expected one mentioning " << parts.front();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------------------
// Annotations

TEST(Annotations, PretrainLoadsCocoBy) {
  const TrainDataset ds = load_pretrain_dataset({coco_annotations()});
  ASSERT_EQ(ds.size(), 26);
  EXPECT_EQ(ds.num_images, 0);
  for (int64_t i = 0; i < ds.size(); ++i) {
    const TrainSample& s = ds.samples[static_cast<size_t>(i)];
    const json& entry = coco_json()[static_cast<size_t>(i)];
    EXPECT_EQ(s.image, entry["image"].get<std::string>());
    EXPECT_EQ(s.captions, entry["caption"].get<std::vector<std::string>>());
    EXPECT_EQ(s.image_idx, -1);
    EXPECT_EQ(s.file, 0u);
    // "images/x.jpg" resolves beside the annotation file, whatever the cwd.
    const std::string path = ds.image_path(i);
    EXPECT_TRUE(fs::exists(path)) << path;
    EXPECT_TRUE(fs::equivalent(path, source_path("data/coco-by/" + s.image))) << path;
  }
}

TEST(Annotations, PretrainConcatenatesFilesAndKeepsAbsolutePaths) {
  const std::string dir = make_temp_dir("data_concat");
  const std::string image = source_path("data/coco-by/images/000000000790.jpg");
  const std::string second = dir + "/more.json";
  write_text(second, json::array({{{"image", image},
                                   {"caption", "A single caption."},
                                   {"extra", {{"nested", json::array({1, {{"x", 2}}})}}}},
                                  {{"image", "missing.jpg"}, {"caption", {"one", "two"}}}})
                         .dump());
  const TrainDataset ds = load_pretrain_dataset({coco_annotations(), second});
  ASSERT_EQ(ds.size(), 28);
  EXPECT_EQ(ds.annotation_files, (std::vector<std::string>{coco_annotations(), second}));
  EXPECT_EQ(ds.samples[26].file, 1u);
  EXPECT_EQ(ds.samples[26].captions, std::vector<std::string>{"A single caption."});
  EXPECT_EQ(ds.image_path(26), image);
  // Found nowhere: left as written, so that opening it reports that name.
  EXPECT_EQ(ds.image_path(27), "missing.jpg");

  // The eval format takes a plain string as a list of one.
  const RetrievalEvalDataset eval = load_retrieval_eval_dataset(second, "");
  EXPECT_EQ(eval.text, (std::vector<std::string>{"a single caption", "one", "two"}));
  EXPECT_EQ(eval.txt2img, (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ(eval.img2txt, (std::vector<std::vector<int64_t>>{{0}, {1, 2}}));
}

TEST(Annotations, RetrievalTrainExpandsListCaptions) {
  const TrainDataset ds = load_retrieval_train_dataset({coco_annotations()}, "");
  ASSERT_EQ(ds.size(), 130);
  EXPECT_EQ(ds.num_images, 26);
  for (int64_t i = 0; i < ds.size(); ++i) {
    const TrainSample& s = ds.samples[static_cast<size_t>(i)];
    const json& entry = coco_json()[static_cast<size_t>(i / 5)];
    EXPECT_EQ(s.image_idx, i / 5);
    EXPECT_EQ(s.image, entry["image"].get<std::string>());
    ASSERT_EQ(s.captions.size(), 1u);
    EXPECT_EQ(s.captions[0], entry["caption"][static_cast<size_t>(i % 5)].get<std::string>());
    EXPECT_TRUE(fs::exists(ds.image_path(i)));
  }
  // With image_root, paths are os.path.join(image_root, image).
  const TrainDataset rooted = load_retrieval_train_dataset({coco_annotations()}, source_path("data/coco-by"));
  EXPECT_EQ(rooted.samples[0].image, source_path("data/coco-by/images/000000000790.jpg"));
  EXPECT_EQ(rooted.image_path(0), rooted.samples[0].image);
}

TEST(Annotations, RetrievalTrainImageIdsAndRoot) {
  const std::string dir = make_temp_dir("data_ids");
  const std::string file = dir + "/train.json";
  write_text(file, R"([
    {"image": "a.jpg", "caption": "first", "image_id": "coco_1"},
    {"image": "b.jpg", "caption": "second", "image_id": 5},
    {"image": "a.jpg", "caption": "third", "image_id": "coco_1"},
    {"image": "/abs/b.jpg", "caption": "fourth", "image_id": 5.0},
    {"image": "c.jpg", "caption": "fifth", "image_id": "5"}
  ])");
  const TrainDataset ds = load_retrieval_train_dataset({file}, "root");
  ASSERT_EQ(ds.size(), 5);
  EXPECT_EQ(ds.num_images, 3);
  std::vector<int64_t> idx;
  for (const TrainSample& s : ds.samples) idx.push_back(s.image_idx);
  EXPECT_EQ(idx, (std::vector<int64_t>{0, 1, 0, 1, 2}));  // 5 == 5.0 != "5", as Python's dict
  EXPECT_EQ(ds.samples[0].image, "root/a.jpg");
  EXPECT_EQ(ds.samples[3].image, "/abs/b.jpg");

  EXPECT_EQ(join_path("", "x.jpg"), "x.jpg");
  EXPECT_EQ(join_path("root/", "x.jpg"), "root/x.jpg");
  EXPECT_EQ(join_path("root", "sub/x.jpg"), "root/sub/x.jpg");
  EXPECT_EQ(join_path("root", "/x.jpg"), "/x.jpg");
}

TEST(Annotations, RetrievalEvalMatchesOfficialIndexing) {
  const RetrievalEvalDataset ds = load_retrieval_eval_dataset(coco_annotations(), "", 30);
  ASSERT_EQ(ds.num_images(), 26);
  ASSERT_EQ(ds.num_texts(), 130);
  ASSERT_EQ(ds.txt2img.size(), 130u);
  ASSERT_EQ(ds.img2txt.size(), 26u);
  int64_t txt_id = 0;
  for (int64_t img = 0; img < 26; ++img) {
    const json& entry = coco_json()[static_cast<size_t>(img)];
    EXPECT_EQ(ds.image[static_cast<size_t>(img)], entry["image"].get<std::string>());
    std::vector<int64_t> expected;
    for (const auto& caption : entry["caption"]) {
      EXPECT_EQ(ds.text[static_cast<size_t>(txt_id)], text::pre_caption(caption.get<std::string>(), 30));
      EXPECT_EQ(ds.txt2img[static_cast<size_t>(txt_id)], img);
      expected.push_back(txt_id++);
    }
    EXPECT_EQ(ds.img2txt[static_cast<size_t>(img)], expected);
  }
  for (const std::string& path : ds.image_paths()) EXPECT_TRUE(fs::exists(path)) << path;

  const RetrievalEvalDataset short_words = load_retrieval_eval_dataset(coco_annotations(), "", 3);
  for (const std::string& t : short_words.text) EXPECT_LE(count_words(t), 3u) << t;
}

TEST(Annotations, MalformedFilesNameTheFileAndEntry) {
  const std::string dir = make_temp_dir("data_malformed");
  struct Case {
    std::string content;
    std::vector<std::string> expected;
  };
  const std::vector<Case> common = {
      {"", {"empty"}},
      {" \n\t", {"empty"}},
      {R"({"image": "a.jpg", "caption": "c"})", {"expected a JSON list", "object"}},
      {"42", {"expected a JSON list", "number"}},
      {"[]", {"list of entries is empty"}},
      {R"([{"image": "a.jpg", "caption": "c", "image_id": 1}, 3])", {"entry 1", "expected an object", "number"}},
      {R"([{"image": "a.jpg", "caption": "c", "image_id": 1}, ["a.jpg"]])", {"entry 1", "array"}},
      {R"([{"caption": "c", "image_id": 1}])", {"entry 0", "missing \"image\""}},
      {R"([{"image": 5, "caption": "c", "image_id": 1}])", {"entry 0", "\"image\" must be a string", "number"}},
      {R"([{"image": "a.jpg", "caption": "c", "image_id": 1}, {"image": "b.jpg"}])",
       {"entry 1", "missing \"caption\""}},
      {R"([{"image": "a.jpg", "caption": 7, "image_id": 1}])",
       {"entry 0", "\"caption\" must be a string or a list of strings"}},
      {R"([{"image": "a.jpg", "caption": {"x": 1}, "image_id": 1}])", {"entry 0", "\"caption\"", "object"}},
      {R"([{"image": "a.jpg", "caption": [], "image_id": 1}])", {"entry 0", "\"caption\" is an empty list"}},
      {R"([{"image": "a.jpg", "caption": ["x", null], "image_id": 1}])",
       {"entry 0", "\"caption\"[1] must be a string", "null"}},
      {R"([{"image": "a.jpg", "caption": "c", "image_id": 1})", {"invalid JSON"}},
  };
  int n = 0;
  for (const Case& c : common) {
    const std::string file = dir + "/case" + std::to_string(n++) + ".json";
    write_text(file, c.content);
    std::vector<std::string> expected = c.expected;
    expected.push_back(file);
    SCOPED_TRACE(c.content);
    expect_error([&] { load_pretrain_dataset({coco_annotations(), file}); }, expected);
    expect_error([&] { load_retrieval_train_dataset({file}, ""); }, expected);
    expect_error([&] { load_retrieval_eval_dataset(file, ""); }, expected);
  }
  // image_id only matters to retrieval training.
  const std::string no_id = dir + "/no_id.json";
  write_text(no_id, R"([{"image": "a.jpg", "caption": "c", "image_id": 1}, {"image": "a.jpg", "caption": "c"}])");
  expect_error([&] { load_retrieval_train_dataset({no_id}, ""); }, {no_id, "entry 1", "missing \"image_id\""});
  EXPECT_NO_THROW(load_retrieval_eval_dataset(no_id, ""));
  const std::string null_id = dir + "/null_id.json";
  write_text(null_id, R"([{"image": "a.jpg", "caption": "c", "image_id": null}])");
  expect_error([&] { load_retrieval_train_dataset({null_id}, ""); },
               {null_id, "entry 0", "\"image_id\" must be a string or a number"});
  expect_error([&] { load_pretrain_dataset({dir + "/absent.json"}); }, {dir + "/absent.json"});
}

// ---------------------------------------------------------------------------
// Sampler

std::vector<int64_t> shard(int64_t n, int64_t world, int64_t rank, int64_t epoch, uint64_t seed,
                           bool shuffle = true) {
  DistributedSampler sampler(n, world, rank, shuffle, seed);
  sampler.set_epoch(epoch);
  return sampler.indices();
}

TEST(Sampler, MatchesTorchDistributedSampler) {
  // list(DistributedSampler(range(n), num_replicas=w, rank=r, seed=3)) after
  // set_epoch(e), from torch 1.13.
  EXPECT_EQ(shard(10, 3, 0, 0, 3), (std::vector<int64_t>{6, 7, 1, 4}));
  EXPECT_EQ(shard(10, 3, 1, 0, 3), (std::vector<int64_t>{0, 8, 9, 6}));
  EXPECT_EQ(shard(10, 3, 2, 0, 3), (std::vector<int64_t>{3, 5, 2, 0}));
  EXPECT_EQ(shard(10, 3, 0, 1, 3), (std::vector<int64_t>{0, 6, 2, 5}));
  EXPECT_EQ(shard(10, 3, 1, 1, 3), (std::vector<int64_t>{4, 7, 8, 0}));
  EXPECT_EQ(shard(10, 3, 2, 1, 3), (std::vector<int64_t>{9, 3, 1, 4}));
  // More ranks than samples: the order is repeated as often as needed.
  EXPECT_EQ(shard(2, 4, 0, 5, 3), std::vector<int64_t>{1});
  EXPECT_EQ(shard(2, 4, 1, 5, 3), std::vector<int64_t>{0});
  EXPECT_EQ(shard(2, 4, 2, 5, 3), std::vector<int64_t>{1});
  EXPECT_EQ(shard(2, 4, 3, 5, 3), std::vector<int64_t>{0});
  EXPECT_EQ(shard(10, 3, 1, 0, 0, false), (std::vector<int64_t>{1, 4, 7, 0}));
  // torch.randperm(26, generator=torch.Generator().manual_seed(7))[:12]
  const std::vector<int64_t> perm = shard(26, 1, 0, 0, 7);
  EXPECT_EQ(std::vector<int64_t>(perm.begin(), perm.begin() + 12),
            (std::vector<int64_t>{19, 18, 3, 23, 17, 2, 13, 9, 12, 11, 24, 8}));
}

TEST(Sampler, ShardsAreDisjointCoveringAndPadded) {
  const int64_t n = 103, world = 4;
  DistributedSampler probe(n, world, 0);
  EXPECT_EQ(probe.num_samples(), 26);
  EXPECT_EQ(probe.total_size(), 104);
  const std::vector<int64_t> full = shard(n, 1, 0, 2, 0);  // the epoch's whole permutation
  std::vector<int64_t> all;
  for (int64_t r = 0; r < world; ++r) {
    const std::vector<int64_t> mine = shard(n, world, r, 2, 0);
    ASSERT_EQ(static_cast<int64_t>(mine.size()), 26);
    for (size_t k = 0; k < mine.size(); ++k)  // rank r takes positions r, r + world, ...
      EXPECT_EQ(mine[k], full[(static_cast<size_t>(r) + k * world) % n]);
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::multiset<int64_t> counts(all.begin(), all.end());
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(counts.count(i), i == full[0] ? 2u : 1u) << i;

  EXPECT_EQ(shard(n, world, 1, 2, 0), shard(n, world, 1, 2, 0));
  EXPECT_NE(shard(n, world, 1, 2, 0), shard(n, world, 1, 3, 0));
  EXPECT_NE(shard(n, world, 1, 2, 0), shard(n, world, 1, 2, 1));
  EXPECT_THROW(DistributedSampler(n, 4, 4), Error);
  EXPECT_THROW(DistributedSampler(0, 1, 0), Error);
}

TEST(Sampler, MakeBatches) {
  const std::vector<int64_t> idx = {5, 3, 8, 1, 0, 9, 2};
  EXPECT_EQ(make_batches(idx, 3, true), (std::vector<std::vector<int64_t>>{{5, 3, 8}, {1, 0, 9}}));
  EXPECT_EQ(make_batches(idx, 3, false), (std::vector<std::vector<int64_t>>{{5, 3, 8}, {1, 0, 9}, {2}}));
  EXPECT_EQ(make_batches(idx, 7, true).size(), 1u);
  EXPECT_TRUE(make_batches(idx, 8, true).empty());
}

// ---------------------------------------------------------------------------
// Training loader

TrainLoaderOptions small_options(int workers) {
  TrainLoaderOptions options;
  options.batch_size = 4;
  options.num_workers = workers;
  options.prefetch_batches = 2;
  options.sampler_seed = 11;
  options.augment_seed = 5;
  return options;
}

SampleTransform pretrain_transform() { return vision::TrainTransform(kRes, vision::kPretrainScaleMin); }

std::vector<TrainBatch> run_epoch(TrainLoader& loader, int64_t epoch, int64_t skip = 0) {
  loader.start_epoch(epoch, skip);
  std::vector<TrainBatch> batches;
  while (std::optional<TrainBatch> batch = loader.next()) batches.push_back(std::move(*batch));
  return batches;
}

void expect_same_batches(const std::vector<TrainBatch>& a, const std::vector<TrainBatch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_TRUE(at::equal(a[i].images, b[i].images)) << "batch " << i;
    EXPECT_TRUE(at::equal(a[i].indices, b[i].indices)) << "batch " << i;
    EXPECT_EQ(a[i].captions, b[i].captions) << "batch " << i;
  }
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

TEST(TrainLoader, DeterministicAcrossRunsAndThreadCounts) {
  const TrainDataset ds = load_pretrain_dataset({coco_annotations()});
  TrainLoader one(ds, pretrain_transform(), small_options(1));
  TrainLoader two(ds, pretrain_transform(), small_options(2));
  EXPECT_EQ(one.num_samples(), 26);
  EXPECT_EQ(one.num_batches(), 6);  // drop_last

  const std::vector<TrainBatch> a = run_epoch(one, 0);
  const std::vector<TrainBatch> b = run_epoch(two, 0);
  ASSERT_EQ(a.size(), 6u);
  expect_same_batches(a, b);

  // Sampler order, images from each sample's own stream, official layout.
  DistributedSampler sampler(26, 1, 0, true, 11);
  sampler.set_epoch(0);
  const std::vector<int64_t> order = sampler.indices();
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].epoch, 0);
    EXPECT_EQ(a[k].index, static_cast<int64_t>(k));
    EXPECT_EQ(a[k].images.sizes(), (at::IntArrayRef{4, 3, kRes, kRes}));
    EXPECT_EQ(a[k].images.scalar_type(), at::kFloat);
    EXPECT_FALSE(a[k].image_idx.defined());
    EXPECT_EQ(to_vector(a[k].indices), std::vector<int64_t>(order.begin() + 4 * k, order.begin() + 4 * k + 4));
  }
  const int64_t index = order[5];
  vision::Rng rng = vision::Rng::for_sample(5, 0, static_cast<uint64_t>(index));
  const at::Tensor expected = vision::TrainTransform(kRes)(vision::read_rgb(ds.image_path(index)), rng);
  EXPECT_TRUE(at::equal(a[1].images[1], expected));

  // A new epoch reshuffles and redraws; rerunning an epoch repeats it.
  const std::vector<TrainBatch> next_epoch = run_epoch(two, 1);
  EXPECT_FALSE(at::equal(next_epoch[0].indices, a[0].indices));
  expect_same_batches(run_epoch(one, 0), a);
}

TEST(TrainLoader, SkipBatchesResumesMidEpoch) {
  const TrainDataset ds = load_pretrain_dataset({coco_annotations()});
  TrainLoader loader(ds, pretrain_transform(), small_options(2));
  const std::vector<TrainBatch> full = run_epoch(loader, 3);
  const std::vector<TrainBatch> resumed = run_epoch(loader, 3, 4);
  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_EQ(resumed[0].index, 4);
  expect_same_batches(resumed, std::vector<TrainBatch>(full.begin() + 4, full.end()));
  EXPECT_TRUE(run_epoch(loader, 3, 6).empty());
  EXPECT_THROW(loader.start_epoch(3, 7), Error);

  // Abandoning an epoch halfway: the next one is unaffected.
  loader.start_epoch(3);
  ASSERT_TRUE(loader.next().has_value());
  const std::vector<TrainBatch> after = run_epoch(loader, 3, 5);
  expect_same_batches(after, std::vector<TrainBatch>(full.begin() + 5, full.end()));
}

TEST(TrainLoader, CaptionChoiceIsReproducible) {
  const TrainDataset ds = load_pretrain_dataset({coco_annotations()});
  TrainLoaderOptions options = small_options(2);
  options.max_words = 5;
  // A cheap transform: this test is about captions.
  const SampleTransform blank = [](const cv::Mat&, vision::Rng&) { return at::zeros({3, 2, 2}); };
  TrainLoader loader(ds, blank, options);
  std::set<std::string> seen_choices;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    for (const TrainBatch& batch : run_epoch(loader, epoch)) {
      const std::vector<int64_t> idx = to_vector(batch.indices);
      for (size_t i = 0; i < idx.size(); ++i) {
        const TrainSample& sample = ds.samples[static_cast<size_t>(idx[i])];
        EXPECT_EQ(batch.captions[i], choose_caption(sample, 5, epoch, idx[i], 5));
        EXPECT_LE(count_words(batch.captions[i]), 5u);
        bool from_sample = false;
        for (const std::string& c : sample.captions) from_sample |= text::pre_caption(c, 5) == batch.captions[i];
        EXPECT_TRUE(from_sample) << batch.captions[i];
        seen_choices.insert(batch.captions[i]);
      }
    }
  }
  // Not always the first caption.
  std::set<std::string> firsts;
  for (const TrainSample& s : ds.samples) firsts.insert(text::pre_caption(s.captions[0], 5));
  EXPECT_FALSE(std::includes(firsts.begin(), firsts.end(), seen_choices.begin(), seen_choices.end()));
  // Another seed draws differently.
  int differences = 0;
  for (int64_t i = 0; i < ds.size(); ++i)
    differences += choose_caption(ds.samples[static_cast<size_t>(i)], 5, 0, i, 30) !=
                   choose_caption(ds.samples[static_cast<size_t>(i)], 6, 0, i, 30);
  EXPECT_GT(differences, 0);
}

TEST(TrainLoader, UnreadableImagesAreReplacedAndCounted) {
  const std::string dir = make_temp_dir("data_bad_images");
  const std::string good_jpeg = read_file(source_path("data/coco-by/images/000000000790.jpg"));
  write_text(dir + "/truncated.jpg", good_jpeg.substr(0, good_jpeg.size() / 2));
  write_text(dir + "/not_an_image.jpg", "this is text");
  // 25 good images and 3 bad ones: 28 samples, 7 full batches of 4.
  json entries = json::array();
  for (size_t i = 1; i < 26; ++i) entries.push_back(coco_json()[i]);
  entries.push_back({{"image", "missing.jpg"}, {"caption", "gone"}});
  entries.push_back({{"image", "truncated.jpg"}, {"caption", "cut"}});
  entries.push_back({{"image", "not_an_image.jpg"}, {"caption", "text"}});
  // The coco paths are relative to data/coco-by, not to this file's folder.
  for (size_t i = 0; i < 25; ++i)
    entries[i]["image"] = source_path("data/coco-by/" + entries[i]["image"].get<std::string>());
  const std::string file = dir + "/with_bad.json";
  write_text(file, entries.dump());
  const TrainDataset ds = load_pretrain_dataset({file});
  const std::set<int64_t> bad = {25, 26, 27};

  TrainLoader loader(ds, pretrain_transform(), small_options(2));
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const std::vector<TrainBatch> batches = run_epoch(loader, epoch);
    ASSERT_EQ(batches.size(), 7u);
    DistributedSampler sampler(28, 1, 0, true, 11);
    sampler.set_epoch(epoch);
    const std::vector<int64_t> order = sampler.indices();
    for (size_t k = 0; k < batches.size(); ++k) {
      EXPECT_EQ(batches[k].images.size(0), 4);
      const std::vector<int64_t> idx = to_vector(batches[k].indices);
      for (size_t i = 0; i < 4; ++i) {
        // The sampler's sample, or the next readable one in its order.
        size_t p = 4 * k + i;
        while (bad.count(order[p % 28])) ++p;
        EXPECT_EQ(idx[i], order[p % 28]);
      }
    }
    // Counted per epoch, not accumulated.
    const BadSampleReport report = loader.bad_samples();
    EXPECT_EQ(report.epoch, epoch);
    EXPECT_EQ(report.count, 3);
    ASSERT_EQ(report.first.size(), 3u);
    std::set<int64_t> reported;
    for (const BadSample& b : report.first) {
      reported.insert(b.index);
      EXPECT_NE(b.message.find(b.path), std::string::npos) << b.message;
    }
    EXPECT_EQ(reported, bad);
  }
}

TEST(TrainLoader, WrongImageRootFailsNamingTheAnnotations) {
  const TrainDataset ds = load_retrieval_train_dataset({coco_annotations()}, "/nonexistent/root");
  TrainLoader loader(ds, pretrain_transform(), small_options(2));
  loader.start_epoch(0);
  expect_error([&] { loader.next(); }, {"too many unreadable images", "captions.json", "image_root"});
  // Still failing until the next epoch starts.
  EXPECT_THROW(loader.next(), Error);
}

TEST(TrainLoader, RetrievalBatchesCarryImageIdx) {
  const TrainDataset ds = load_retrieval_train_dataset({coco_annotations()}, "");
  TrainLoaderOptions options = small_options(2);
  options.batch_size = 8;
  options.world_size = 2;
  options.rank = 1;
  TrainLoader loader(ds, vision::TrainTransform(kRes, vision::kFinetuneScaleMin), options);
  EXPECT_EQ(loader.num_samples(), 65);
  EXPECT_EQ(loader.num_batches(), 8);
  loader.start_epoch(0);
  DistributedSampler sampler(130, 2, 1, true, 11);
  const std::vector<int64_t> order = sampler.indices();
  // Two batches, then the loader is destroyed mid-epoch.
  for (int64_t k = 0; k < 2; ++k) {
    const std::optional<TrainBatch> batch = loader.next();
    ASSERT_TRUE(batch.has_value());
    const std::vector<int64_t> idx = to_vector(batch->indices);
    EXPECT_EQ(idx, std::vector<int64_t>(order.begin() + 8 * k, order.begin() + 8 * k + 8));
    ASSERT_EQ(batch->image_idx.scalar_type(), at::kLong);
    const std::vector<int64_t> image_idx = to_vector(batch->image_idx);
    for (size_t i = 0; i < idx.size(); ++i) {
      EXPECT_EQ(image_idx[i], idx[i] / 5);
      EXPECT_EQ(batch->captions[i], text::pre_caption(ds.samples[static_cast<size_t>(idx[i])].captions[0], 30));
    }
  }
}

TEST(TrainLoader, WorkerExceptionsReachTheConsumer) {
  const TrainDataset ds = load_pretrain_dataset({coco_annotations()});
  const SampleTransform broken = [](const cv::Mat&, vision::Rng&) -> at::Tensor {
    throw std::runtime_error("transform exploded");
  };
  TrainLoader loader(ds, broken, small_options(2));
  loader.start_epoch(0);
  try {
    loader.next();
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "transform exploded");
  }
  TrainLoaderOptions too_big = small_options(1);
  too_big.batch_size = 27;
  expect_error([&] { TrainLoader(ds, pretrain_transform(), too_big); }, {"do not fill one batch", "27"});
}

// ---------------------------------------------------------------------------
// Evaluation loader

TEST(EvalImageLoader, ImagesInOrderWithTheTestTransform) {
  const RetrievalEvalDataset ds = load_retrieval_eval_dataset(coco_annotations(), "");
  const std::vector<std::string> paths = ds.image_paths();
  EvalImageLoader loader(paths, kRes, 8, 2, 2);
  EXPECT_EQ(loader.size(), 26);
  EXPECT_EQ(loader.num_batches(), 4);
  int64_t seen = 0;
  while (std::optional<EvalBatch> batch = loader.next()) {
    const int64_t b = batch->images.size(0);
    EXPECT_EQ(b, seen < 24 ? 8 : 2);
    EXPECT_EQ(batch->images.scalar_type(), at::kByte);  // 8-bit until the encoder normalises them
    for (int64_t i = 0; i < b; ++i) {
      EXPECT_EQ(batch->indices[i].item<int64_t>(), seen + i);
      const std::string& path = paths[static_cast<size_t>(seen + i)];
      EXPECT_TRUE(at::equal(batch->images[i], vision::load_test_pixels(path, kRes))) << path;
    }
    seen += b;
  }
  EXPECT_EQ(seen, 26);
  EXPECT_FALSE(loader.next().has_value());
}

TEST(EvalImageLoader, UnreadableImageIsAnError) {
  std::vector<std::string> paths = {source_path("data/coco-by/images/000000000790.jpg"), "/nonexistent/x.jpg"};
  EvalImageLoader loader(paths, kRes, 1, 1);
  // The first batch may or may not come before the error; the bad file must surface.
  expect_error(
      [&] {
        while (loader.next()) {
        }
      },
      {"/nonexistent/x.jpg"});
}

}  // namespace
}  // namespace albef::data
