// SIMLA's block masking (BEiT's MaskingGenerator) against the official
// masking_generator.py (tests/data/simla/): with the recorded
// random.uniform / random.randint draws replayed, every call asks for the
// same ranges in the same order and the masks are equal, on the tiny 4x4 grid
// of the SIMLA fixtures and with the official arguments on 16x16 (75, 75, 75
// and an early stop at 74 patches). albef's own draws keep the count and
// block shape rules.

#include "albef/core/error.h"
#include "albef/data/block_masking.h"
#include "albef/io/npy.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

using albef::data::BlockMaskingGenerator;
using albef::data::BlockMaskingOptions;
using albef::testing::data_path;

namespace {

nlohmann::json masking_fixture() {
  std::ifstream in(data_path("simla/masking_draws.json"));
  return nlohmann::json::parse(in);
}

// Replays one call's recorded draws: each entry is [kind, a, b, value]; the
// generator must ask for exactly that kind and range, and use every draw.
class RecordedDraws : public albef::data::MaskingDraws {
 public:
  explicit RecordedDraws(const nlohmann::json& draws) : draws_(draws) {}

  double uniform(double a, double b) override {
    const nlohmann::json& draw = next("uniform");
    EXPECT_DOUBLE_EQ(a, draw[1].get<double>()) << "draw " << used_ - 1;
    EXPECT_DOUBLE_EQ(b, draw[2].get<double>()) << "draw " << used_ - 1;
    return draw[3].get<double>();
  }
  int64_t randint(int64_t a, int64_t b) override {
    const nlohmann::json& draw = next("randint");
    EXPECT_EQ(a, draw[1].get<int64_t>()) << "draw " << used_ - 1;
    EXPECT_EQ(b, draw[2].get<int64_t>()) << "draw " << used_ - 1;
    return draw[3].get<int64_t>();
  }
  bool all_used() const { return used_ == draws_.size(); }

 private:
  const nlohmann::json& next(const std::string& kind) {
    if (used_ >= draws_.size()) throw albef::Error("more draws asked for than recorded (" + kind + ")");
    const nlohmann::json& draw = draws_[used_++];
    EXPECT_EQ(draw[0].get<std::string>(), kind) << "draw " << used_ - 1;
    return draw;
  }

  const nlohmann::json& draws_;
  size_t used_ = 0;
};

BlockMaskingOptions tiny_options() {
  BlockMaskingOptions options;
  options.height = options.width = 4;
  options.num_masking_patches = 5;
  options.min_num_patches = 1;
  return options;
}

}  // namespace

TEST(SimlaMasking, ReplaysTheTinyFixtureMasks) {
  const nlohmann::json fixture = masking_fixture()["masking_draws_tiny"];
  const at::Tensor expected = albef::io::read_npy(data_path("simla/inputs__masks.npy"));
  ASSERT_EQ(expected.sizes(), (at::IntArrayRef{8, 4, 4}));
  const BlockMaskingGenerator generator(tiny_options());
  ASSERT_EQ(fixture["draws"].size(), 8u);
  for (int64_t sample = 0; sample < 8; ++sample) {
    RecordedDraws draws(fixture["draws"][sample]);
    const at::Tensor mask = generator(draws);
    EXPECT_TRUE(draws.all_used()) << "sample " << sample;
    EXPECT_TRUE(at::equal(mask, expected[sample])) << "sample " << sample << "\n" << mask << "\nexpected\n"
                                                   << expected[sample];
    EXPECT_EQ(mask.sum().item<int64_t>(), 5) << "sample " << sample;
  }
}

TEST(SimlaMasking, ReplaysTheOfficial16x16Masks) {
  const nlohmann::json fixture = masking_fixture()["masking_official_16x16"];
  const at::Tensor expected = albef::io::read_npy(data_path("simla/masking_official_16x16_seeds0to3.npy"));
  ASSERT_EQ(expected.sizes(), (at::IntArrayRef{4, 16, 16}));
  const BlockMaskingGenerator generator{BlockMaskingOptions{}};  // the official arguments are the defaults
  const std::vector<int64_t> counts = fixture["masked_counts"];
  ASSERT_EQ(counts, (std::vector<int64_t>{75, 75, 75, 74}));
  for (size_t seed = 0; seed < 4; ++seed) {
    RecordedDraws draws(fixture["draws"][seed]);
    const at::Tensor mask = generator(draws);
    EXPECT_TRUE(draws.all_used()) << "seed " << seed;
    EXPECT_TRUE(at::equal(mask, expected[seed])) << "seed " << seed;
    EXPECT_EQ(mask.sum().item<int64_t>(), counts[seed]) << "seed " << seed;
  }
}

TEST(SimlaMasking, OwnDrawsMaskAtMostTheTargetInBlocks) {
  const BlockMaskingGenerator generator{BlockMaskingOptions{}};
  int64_t full = 0;
  for (uint64_t sample = 0; sample < 200; ++sample) {
    albef::vision::Rng rng = albef::vision::Rng::for_sample(7, 0, sample);
    albef::data::RngMaskingDraws draws(rng);
    const at::Tensor mask = generator(draws);
    ASSERT_EQ(mask.sizes(), (at::IntArrayRef{16, 16}));
    const int64_t count = mask.sum().item<int64_t>();
    // The first block alone covers at least 16 patches; the target is never passed.
    EXPECT_GE(count, 16);
    EXPECT_LE(count, 75);
    full += count == 75;
  }
  // The official generator reaches 75 in about 62% of 2000 calls (early stops take the rest).
  EXPECT_GT(full, 90);
  EXPECT_LT(full, 160);
}

TEST(SimlaMasking, SameRngStreamGivesTheSameMask) {
  const BlockMaskingGenerator generator{BlockMaskingOptions{}};
  albef::vision::Rng first = albef::vision::Rng::for_sample(3, 1, 42), second = albef::vision::Rng::for_sample(3, 1, 42);
  albef::data::RngMaskingDraws a(first), b(second);
  EXPECT_TRUE(at::equal(generator(a), generator(b)));
}

TEST(SimlaMasking, RefusesImpossibleOptions) {
  BlockMaskingOptions too_many = tiny_options();
  too_many.num_masking_patches = 17;
  EXPECT_THROW(BlockMaskingGenerator{too_many}, albef::Error);
  BlockMaskingOptions bad_aspect = tiny_options();
  bad_aspect.min_aspect = 0.0;
  EXPECT_THROW(BlockMaskingGenerator{bad_aspect}, albef::Error);
  BlockMaskingOptions no_min = tiny_options();
  no_min.min_num_patches = 0;
  EXPECT_THROW(BlockMaskingGenerator{no_min}, albef::Error);
}
