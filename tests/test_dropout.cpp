// ops/dropout: the parallel keep mask and the dropout built on it.

#include "ops/dropout.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

namespace {

// Restores the intra-op thread count a test changes.
struct ThreadCount {
  int saved = at::get_num_threads();
  explicit ThreadCount(int threads) { at::set_num_threads(threads); }
  ~ThreadCount() { at::set_num_threads(saved); }
};

}  // namespace

TEST(Dropout, KeepMaskHasTheRequestedRate) {
  at::manual_seed(0);
  for (const double keep : {0.9, 0.5, 0.1}) {
    const at::Tensor mask = albef::ops::draw_keep_mask({1000, 1000}, keep);
    ASSERT_EQ(mask.scalar_type(), at::kBool);
    ASSERT_EQ(mask.sizes(), at::IntArrayRef({1000, 1000}));
    // 1e6 draws: the standard error of the rate is at most 5e-4.
    EXPECT_NEAR(mask.to(at::kDouble).mean().item<double>(), keep, 3e-3) << keep;
    // Neighbouring rows are draws of their own.
    EXPECT_FALSE(at::equal(mask[0], mask[1]));
  }
  EXPECT_TRUE(albef::ops::draw_keep_mask({4097}, 1.0).all().item<bool>());
  EXPECT_FALSE(albef::ops::draw_keep_mask({4097}, 0.0).any().item<bool>());
  EXPECT_THROW(albef::ops::draw_keep_mask({3}, 1.5), std::exception);
}

TEST(Dropout, KeepMaskFollowsTheSeedNotTheThreadCount) {
  const std::vector<int64_t> sizes = {7, 100003};  // an odd count: the last pair is half used
  at::Tensor one_thread, two_threads, other_seed;
  {
    ThreadCount threads(1);
    at::manual_seed(42);
    one_thread = albef::ops::draw_keep_mask(sizes, 0.9);
  }
  {
    ThreadCount threads(2);
    at::manual_seed(42);
    two_threads = albef::ops::draw_keep_mask(sizes, 0.9);
    at::manual_seed(43);
    other_seed = albef::ops::draw_keep_mask(sizes, 0.9);
  }
  EXPECT_TRUE(at::equal(one_thread, two_threads));
  EXPECT_FALSE(at::equal(one_thread, other_seed));
  // Consecutive draws advance the default generator.
  EXPECT_FALSE(at::equal(albef::ops::draw_keep_mask(sizes, 0.9), albef::ops::draw_keep_mask(sizes, 0.9)));
}

TEST(Dropout, ZeroesOrScalesAndPassesTheSameMaskBack) {
  const double p = 0.25;
  at::manual_seed(1);
  const at::Tensor x = (at::rand({64, 300}) + 0.5).set_requires_grad(true);
  const at::Tensor y = albef::ops::dropout(x, p, /*train=*/true);
  const at::Tensor kept = y != 0;
  EXPECT_NEAR(kept.to(at::kDouble).mean().item<double>(), 1.0 - p, 0.01);
  EXPECT_TRUE(at::allclose(y.masked_select(kept), x.masked_select(kept) / (1.0 - p)));
  const at::Tensor grad = torch::autograd::grad({y.sum()}, {x})[0];
  EXPECT_TRUE(at::allclose(grad, kept.to(at::kFloat) / (1.0 - p)));
  // bf16 inputs (autocast) keep their dtype.
  EXPECT_EQ(albef::ops::dropout(x.detach().to(at::kBFloat16), p, true).scalar_type(), at::kBFloat16);
  // Outside training, or with p = 0, the input itself.
  EXPECT_TRUE(albef::ops::dropout(x, p, /*train=*/false).is_same(x));
  EXPECT_TRUE(albef::ops::dropout(x, 0.0, true).is_same(x));
  EXPECT_THROW(albef::ops::dropout(x, 1.0, true), std::exception);
}
