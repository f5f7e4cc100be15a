#include "albef/data/simla_views.h"

#include "albef/core/error.h"
#include "albef/vision/dalle_pixels.h"
#include "albef/vision/image.h"

namespace albef::data {
namespace {

SimlaViewOptions with_patch_grid(SimlaViewOptions options) {
  // 16-pixel ViT patches; the tokenizer's 8-pixel cells at R/2 then match them one for one.
  ALBEF_CHECK(options.image_res > 0 && options.image_res % 16 == 0, "image_res must be a positive multiple of 16, got ",
              options.image_res);
  options.masking.height = options.masking.width = options.image_res / 16;
  return options;
}

}  // namespace

SimlaViewTransform::SimlaViewTransform(SimlaViewOptions options)
    : options_(with_patch_grid(options)),
      vit_transform_(options_.image_res, vision::kPretrainScaleMin),
      tokenizer_transform_(options_.image_res / 2, vision::kPretrainScaleMin),
      masking_(options_.masking) {}

SimlaViews SimlaViewTransform::operator()(const cv::Mat& rgb, vision::Rng& rng) const {
  SimlaViews views;
  if (options_.independent_views) {
    // The official order: the tokenizer's view, then the ViT's, then the mask.
    const vision::TrainStages tokenizer_view =
        tokenizer_transform_.replay(rgb, tokenizer_transform_.sample(rgb.cols, rgb.rows, rng));
    views.image_for_tokenization = vision::tokenizer_tensor(tokenizer_view.augmented);
    views.image = vit_transform_(rgb, rng);
  } else {
    const vision::TrainStages vit_view = vit_transform_.replay(rgb, vit_transform_.sample(rgb.cols, rgb.rows, rng));
    views.image = vit_view.tensor;
    const int half = options_.image_res / 2;
    views.image_for_tokenization = vision::tokenizer_tensor(vision::resize_bicubic_pil(vit_view.augmented, half, half));
  }
  RngMaskingDraws draws(rng);
  views.masks = masking_(draws);
  return views;
}

}  // namespace albef::data
