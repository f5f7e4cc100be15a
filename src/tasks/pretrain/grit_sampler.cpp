#include "tasks/pretrain/grit_sampler.h"

#include "albef/core/error.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <mutex>
#include <numeric>

namespace albef::grit {
namespace {

std::vector<int64_t> to_vector(const at::Tensor& tensor) {
  const at::Tensor values = tensor.to(at::kLong).contiguous();
  return {values.data_ptr<int64_t>(), values.data_ptr<int64_t>() + values.numel()};
}

bool is_permutation_of_range(std::vector<int64_t> values, int64_t n) {
  if (static_cast<int64_t>(values.size()) != n) return false;
  std::sort(values.begin(), values.end());
  for (int64_t i = 0; i < n; ++i)
    if (values[static_cast<size_t>(i)] != i) return false;
  return true;
}

std::vector<int64_t> int_list(const nlohmann::json& value, const std::string& what, const std::string& source) {
  if (!value.is_array()) fail(source, ": '", what, "' is not a list of integers");
  std::vector<int64_t> out;
  for (const auto& item : value) {
    if (!item.is_number_integer()) fail(source, ": '", what, "' holds ", item.dump(), ", not an integer");
    out.push_back(item.get<int64_t>());
  }
  return out;
}

// Index of the first largest entry of row `row` of the n x n matrix `m`.
int64_t row_argmax(const std::vector<float>& m, int64_t n, int64_t row) {
  const auto begin = m.begin() + row * n;
  return std::max_element(begin, begin + n) - begin;
}

void zero_row_and_column(std::vector<float>& m, int64_t n, int64_t k) {
  std::fill(m.begin() + k * n, m.begin() + (k + 1) * n, 0.0f);
  for (int64_t r = 0; r < n; ++r) m[static_cast<size_t>(r * n + k)] = 0.0f;
}

// softmax(x @ y^T / temp, dim=1) with a zero diagonal, row-major.
std::vector<float> similarity_weights(const at::Tensor& x, const at::Tensor& y, float temp) {
  at::Tensor weights = at::softmax(at::matmul(x, y.t()) / at::scalar_tensor(temp, at::kFloat), 1);
  weights.fill_diagonal_(0.0);
  weights = weights.contiguous();
  return {weights.data_ptr<float>(), weights.data_ptr<float>() + weights.numel()};
}

}  // namespace

GeneratorDraws::GeneratorDraws(uint64_t seed) : generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

// The at:: random functions lock the generator themselves.
std::vector<int64_t> GeneratorDraws::permutation(int64_t n) {
  return to_vector(at::randperm(n, generator_, at::kLong));
}

int64_t GeneratorDraws::start(int64_t n) {
  return at::randint(0, n - 1, {1}, generator_, at::kLong).item<int64_t>();
}

std::vector<int64_t> GeneratorDraws::chunk_order(int64_t n) { return permutation(n); }

at::Tensor GeneratorDraws::state() const { return generator_.get_state(); }

void GeneratorDraws::set_state(const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator_.mutex());
  generator_.set_state(state);
}

RecordedDraws::RecordedDraws(const nlohmann::json& draws, std::string source) : source_(std::move(source)) {
  if (!draws.is_object()) fail(source_, ": the draws must be a JSON object (a sampler case of the GRIT fixtures)");
  if (draws.contains("phases")) {
    if (!draws["phases"].is_array()) fail(source_, ": 'phases' is not a list");
    for (size_t k = 0; k < draws["phases"].size(); ++k)
      permutations_.push_back(
          int_list(draws["phases"][k].value("randperm", nlohmann::json()), "phases[" + std::to_string(k) + "].randperm",
                   source_));
  }
  if (draws.contains("grouping_calls")) {
    if (!draws["grouping_calls"].is_array()) fail(source_, ": 'grouping_calls' is not a list");
    for (size_t k = 0; k < draws["grouping_calls"].size(); ++k) {
      const auto& start = draws["grouping_calls"][k].value("start", nlohmann::json());
      if (!start.is_number_integer()) fail(source_, ": grouping_calls[", k, "].start is not an integer");
      starts_.push_back(start.get<int64_t>());
    }
  }
  if (draws.contains("chunk_order")) chunk_order_ = int_list(draws["chunk_order"], "chunk_order", source_);
}

