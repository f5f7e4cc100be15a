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
                      FusionImages& images, const at::Tensor& image_rows, int64_t batch, const at::Tensor& text_rows) {
  ALBEF_CHECK(text_masks.dim() == 2 && text_masks.size(0) == text_states.size(0) &&
                  text_masks.size(1) == text_states.size(1),
              "text states [", text_states.sizes(), "] and masks [", text_masks.sizes(), "] differ in rows or tokens");
  if (text_rows.defined()) {
    ALBEF_CHECK(text_rows.dim() == 1, "text_rows must be [N], got [", text_rows.sizes(), "]");
    const int64_t lowest = text_rows.numel() > 0 ? text_rows.min().item<int64_t>() : 0;
    const int64_t highest = text_rows.numel() > 0 ? text_rows.max().item<int64_t>() : 0;
    ALBEF_CHECK(text_rows.numel() == 0 || (lowest >= 0 && highest < text_states.size(0)), "text_rows run from ",
                lowest, " to ", highest, ", outside the ", text_states.size(0), " text states");
  }
  const at::Tensor masks_of_rows = text_rows.defined() ? text_masks.index_select(0, text_rows) : text_masks;
  const int64_t rows = masks_of_rows.size(0);
  if (batch <= 0) batch = std::max<int64_t>(rows, 1);
  // One image per row: the image-tensor fuse, which inference runs in slices.
  const bool paired = !image_rows.defined() && images.embeds().size(0) == rows && rows > 1;
  // Captions come padded to the longest (the official evaluation pads to 30 tokens; COCO's average 12) and
  // padding is masked out of every attention, so the rows go through the fusion shortest first, in passes
  // of at most `batch` rows and of the model's inference tokens per pass, each pass cut to its longest
  // caption. The [CLS] logits are those of the padded rows, in the callers' order.
  const at::Tensor extents =  // one past each row's last real token
      (masks_of_rows.ne(0) * at::arange(1, masks_of_rows.size(1) + 1, masks_of_rows.options().dtype(at::kLong)))
          .amax(1)
          .cpu();
  const at::Tensor order = std::get<1>(extents.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  const bool reorder = !order.equal(at::arange(rows));
  const at::Tensor sorted_extents = extents.index_select(0, order);
  const int64_t* extent = sorted_extents.data_ptr<int64_t>();
  const int64_t tokens_per_pass = model->fusion_tokens_per_pass();
  const auto take = [&](const at::Tensor& values, int64_t begin, int64_t end) {
    return reorder ? values.index_select(0, order.slice(0, begin, end).to(values.device()))
                   : values.slice(0, begin, end);
  };
  // Rows [begin, end) of the pass order, as rows of text_states, cut to `width` tokens before they are
  // gathered (a gathered row is a copy: of 30 tokens where the pass needs 11, say).
  const at::Tensor state_rows = text_rows.defined() ? text_rows.index_select(0, order.to(text_rows.device())) : order;
  const auto take_states = [&](int64_t begin, int64_t end, int64_t width) {
    const at::Tensor narrow = text_states.slice(1, 0, width);
    return text_rows.defined() ? narrow.index_select(0, state_rows.slice(0, begin, end).to(text_states.device()))
                               : take(narrow, begin, end);
  };
  std::vector<at::Tensor> logits;
  for (int64_t begin = 0; begin < rows;) {
    int64_t end = begin + 1;  // extents ascend: the last row of a pass sets its width
    while (end < rows && end - begin < batch &&
           (tokens_per_pass == 0 || (end + 1 - begin) * extent[end] <= tokens_per_pass))
      ++end;
    const int64_t width = std::max<int64_t>(1, extent[end - 1]);
    at::Tensor texts = take_states(begin, end, width);
    const at::Tensor masks = take(masks_of_rows.slice(1, 0, width), begin, end);
    // The head reads the [CLS] row: the last fusion layer computes that row alone. The pass's states are
    // moved in, so that they go once the first layer has read them (candidates gathered from a gallery
    // are a copy: 3 MB of a 1,020-token pass, otherwise held through all six layers).
    const at::Tensor fused =
        paired ? model->fuse(texts, masks, take(images.embeds(), begin, end), /*class_token_only=*/true)
               : model->fuse(std::move(texts), masks, images,
                             image_rows.defined() ? take(image_rows, begin, end) : at::Tensor(),
                             /*class_token_only=*/true);
    logits.push_back(itm_logits(model, fused).to(at::kFloat));
    begin = end;
  }
  const at::Tensor sorted = logits.size() == 1 ? logits[0] : at::cat(logits);
  return reorder ? at::empty_like(sorted).index_copy_(0, order.to(sorted.device()), sorted) : sorted;
}

}  // namespace albef
