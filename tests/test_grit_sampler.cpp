// GRIT-VLP's grouped sampler against the official GRIT_utils.py runs of the
// fixtures (tests/data/grit/sampler_*.json): with the recorded draws
// injected, the grouped order, the mini-batch shuffle, the batches and the
// ranks' shares are equal; the remainder case the official code crashes on
// is grouped; the state restores exactly; `albef grit-group` does the same
// from the command line.

#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "tasks/pretrain/grit_sampler.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;

namespace {

nlohmann::json sampler_case(const std::string& name) {
  std::ifstream in(data_path("grit/sampler_" + name + ".json"));
  return nlohmann::json::parse(in);
}

// The features and indices of a case (q32 reuses q64's).
struct CaseInputs {
  at::Tensor image_feat, text_feat, idx;
};

CaseInputs case_inputs(const std::string& name) {
  const std::string files = name == "q32" ? "q64" : name;
  auto read = [&](const std::string& what) {
    return albef::io::read_npy(data_path("grit/npy/sampler_" + files + "__" + what + ".npy"));
  };
  return {read("image_feat"), read("text_feat"), read("idx")};
}

albef::grit::GroupingOptions options_of(const nlohmann::json& c) {
  albef::grit::GroupingOptions options;
  options.queue_size = c["queue_size"];
  options.search_space = c["search_space"];
  options.batch_size = c["batch_size"];
  options.embed_dim = c["embed_dim"];
  return options;
}

// One epoch as Pretrain.py drives GRIT: collect every step, then the mini-batch shuffle.
std::vector<int64_t> run_epoch(albef::grit::EpochGrouper& grouper, const CaseInputs& in, int64_t batch, float temp,
                               albef::grit::Draws& draws, int64_t first_step = 0) {
  const int64_t steps = in.idx.size(0) / batch;
  for (int64_t step = first_step; step < steps; ++step)
    grouper.collect(step, in.image_feat.slice(0, step * batch, (step + 1) * batch),
                    in.text_feat.slice(0, step * batch, (step + 1) * batch),
                    in.idx.slice(0, step * batch, (step + 1) * batch), temp, draws);
  return albef::grit::shuffle_mini_batches(grouper.grouped(), batch, draws);
}

}  // namespace

class GritSamplerCase : public ::testing::TestWithParam<std::string> {};

TEST_P(GritSamplerCase, MatchesOfficialWithRecordedDraws) {
  const nlohmann::json c = sampler_case(GetParam());
  const CaseInputs in = case_inputs(GetParam());
  ASSERT_EQ(in.idx.size(0), c["N"].get<int64_t>());
  const int64_t batch = c["batch_size"];
  albef::grit::RecordedDraws draws(c, "sampler_" + GetParam() + ".json");
  albef::grit::EpochGrouper grouper(options_of(c), c["num_steps"]);
  const std::vector<int64_t> final_order = run_epoch(grouper, in, batch, c["temp"].get<float>(), draws);
  EXPECT_EQ(grouper.grouped(), c["G_index_set"].get<std::vector<int64_t>>());
  EXPECT_EQ(final_order, c["final_order"].get<std::vector<int64_t>>());
  std::vector<std::vector<int64_t>> batches;
  for (size_t b = 0; b < final_order.size(); b += static_cast<size_t>(batch))
    batches.emplace_back(final_order.begin() + static_cast<std::ptrdiff_t>(b),
                         final_order.begin() + static_cast<std::ptrdiff_t>(b + batch));
  EXPECT_EQ(batches, c["final_batches"].get<std::vector<std::vector<int64_t>>>());
  // Sampler_for_GRIT with two processes: contiguous halves.
  for (int64_t rank = 0; rank < 2; ++rank)
    EXPECT_EQ(albef::grit::rank_share(final_order, 2, rank), c["sampler_world2"][rank].get<std::vector<int64_t>>());
  // Every recorded start was used: one more grouping call would run out.
  EXPECT_THROW(draws.start(16), albef::Error);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GritSamplerCase, ::testing::Values("q64", "q32", "rem"));

TEST(GritSampler, GroupingCallsMatchOfficialOneByOne) {
  // Each recorded grouping call of q64, re-run from its shuffled sub-queue.
  const nlohmann::json c = sampler_case("q64");
  const CaseInputs in = case_inputs("q64");
  const std::vector<int64_t> permutation = c["phases"][0]["randperm"];
  const at::Tensor order = at::tensor(permutation, at::kLong);
  const at::Tensor images = in.image_feat.index_select(0, order), texts = in.text_feat.index_select(0, order);
  const at::Tensor ids = in.idx.index_select(0, order);
  for (int64_t call = 0; call < 4; ++call) {
    const std::vector<int64_t> positions = albef::grit::group_search_space(
        images.slice(0, call * 16, (call + 1) * 16), texts.slice(0, call * 16, (call + 1) * 16), 0.07f,
        c["grouping_calls"][call]["start"]);
    std::vector<int64_t> out;
    for (const int64_t p : positions) out.push_back(ids[call * 16 + p].item<int64_t>());
    EXPECT_EQ(out, c["grouping_calls"][call]["out"].get<std::vector<int64_t>>()) << "call " << call;
  }
}

