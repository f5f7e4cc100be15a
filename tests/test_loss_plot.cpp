// loss_curve.png: a round step interval on the axis, a tick at each, and a
// dashed line where each epoch starts.

#include "train/progress.h"

#include "test_util.h"

#include <opencv2/imgcodecs.hpp>

#include <fstream>

using albef::testing::make_temp_dir;

TEST(LossPlot, StepTicksAreRoundAndAtMostEight) {
  EXPECT_EQ(albef::step_tick_interval(2), 1);
  EXPECT_EQ(albef::step_tick_interval(8), 1);
  EXPECT_EQ(albef::step_tick_interval(9), 2);
  EXPECT_EQ(albef::step_tick_interval(20), 5);
  EXPECT_EQ(albef::step_tick_interval(41), 10);
  EXPECT_EQ(albef::step_tick_interval(1000), 200);
  EXPECT_EQ(albef::step_tick_interval(1600), 200);
  EXPECT_EQ(albef::step_tick_interval(1601), 500);
  EXPECT_EQ(albef::step_tick_interval(2'000'000), 500'000);
}

TEST(LossPlot, DrawsStepTicksAndEpochBoundaries) {
  const std::string dir = make_temp_dir("loss_plot");
  {
    std::ofstream steps(dir + "/train_steps.jsonl");
    for (int epoch = 0; epoch < 2; ++epoch)
      for (int step = 0; step < 10; ++step)
        steps << "{\"epoch\": " << epoch << ", \"step\": " << step << ", \"loss_itc\": 1.0}\n";
  }
  ASSERT_TRUE(albef::write_loss_plot(dir + "/train_steps.jsonl", dir + "/loss_curve.png", {"loss_itc"}));
  const cv::Mat plot = cv::imread(dir + "/loss_curve.png");
  ASSERT_EQ(plot.cols, 900);
  ASSERT_EQ(plot.rows, 500);
  // The plot area spans x 60..880 and y 40..450; step i of 20 is at 60 + 820 * i / 19.
  const auto step_x = [](int i) { return 60 + 820 * i / 19; };
  const auto is_ink = [&](int x, int y) { return plot.at<cv::Vec3b>(y, x) == cv::Vec3b(80, 80, 80); };
  const auto ink_in_column = [&](int x) {
    int count = 0;
    for (int y = 100; y < 440; ++y) count += is_ink(x, y);
    return count;
  };
  EXPECT_GT(ink_in_column(step_x(10)), 100) << "the dashed line where epoch 1 starts";
  EXPECT_EQ(ink_in_column(step_x(5)), 0) << "no line inside an epoch";
  for (int tick : {0, 5, 10, 15}) EXPECT_TRUE(is_ink(step_x(tick), 453)) << "tick at step " << tick;
  EXPECT_FALSE(is_ink(step_x(7), 453));
}