std::vector<int64_t> RecordedDraws::permutation(int64_t n) {
  if (next_permutation_ >= permutations_.size())
    fail(source_, ": the grouping shuffles the queue a ", next_permutation_ + 1, "th time but 'phases' records ",
         permutations_.size(), " permutation(s)");
  const std::vector<int64_t>& out = permutations_[next_permutation_++];
  if (!is_permutation_of_range(out, n))
    fail(source_, ": phases[", next_permutation_ - 1, "].randperm is not a permutation of 0..", n - 1,
         " (the queue holds ", n, " pairs)");
  return out;
}

int64_t RecordedDraws::start(int64_t n) {
  if (next_start_ >= starts_.size())
    fail(source_, ": grouping call ", next_start_ + 1, " needs a start but 'grouping_calls' records ", starts_.size());
  const int64_t start = starts_[next_start_++];
  if (start < 0 || start >= n - 1)
    fail(source_, ": grouping_calls[", next_start_ - 1, "].start ", start, " is outside [0, ", n - 1, ")");
  return start;
}

std::vector<int64_t> RecordedDraws::chunk_order(int64_t n) {
  if (chunk_order_used_) fail(source_, ": 'chunk_order' was already used (one epoch per draws file)");
  if (!is_permutation_of_range(chunk_order_, n))
    fail(source_, ": 'chunk_order' is not a permutation of the ", n, " mini-batches");
  chunk_order_used_ = true;
  return chunk_order_;
}

std::vector<int64_t> group_search_space(const at::Tensor& image_feat, const at::Tensor& text_feat, float temp,
                                        int64_t start) {
  const int64_t n = image_feat.size(0);
  ALBEF_CHECK(text_feat.size(0) == n, n, " image features but ", text_feat.size(0), " text features");
  ALBEF_CHECK(start >= 0 && (start < n || n == 0), "start ", start, " outside the ", n, " pairs");
  if (n == 0) return {};
  const at::Tensor image = image_feat.to(at::kFloat);
  const at::Tensor text = text_feat.to(at::kFloat);
  std::vector<float> i2t = similarity_weights(image, text, temp);  // rows: images, columns: texts
  std::vector<float> t2i = similarity_weights(text, image, temp);  // rows: texts, columns: images
  std::vector<int64_t> order{start};
  int64_t image_pos = start;
  auto retire = [&](int64_t k) {
    zero_row_and_column(i2t, n, k);
    zero_row_and_column(t2i, n, k);
  };
  for (int64_t k = 0; k < (n - 1) / 2; ++k) {
    const int64_t text_pos = row_argmax(i2t, n, image_pos);
    retire(image_pos);
    image_pos = row_argmax(t2i, n, text_pos);
    retire(text_pos);
    order.push_back(text_pos);
    order.push_back(image_pos);
  }
  if ((n - 1) % 2 != 0) order.push_back(row_argmax(i2t, n, image_pos));
  return order;
}

void GroupingOptions::check() const {
  if (queue_size <= 0 || search_space <= 0 || batch_size <= 0 || embed_dim <= 0)
    fail(source, ": queue_size (", queue_size, "), search_space (", search_space, "), batch_size (", batch_size,
         ") and embed_dim (", embed_dim, ") must be positive");
  // GRIT_utils.py:21-23.
  if (queue_size % search_space != 0)
    fail(source, ": queue_size ", queue_size, " is not a multiple of search_space ", search_space);
  if (queue_size % batch_size != 0)
    fail(source, ": queue_size ", queue_size, " is not a multiple of batch_size ", batch_size);
  if (search_space % batch_size != 0)
    fail(source, ": search_space ", search_space, " is not a multiple of batch_size ", batch_size);
}

EpochGrouper::EpochGrouper(GroupingOptions options, int64_t num_steps)
    : options_(std::move(options)), num_steps_(num_steps) {
  options_.check();
  ALBEF_CHECK(num_steps > 0, "an epoch of ", num_steps, " steps");
  image_queue_ = at::zeros({options_.queue_size, options_.embed_dim}, at::kFloat);
  text_queue_ = at::zeros({options_.queue_size, options_.embed_dim}, at::kFloat);
  idx_queue_ = at::zeros({options_.queue_size}, at::kFloat);
  grouped_.resize(static_cast<size_t>(num_steps * options_.batch_size));
  std::iota(grouped_.begin(), grouped_.end(), int64_t{0});
}

