// data::SampleLoader: the training loader of every task, over a sample type
// the task chooses (here a pair of "images", as NLVR2's), with the train
// loader's guarantees: sampler order whatever the threads, unreadable items
// replaced and counted, and exact resumption mid-epoch.

#include "data/sample_loader.h"

#include "test_util.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

namespace {

using albef::data::SampleLoader;
using albef::data::TrainLoaderOptions;
using albef::data::UnreadableSample;

// Two images per item, as NLVR2's samples have them.
struct PairSample {
  int64_t index = -1;
  std::string left, right;
};

struct PairBatch {
  int64_t epoch = 0, index = 0;
  std::vector<int64_t> items;
};

using PairLoader = SampleLoader<PairSample, PairBatch>;

// Items in `unreadable` fail as a missing file would.
std::unique_ptr<PairLoader> make_loader(int64_t size, int workers, std::set<int64_t> unreadable = {}) {
  TrainLoaderOptions options;
  options.batch_size = 4;
  options.num_workers = workers;
  options.sampler_seed = 7;
  return std::make_unique<PairLoader>(
      size, "pairs.json",
      [unreadable](int64_t index, int64_t) {
        const std::string left = "img" + std::to_string(index) + "-0.jpg";
        if (unreadable.count(index)) throw UnreadableSample(left, left + ": no such file");
        return PairSample{index, left, "img" + std::to_string(index) + "-1.jpg"};
      },
      [](std::vector<PairSample>& samples, int64_t epoch, int64_t b) {
        PairBatch batch{epoch, b, {}};
        for (const PairSample& sample : samples) batch.items.push_back(sample.index);
        return batch;
      },
      options);
}

std::vector<std::vector<int64_t>> epoch_items(PairLoader& loader, int64_t epoch, int64_t skip = 0) {
  loader.start_epoch(epoch, skip);
  std::vector<std::vector<int64_t>> batches;
  while (auto batch = loader.next()) {
    EXPECT_EQ(batch->epoch, epoch);
    EXPECT_EQ(batch->index, skip + static_cast<int64_t>(batches.size()));
    batches.push_back(batch->items);
  }
  return batches;
}

TEST(SampleLoader, SamplerOrderWhateverTheThreads) {
  auto one = make_loader(22, 1);
  auto three = make_loader(22, 3);
  EXPECT_EQ(one->num_batches(), 5);  // drop_last: 22 / 4
  for (int64_t epoch : {0, 1}) EXPECT_EQ(epoch_items(*one, epoch), epoch_items(*three, epoch));
  EXPECT_NE(epoch_items(*one, 0), epoch_items(*one, 1));  // reshuffled per epoch
}

TEST(SampleLoader, UnreadableItemsAreReplacedAndCounted) {
  auto clean = make_loader(16, 2);
  auto broken = make_loader(16, 2, {3, 9});
  const auto expected = epoch_items(*clean, 0);
  const auto got = epoch_items(*broken, 0);
  ASSERT_EQ(got.size(), expected.size());
  std::vector<int64_t> flat;
  for (const auto& batch : got) {
    EXPECT_EQ(batch.size(), 4u);  // batches stay full
    flat.insert(flat.end(), batch.begin(), batch.end());
  }
  EXPECT_EQ(std::count(flat.begin(), flat.end(), 3), 0);
  EXPECT_EQ(std::count(flat.begin(), flat.end(), 9), 0);
  const albef::data::BadSampleReport bad = broken->bad_samples();
  EXPECT_EQ(bad.count, 2);
  ASSERT_EQ(bad.first.size(), 2u);
  EXPECT_NE(bad.first[0].message.find("no such file"), std::string::npos);
}

TEST(SampleLoader, ResumesMidEpochExactly) {
  auto whole = make_loader(20, 2);
  auto resumed = make_loader(20, 2);
  const auto all = epoch_items(*whole, 3);
  const auto rest = epoch_items(*resumed, 3, /*skip=*/2);
  EXPECT_EQ(rest, std::vector<std::vector<int64_t>>(all.begin() + 2, all.end()));
}

TEST(SampleLoader, ErrorsNameTheData) {
  try {
    make_loader(3, 1);  // fewer items than one batch
    ADD_FAILURE() << "no error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("pairs.json"), std::string::npos) << e.what();
  }
  std::set<int64_t> all;
  for (int64_t i = 0; i < 8; ++i) all.insert(i);
  auto unreadable = make_loader(8, 1, all);
  unreadable->start_epoch(0);
  try {
    unreadable->next();
    ADD_FAILURE() << "no error";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("pairs.json"), std::string::npos) << e.what();
  }
}

}  // namespace
