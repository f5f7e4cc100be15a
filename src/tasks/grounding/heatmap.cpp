#include "tasks/grounding/heatmap.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cmath>

namespace albef::grounding {
namespace {

struct Knot {
  float x, y;
};

// matplotlib's _jet_data: piecewise-linear channels.
float channel(const std::vector<Knot>& knots, float x) {
  if (x <= knots.front().x) return knots.front().y;
  for (size_t i = 1; i < knots.size(); ++i)
    if (x <= knots[i].x)
      return knots[i - 1].y + (knots[i].y - knots[i - 1].y) * (x - knots[i - 1].x) / (knots[i].x - knots[i - 1].x);
  return knots.back().y;
}

// Scales `map` to [0, 1] in place: min to 0, then divided by the max when it is above 0.
void normalise(cv::Mat& map) {
  double low = 0, high = 0;
  cv::minMaxLoc(map, &low, &high);
  map -= low;
  if (high - low > 0) map /= (high - low);
}

}  // namespace

cv::Vec3f jet(float value) {
  static const std::vector<Knot> red = {{0, 0}, {0.35f, 0}, {0.66f, 1}, {0.89f, 1}, {1, 0.5f}};
  static const std::vector<Knot> green = {{0, 0}, {0.125f, 0}, {0.375f, 1}, {0.64f, 1}, {0.91f, 0}, {1, 0}};
  static const std::vector<Knot> blue = {{0, 0.5f}, {0.11f, 1}, {0.34f, 1}, {0.65f, 0}, {1, 0}};
  const float x = std::clamp(value, 0.0f, 1.0f);
  return {channel(red, x), channel(green, x), channel(blue, x)};
}

cv::Mat overlay_heatmap(const cv::Mat& rgb, const at::Tensor& map) {
  ALBEF_CHECK(rgb.type() == CV_8UC3 && !rgb.empty(), "overlay_heatmap needs an RGB image");
  ALBEF_CHECK(map.dim() == 2, "a Grad-CAM map is [g, g], got ", map.sizes());
  const at::Tensor cpu = map.to(at::kCPU, at::kFloat).contiguous();
  cv::Mat small(static_cast<int>(cpu.size(0)), static_cast<int>(cpu.size(1)), CV_32F, cpu.data_ptr<float>());
  cv::Mat attention = small.clone();
  normalise(attention);
  cv::resize(attention, attention, rgb.size(), 0, 0, cv::INTER_CUBIC);
  const double sigma = 0.02 * std::max(rgb.cols, rgb.rows);
  cv::GaussianBlur(attention, attention, cv::Size(0, 0), sigma, sigma, cv::BORDER_REFLECT);  // scipy's default mode
  normalise(attention);

  cv::Mat out(rgb.size(), CV_8UC3);
  for (int y = 0; y < rgb.rows; ++y) {
    for (int x = 0; x < rgb.cols; ++x) {
      const float a = attention.at<float>(y, x);
      const float weight = std::pow(std::max(a, 0.0f), 0.7f);
      const cv::Vec3f colour = jet(a);
      const cv::Vec3b pixel = rgb.at<cv::Vec3b>(y, x);
      cv::Vec3b& blended = out.at<cv::Vec3b>(y, x);
      for (int c = 0; c < 3; ++c)
        blended[c] = cv::saturate_cast<uchar>(255.0f * ((1 - weight) * pixel[c] / 255.0f + weight * colour[c]));
    }
  }
  return out;
}

void annotate_heatmap(cv::Mat& rgb, const std::string& caption) {
  const int side = std::min(rgb.cols, rgb.rows);
  const double scale = std::max(0.35, side / 900.0);
  const int thickness = std::max(1, static_cast<int>(std::lround(scale * 1.5)));
  const int pad = std::max(3, side / 80);

  // The colour scale: a bar at the right edge, high at the top.
  const int bar_width = std::max(6, side / 40), bar_height = std::max(20, rgb.rows / 2);
  const int bar_x = rgb.cols - bar_width - pad, bar_y = pad;
  for (int y = 0; y < bar_height; ++y) {
    const cv::Vec3f colour = jet(1.0f - static_cast<float>(y) / static_cast<float>(bar_height - 1));
    cv::line(rgb, {bar_x, bar_y + y}, {bar_x + bar_width - 1, bar_y + y},
             cv::Scalar(255 * colour[0], 255 * colour[1], 255 * colour[2]));
  }
  cv::rectangle(rgb, {bar_x, bar_y}, {bar_x + bar_width - 1, bar_y + bar_height - 1}, cv::Scalar(255, 255, 255), 1);
  int baseline = 0;
  for (const auto& [label, y] : {std::pair<const char*, int>{"high", bar_y + bar_height / 8},
                                 std::pair<const char*, int>{"low", bar_y + bar_height}}) {
    const cv::Size size = cv::getTextSize(label, cv::FONT_HERSHEY_SIMPLEX, scale * 0.8, thickness, &baseline);
    const cv::Point at(bar_x - size.width - pad, y);
    cv::putText(rgb, label, at, cv::FONT_HERSHEY_SIMPLEX, scale * 0.8, cv::Scalar(0, 0, 0), thickness + 2, cv::LINE_AA);
    cv::putText(rgb, label, at, cv::FONT_HERSHEY_SIMPLEX, scale * 0.8, cv::Scalar(255, 255, 255), thickness,
                cv::LINE_AA);
  }

  // The caption on a dark band along the bottom (ASCII only: Hershey fonts).
  std::string text;
  for (unsigned char c : caption) text += c < 0x80 ? static_cast<char>(c) : '?';
  cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &baseline);
  while (size.width > rgb.cols - 2 * pad && text.size() > 4) {
    text = text.substr(0, text.size() - 4) + "...";
    size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &baseline);
  }
  const int band = size.height + baseline + 2 * pad;
  cv::Mat region = rgb(cv::Rect(0, rgb.rows - band, rgb.cols, band));
  region *= 0.35;
  cv::putText(rgb, text, {pad, rgb.rows - pad - baseline}, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(255, 255, 255),
              thickness, cv::LINE_AA);
}

std::vector<unsigned char> encode_png(const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<unsigned char> bytes;
  if (!cv::imencode(".png", bgr, bytes)) fail("cannot encode a PNG of ", rgb.cols, "x", rgb.rows);
  return bytes;
}

}  // namespace albef::grounding
