#include "albef/model/itm.h"

#include "ops/linear.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>
#include <torch/nn/modules/linear.h>

namespace albef {

HeadSpec itm_head_spec() {
  HeadSpec spec;
  spec.name = "itm_head";
  spec.make = [](const Config& config) -> std::shared_ptr<torch::nn::Module> {
    return torch::nn::Linear(config.bert.hidden_size, 2).ptr();
  };
  return spec;
}

at::Tensor itm_logits(AlbefModel& model, const at::Tensor& fused) {
  return ops::linear(model->head_as<torch::nn::LinearImpl>("itm_head"), fused.select(1, 0));
}

at::Tensor itm_logits(AlbefModel& model, const at::Tensor& text_states, const at::Tensor& text_masks,
                      FusionImages& images, const at::Tensor& image_rows, int64_t batch) {
  const int64_t rows = text_states.size(0);
  ALBEF_CHECK(text_masks.size(0) == rows, "text states [", text_states.sizes(), "] and masks [", text_masks.sizes(),
              "] differ in rows");
  if (batch <= 0) batch = std::max<int64_t>(rows, 1);
  // One image per row: the image-tensor fuse, which inference runs in slices.
  const bool paired = !image_rows.defined() && images.embeds().size(0) == rows && rows > 1;
  std::vector<at::Tensor> logits;
  for (int64_t begin = 0; begin < rows; begin += batch) {
    const int64_t end = std::min(rows, begin + batch);
    const at::Tensor texts = text_states.slice(0, begin, end), masks = text_masks.slice(0, begin, end);
    const at::Tensor fused =
        paired ? model->fuse(texts, masks, images.embeds().slice(0, begin, end))
               : model->fuse(texts, masks, images, image_rows.defined() ? image_rows.slice(0, begin, end) : at::Tensor());
    logits.push_back(itm_logits(model, fused).to(at::kFloat));
  }
  return logits.size() == 1 ? logits[0] : at::cat(logits);
}

}  // namespace albef
