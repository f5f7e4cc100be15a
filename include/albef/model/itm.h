#pragma once
/// @file itm.h
/// @brief The image-text matching head (`itm_head`) and the one helper that
/// scores pairs with it: `albef score`, the retrieval evaluation's re-ranking
/// and gallery search all rank through `itm_logits`.

#include "albef/model/albef.h"

namespace albef {

/// `itm_head`: Linear(hidden, 2) on the fused [CLS] state (class 1 = match),
/// as models/model_pretrain.py and model_retrieval.py register it.
HeadSpec itm_head_spec();

/// ITM logits [N, 2] (float32) of text row i fused with image `image_rows[i]`
/// of `images` (or with image i, or with the only image, whose keys and
/// values then serve every row: see FusionImages). `text_states` and
/// `text_masks` are the text encoder's output [T, L, H] (token ids [T, L]
/// for a single-stream model) and mask [T, L];
/// the rows are all T of them, or where given the N rows `text_rows` of
/// them, gathered a pass at a time (a gallery's candidates are not copied
/// out whole: 256 of COCO's captions are 23 MB of float32 states).
/// The rows go through the fusion shortest caption first, each pass cut to
/// its longest caption (padding is masked out of every attention), at most
/// `batch` rows (when > 0) and, in inference, the model's `fusion_tokens_per_pass`
/// tokens at a time; the logits come back in the rows' order.
at::Tensor itm_logits(AlbefModel& model, const at::Tensor& text_states, const at::Tensor& text_masks,
                      FusionImages& images, const at::Tensor& image_rows = {}, int64_t batch = 0,
                      const at::Tensor& text_rows = {});

/// `itm_head` on fusion output already computed: [B, L, H] -> [B, 2].
at::Tensor itm_logits(AlbefModel& model, const at::Tensor& fused);

}  // namespace albef
