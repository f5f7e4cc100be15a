#pragma once
// Grad-CAM maps drawn over their image, as the official visualisation
// notebook draws them (getAttMap), with a legend and the caption on the
// picture.

#include <ATen/core/Tensor.h>
#include <opencv2/core.hpp>

#include <string>

namespace albef::grounding {

/// getAttMap(img, map): the map scaled to [0, 1], resized (bicubic) to the
/// image, blurred (Gaussian, sigma 0.02 x the longer side) and scaled to
/// [0, 1] again, coloured with matplotlib's jet, and blended as (1 - a^0.7) x
/// image + a^0.7 x colour. `rgb` is CV_8UC3; returns CV_8UC3 of its size.
cv::Mat overlay_heatmap(const cv::Mat& rgb, const at::Tensor& map);

/// Draws, inside the picture (its size unchanged), the colour scale at the
/// right edge (low to high) and `caption` on a band along the bottom.
void annotate_heatmap(cv::Mat& rgb, const std::string& caption);

/// matplotlib's jet colour map at `value` in [0, 1]: {r, g, b} in [0, 1].
cv::Vec3f jet(float value);

/// PNG bytes of an RGB CV_8UC3 image.
std::vector<unsigned char> encode_png(const cv::Mat& rgb);

}  // namespace albef::grounding