void EpochGrouper::collect(int64_t step, const at::Tensor& image_feat, const at::Tensor& text_feat,
                           const at::Tensor& indices, float temp, Draws& draws) {
  const int64_t batch = image_feat.size(0);
  ALBEF_CHECK(batch == options_.batch_size && text_feat.size(0) == batch && indices.numel() == batch,
              "GRIT collects whole batches of ", options_.batch_size, ", got ", batch, " features and ",
              indices.numel(), " indices");
  ALBEF_CHECK(image_feat.size(1) == options_.embed_dim, "features of width ", image_feat.size(1), ", expected ",
              options_.embed_dim);
  ALBEF_CHECK(step >= 0 && step < num_steps_, "step ", step, " of an epoch of ", num_steps_);
  image_queue_.slice(0, ptr_, ptr_ + batch).copy_(image_feat.detach().to(at::kCPU, at::kFloat));
  text_queue_.slice(0, ptr_, ptr_ + batch).copy_(text_feat.detach().to(at::kCPU, at::kFloat));
  idx_queue_.slice(0, ptr_, ptr_ + batch).copy_(indices.view({-1}).to(at::kCPU, at::kFloat));
  ptr_ = (ptr_ + batch) % options_.queue_size;
  if (ptr_ == 0)
    group_queue(options_.queue_size, draws, temp);
  else if (step == num_steps_ - 1)
    group_queue(ptr_, draws, temp);
}

void EpochGrouper::group_queue(int64_t length, Draws& draws, float temp) {
  // example_level_shuffle: one permutation for the three queues.
  const std::vector<int64_t> permutation = draws.permutation(length);
  const at::Tensor order = at::tensor(permutation, at::kLong);
  const at::Tensor images = image_queue_.slice(0, 0, length).index_select(0, order);
  const at::Tensor texts = text_queue_.slice(0, 0, length).index_select(0, order);
  const at::Tensor ids = idx_queue_.slice(0, 0, length).index_select(0, order).contiguous();
  const float* id = ids.data_ptr<float>();
  const int64_t space = options_.search_space;
  for (int64_t begin = 0; begin < length; begin += space) {
    const int64_t n = std::min(space, length - begin);  // the last group of a partial queue may be shorter
    const int64_t start = n >= 2 ? draws.start(n) : 0;
    const std::vector<int64_t> positions =
        group_search_space(images.slice(0, begin, begin + n), texts.slice(0, begin, begin + n), temp, start);
    const auto offset = static_cast<size_t>(groups_done_ * space);
    ALBEF_CHECK(offset + positions.size() <= grouped_.size(), "GRIT grouped more samples than the epoch has");
    for (size_t k = 0; k < positions.size(); ++k)
      grouped_[offset + k] = static_cast<int64_t>(id[begin + positions[k]]);
    ++groups_done_;
  }
}

std::vector<at::Tensor> EpochGrouper::state() const {
  return {image_queue_.clone(), text_queue_.clone(), idx_queue_.clone(), at::tensor({ptr_, groups_done_}, at::kLong),
          at::tensor(grouped_, at::kLong)};
}

void EpochGrouper::restore(const std::vector<at::Tensor>& state, const std::string& source) {
  if (state.size() != 5 || !state[0].sizes().equals(image_queue_.sizes()) ||
      !state[1].sizes().equals(text_queue_.sizes()) || !state[2].sizes().equals(idx_queue_.sizes()) ||
      state[3].numel() != 2 || state[4].numel() != static_cast<int64_t>(grouped_.size()))
    fail(source, ": the GRIT sampler state does not match this run's queue_size, embed_dim, batch_size or epoch length");
  image_queue_.copy_(state[0]);
  text_queue_.copy_(state[1]);
  idx_queue_.copy_(state[2]);
  ptr_ = state[3][0].item<int64_t>();
  groups_done_ = state[3][1].item<int64_t>();
  grouped_ = to_vector(state[4]);
}

std::vector<int64_t> shuffle_mini_batches(const std::vector<int64_t>& order, int64_t batch_size, Draws& draws) {
  ALBEF_CHECK(batch_size > 0, "batch size ", batch_size);
  const auto n = static_cast<int64_t>(order.size());
  const int64_t chunks = (n + batch_size - 1) / batch_size;
  std::vector<int64_t> out;
  out.reserve(order.size());
  for (const int64_t chunk : draws.chunk_order(chunks)) {
    ALBEF_CHECK(chunk >= 0 && chunk < chunks, "mini-batch ", chunk, " of ", chunks);
    const int64_t begin = chunk * batch_size;
    out.insert(out.end(), order.begin() + begin, order.begin() + std::min(n, begin + batch_size));
  }
  return out;
}

std::vector<int64_t> rank_share(const std::vector<int64_t>& order, int64_t world_size, int64_t rank) {
  ALBEF_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "rank ", rank, " of ", world_size);
  const auto share = static_cast<int64_t>(order.size()) / world_size;
  return {order.begin() + rank * share, order.begin() + (rank + 1) * share};
}

}  // namespace albef::grit
