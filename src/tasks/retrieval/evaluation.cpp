#include "tasks/retrieval/evaluation.h"

#include "albef/core/error.h"
#include "albef/model/itm.h"
#include "albef/vision/image.h"
#include "core/rows.h"
#include "core/tensor_heap.h"
#include "ops/linear.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

namespace albef {
namespace {

// The official split of queries over ranks: step = n / world + 1.
std::pair<int64_t, int64_t> rank_rows(int64_t rows, int rank, int world_size) {
  const int64_t step = rows / world_size + 1;
  const int64_t start = std::min<int64_t>(rows, rank * step);
  return {start, std::min(rows, start + step)};
}

}  // namespace

at::Tensor rerank_one_image(AlbefModel& model, const at::Tensor& image_tokens, const at::Tensor& text_states,
                            const at::Tensor& text_masks, const at::Tensor& text_rows, int64_t batch) {
  FusionImages image(image_tokens, /*keep_key_values=*/true);
  return itm_logits(model, text_states, text_masks, image, {}, batch, text_rows).select(1, 1);
}

RetrievalScores evaluate_retrieval(AlbefModel& model, const text::BertTokenizer& tokenizer,
                                   const std::vector<std::string>& image_paths, const std::vector<std::string>& texts,
                                   const RetrievalEvalOptions& options) {
  ALBEF_CHECK(!image_paths.empty() && !texts.empty(), "empty gallery: ", image_paths.size(), " images, ",
              texts.size(), " texts");
  // Texts: one padding length for all, so any subset can be batched.
  const text::BatchEncoding encoding = tokenizer.encode_batch(texts, options.max_text_length, text::Padding::Longest);
  const int64_t res = model->config().image_res;
  return evaluate_retrieval(
      model, static_cast<int64_t>(image_paths.size()),
      [&](int64_t begin, int64_t end) {
        const std::vector<std::string> paths(image_paths.begin() + begin, image_paths.begin() + end);
        return vision::load_test_pixels(paths, res);
      },
      encoding, options);
}

RetrievalScores evaluate_retrieval(AlbefModel& model, int64_t n_images, const ImageBatches& images,
                                   const text::BatchEncoding& texts, const RetrievalEvalOptions& options) {
  const int64_t n_texts = texts.input_ids.size(0);
  ALBEF_CHECK(n_images > 0 && n_texts > 0, "empty gallery: ", n_images, " images, ", n_texts, " texts");
  at::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const c10::Device device = model->temp.device();
  PrecisionGuard precision(options.precision, device);
  const text::BatchEncoding& encoding = texts;
  const at::Tensor text_masks = encoding.attention_mask.to(device);
  // Each encoder pass's states go straight into the gallery's (a batch's, or all of them joined, would be
  // held twice: COCO-5k's image tokens are 3.9 GB in float32, a batch of 64 images' 50 MB).
  at::Tensor text_states_of_all, text_feats, image_tokens, image_feats;
  for (int64_t begin = 0; begin < n_texts; begin += options.text_batch) {
    const int64_t end = std::min(n_texts, begin + options.text_batch);
    model->encode_text(encoding.input_ids.slice(0, begin, end).to(device), text_masks.slice(0, begin, end),
                       [&](int64_t first, const at::Tensor& states) {
                         write_rows(text_states_of_all, n_texts, begin + first, states);
                         write_rows(text_feats, n_texts, begin + first, model->text_feature(states).to(at::kFloat));
                       });
  }
  // What the re-ranking fuses: the texts' states (token ids for the single-stream BERT).
  const at::Tensor text_states = model->fusion_input(encoding.input_ids.to(device), text_states_of_all);
  text_states_of_all = at::Tensor();
  // Each phase's passes leave free blocks of their own shapes, which the next phase's rarely fit: handed
  // back, they are not resident beside the next phase's (int8 retrieval's peak: 1.22x -> 1.19x the weights).
  give_back_free_pages();

  // Images: features for ITC, and every token for the fusion, kept as its key and value products read
  // them (bf16 under bf16 autocast: half the memory for the same products).
  for (int64_t begin = 0; begin < n_images; begin += options.image_batch) {
    const int64_t end = std::min(n_images, begin + options.image_batch);
    model->encode_image(images(begin, end).to(device), [&](int64_t first, const at::Tensor& tokens) {
      write_rows(image_feats, n_images, begin + first, model->image_feature(tokens).to(at::kFloat));
      write_rows(image_tokens, n_images, begin + first, ops::product_input(tokens));
    });
  }
  give_back_free_pages();

  // ITC similarities in float32 in every precision, as the official evaluation computes them: under bf16
  // autocast they would be rounded to 8 bits, enough to swap captions whose similarities differ by 1e-3.
  const at::Tensor sims = [&] {
    const AutocastOff fp32;
    return at::matmul(image_feats, text_feats.t());  // [images, texts]
  }();
  RetrievalScores scores{at::full({n_images, n_texts}, -100.0f), at::full({n_texts, n_images}, -100.0f),
                         sims.to(at::kCPU)};

  // Each image scores every text that either direction ranks it with: its own top-k texts (image -> text)
  // and the texts whose top-k images hold it (text -> image). The image's keys and values serve them all,
  // and a pair both directions rank (the official code scores it twice) is scored once.
  const int64_t k_texts = std::min(options.k_test, n_texts), k_images = std::min(options.k_test, n_images);
  const auto [i_begin, i_end] = rank_rows(n_images, options.rank, options.world_size);
  const auto [t_begin, t_end] = rank_rows(n_texts, options.rank, options.world_size);
  std::vector<std::vector<int64_t>> texts_of_image(n_images);  // text -> image queries, by candidate image
  if (t_end > t_begin) {
    const at::Tensor top = std::get<1>(sims.t().slice(0, t_begin, t_end).topk(k_images, 1)).cpu();  // [T, k]
    const auto top_a = top.accessor<int64_t, 2>();
    for (int64_t t = 0; t < top.size(0); ++t)
      for (int64_t k = 0; k < k_images; ++k) texts_of_image[top_a[t][k]].push_back(t_begin + t);
  }
  for (int64_t j = 0; j < n_images; ++j) {
    const bool image_query = j >= i_begin && j < i_end;
    if (!image_query && texts_of_image[j].empty()) continue;
    std::vector<int64_t> texts = texts_of_image[j];
    std::vector<int64_t> own;  // image -> text: its top-k texts
    if (image_query) {
      const at::Tensor top = std::get<1>(sims[j].topk(k_texts)).cpu();
      own.assign(top.data_ptr<int64_t>(), top.data_ptr<int64_t>() + k_texts);
      texts.insert(texts.end(), own.begin(), own.end());
      std::sort(texts.begin(), texts.end());
      texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
    }
    const at::Tensor rows = at::tensor(texts, at::kLong);
    const at::Tensor itm = rerank_one_image(model, image_tokens.slice(0, j, j + 1), text_states, text_masks,
                                            rows.to(device), options.fusion_batch)
                               .cpu();
    scores.pairs_scored += rows.size(0);
    if (image_query) {  // the own texts' places among the scored ones
      const at::Tensor own_rows = at::tensor(own, at::kLong);
      scores.i2t[j].index_put_({own_rows}, itm.index_select(0, at::searchsorted(rows, own_rows)));
    }
    if (!texts_of_image[j].empty()) {
      const at::Tensor queries = at::tensor(texts_of_image[j], at::kLong);
      scores.t2i.index_put_({queries, at::full_like(queries, j)}, itm.index_select(0, at::searchsorted(rows, queries)));
    }
  }
  if (was_training) model->train();
  return scores;
}

nlohmann::json itm_eval(const at::Tensor& scores_i2t, const at::Tensor& scores_t2i,
                        const std::vector<int64_t>& txt2img, const std::vector<std::vector<int64_t>>& img2txt) {
  ALBEF_CHECK(scores_i2t.size(0) == static_cast<int64_t>(img2txt.size()), "img2txt has ", img2txt.size(),
              " entries for ", scores_i2t.size(0), " images");
  ALBEF_CHECK(scores_t2i.size(0) == static_cast<int64_t>(txt2img.size()), "txt2img has ", txt2img.size(),
              " entries for ", scores_t2i.size(0), " texts");
  // Rank of each candidate in a row sorted by descending score.
  auto ranks_of = [](const at::Tensor& row) {
    const at::Tensor order = std::get<1>(row.to(at::kDouble).sort(/*stable=*/true, 0, /*descending=*/true));
    std::vector<int64_t> rank(order.size(0));
    const auto o = order.accessor<int64_t, 1>();
    for (int64_t r = 0; r < order.size(0); ++r) rank[o[r]] = r;
    return rank;
  };
  auto recall = [](const std::vector<int64_t>& ranks, int64_t k) {
    const auto hits = std::count_if(ranks.begin(), ranks.end(), [k](int64_t r) { return r < k; });
    return 100.0 * static_cast<double>(hits) / static_cast<double>(ranks.size());
  };
  std::vector<int64_t> i2t_ranks, t2i_ranks;
  for (int64_t i = 0; i < scores_i2t.size(0); ++i) {
    const auto rank = ranks_of(scores_i2t[i]);
    int64_t best = std::numeric_limits<int64_t>::max();
    for (int64_t t : img2txt[i]) best = std::min(best, rank[t]);
    i2t_ranks.push_back(best);
  }
  for (int64_t t = 0; t < scores_t2i.size(0); ++t) t2i_ranks.push_back(ranks_of(scores_t2i[t])[txt2img[t]]);
  const double tr1 = recall(i2t_ranks, 1), tr5 = recall(i2t_ranks, 5), tr10 = recall(i2t_ranks, 10);
  const double ir1 = recall(t2i_ranks, 1), ir5 = recall(t2i_ranks, 5), ir10 = recall(t2i_ranks, 10);
  const double tr_mean = (tr1 + tr5 + tr10) / 3, ir_mean = (ir1 + ir5 + ir10) / 3;
  return {{"txt_r1", tr1},   {"txt_r5", tr5},         {"txt_r10", tr10}, {"txt_r_mean", tr_mean},
          {"img_r1", ir1},   {"img_r5", ir5},         {"img_r10", ir10}, {"img_r_mean", ir_mean},
          {"r_mean", (tr_mean + ir_mean) / 2}};
}

}  // namespace albef