TEST(GritSampler, EmptyRemainderWhereTheOfficialCodeCrashesIsGrouped) {
  // 48 pairs, queue 32, search space 16: the last step leaves the pointer at
  // 16 = 1 x search_space; the official grouping of the empty rest crashes
  // ("random_ expects 'from' to be less than 'to'"). albef groups the full
  // search space and stops.
  const nlohmann::json c = sampler_case("crash");
  ASSERT_TRUE(c.contains("error"));
  const CaseInputs q64 = case_inputs("q64");
  const CaseInputs in{q64.image_feat.slice(0, 0, 48), q64.text_feat.slice(0, 0, 48), q64.idx.slice(0, 0, 48)};
  albef::grit::GeneratorDraws draws(5);
  albef::grit::EpochGrouper grouper(options_of(c), 12);
  const std::vector<int64_t> final_order = run_epoch(grouper, in, 4, 0.07f, draws);
  std::vector<int64_t> expected(in.idx.data_ptr<int64_t>(), in.idx.data_ptr<int64_t>() + 48);
  std::vector<int64_t> grouped = grouper.grouped(), shuffled = final_order;
  std::sort(expected.begin(), expected.end());
  std::sort(grouped.begin(), grouped.end());
  std::sort(shuffled.begin(), shuffled.end());
  EXPECT_EQ(grouped, expected);
  EXPECT_EQ(shuffled, expected);
}

TEST(GritSampler, StartNeverPicksTheLastPair) {
  albef::grit::GeneratorDraws draws(1);
  std::vector<int64_t> seen(4, 0);
  for (int i = 0; i < 400; ++i) ++seen[static_cast<size_t>(draws.start(4))];
  EXPECT_EQ(seen[3], 0);  // torch.randint(0, n - 1): high is exclusive
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[2], 0);
}

TEST(GritSampler, StateRestoresMidEpochExactly) {
  const nlohmann::json c = sampler_case("rem");
  const CaseInputs in = case_inputs("rem");
  albef::grit::GeneratorDraws straight_draws(3);
  albef::grit::EpochGrouper straight(options_of(c), 14);
  const std::vector<int64_t> expected = run_epoch(straight, in, 4, 0.07f, straight_draws);

  // Nine steps (one full queue grouped), then state saved and restored into fresh objects.
  albef::grit::GeneratorDraws draws(3);
  albef::grit::EpochGrouper first(options_of(c), 14);
  for (int64_t step = 0; step < 9; ++step)
    first.collect(step, in.image_feat.slice(0, step * 4, step * 4 + 4), in.text_feat.slice(0, step * 4, step * 4 + 4),
                  in.idx.slice(0, step * 4, step * 4 + 4), 0.07f, draws);
  albef::grit::GeneratorDraws resumed_draws(99);
  resumed_draws.set_state(draws.state());
  albef::grit::EpochGrouper resumed(options_of(c), 14);
  resumed.restore(first.state(), "test");
  EXPECT_EQ(run_epoch(resumed, in, 4, 0.07f, resumed_draws, 9), expected);
}

TEST(GritSampler, SettingsAreCheckedAsTheOfficialAsserts) {
  albef::grit::GroupingOptions options;
  options.queue_size = 48;
  options.search_space = 16;
  options.batch_size = 8;
  options.source = "Pretrain_GRIT.yaml";
  options.check();
  options.search_space = 20;  // queue_size not a multiple of it
  try {
    options.check();
    FAIL() << "accepted search_space 20";
  } catch (const albef::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Pretrain_GRIT.yaml"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("search_space"), std::string::npos) << e.what();
  }
}

TEST(GritGroupCli, MatchesOfficialWithRecordedDraws) {
  const std::string dir = make_temp_dir("grit_group");
  const std::string npy = data_path("grit/npy/sampler_rem__");
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " grit-group --image_feat " + npy + "image_feat.npy --text_feat " +
                            npy + "text_feat.npy --indices " + npy + "idx.npy --queue_size 32 --search_space 16 " +
                            "--batch_size 4 --temp 0.07 --out " + dir + "/order.json --draws " +
                            data_path("grit/sampler_rem.json"),
                        &output),
            0)
      << output;
  std::ifstream in(dir + "/order.json");
  const nlohmann::json result = nlohmann::json::parse(in);
  const nlohmann::json c = sampler_case("rem");
  EXPECT_EQ(result["grouped"], c["G_index_set"]);
  EXPECT_EQ(result["final_order"], c["final_order"]);
  EXPECT_EQ(result["batches"], c["final_batches"]);

  // A draws file that runs out is named in the error.
  nlohmann::json short_draws = c;
  short_draws["phases"].erase(1);
  std::ofstream(dir + "/short.json") << short_draws.dump();
  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " grit-group --image_feat " + npy + "image_feat.npy --text_feat " +
                            npy + "text_feat.npy --indices " + npy + "idx.npy --queue_size 32 --search_space 16 " +
                            "--batch_size 4 --out " + dir + "/short_order.json --draws " + dir + "/short.json",
                        &output),
            0);
  EXPECT_NE(output.find("short.json"), std::string::npos) << output;
}
