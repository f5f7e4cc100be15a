#include "tasks/pretrain/grit.h"

#include "albef/core/error.h"
#include "albef/tasks/pretrain.h"
#include "albef/text/tokenizer.h"
#include "tasks/pretrain/grit_sampler.h"
#include "tasks/pretrain/grit_step.h"
#include "tasks/pretrain/pairs.h"

#include <ATen/ATen.h>

#include <iostream>
#include <memory>
#include <optional>

namespace albef {
namespace {

// Seeds the sampler's own generator apart from the run's ("grit").
constexpr uint64_t kGritStream = 0x67726974ULL;

// Dataset indices travel through GRIT's float32 queue exactly only below 2^24.
constexpr int64_t kExactFloatIndices = int64_t{1} << 24;

at::Tensor stacked(const at::Tensor& tensor, distributed::ProcessGroup* group) {
  return group ? group->all_gather(tensor.unsqueeze(0)) : tensor.unsqueeze(0);
}

std::vector<int64_t> to_vector(const at::Tensor& tensor) {
  const at::Tensor values = tensor.to(at::kLong).contiguous();
  return {values.data_ptr<int64_t>(), values.data_ptr<int64_t>() + values.numel()};
}

at::Tensor checkpoint_tensor(const io::PyObjectPtr& state, const std::string& key, const std::string& source) {
  const auto value = state ? state->get(key) : nullptr;
  if (!value || value->kind != io::PyObject::Kind::Tensor)
    fail(source, ": the GRIT sampler state (albef_resume.data) has no tensor '", key, "'");
  return value->tensor;
}

// The pretraining pairs in GRIT's order, each batch bound to grit_forward;
// after each optimizer step the batch's features enter the epoch's grouper.
class GritTrainData : public TrainData {
 public:
  GritTrainData(std::unique_ptr<data::TrainLoader> loader, grit::GroupingOptions grouping, bool across,
                std::shared_ptr<const text::BertTokenizer> tokenizer, c10::Device device, uint64_t seed)
      : loader_(std::move(loader)),
        grouping_(std::move(grouping)),
        across_(across),
        tokenizer_(std::move(tokenizer)),
        tokens_{tokenizer_->pad_id(), tokenizer_->cls_id(), tokenizer_->mask_id()},
        device_(device),
        draws_(seed) {}

  void start_epoch(int64_t epoch, int64_t skip_batches) override {
    const data::TrainLoaderOptions& options = loader_->options();
    if (!order_.empty()) loader_->set_order(grit::rank_share(order_, options.world_size, options.rank));
    if (skip_batches > 0 && !restored_grouper_)
      fail("resuming GRIT inside epoch ", epoch, " needs the sampler state of the checkpoint");
    if (skip_batches == 0) grouper_.emplace(grouping_, num_batches());
    restored_grouper_ = false;
    loader_->start_epoch(epoch, skip_batches);
  }

  std::optional<TrainStep> next() override {
    auto batch = loader_->next();
    if (!batch) return std::nullopt;
    auto shared = std::make_shared<data::TrainBatch>(std::move(*batch));
    auto features = std::make_shared<std::pair<at::Tensor, at::Tensor>>();
    TrainStep step;
    step.index = shared->index;
    step.losses = [this, shared, features](AlbefModel& model, double, const FeatureGather&) {
      // Pretrain.py: padding='longest', truncation=True, max_length=25.
      const text::BatchEncoding text = tokenizer_->encode_batch(shared->captions, 25, text::Padding::Longest);
      const GritStepOutputs out = grit_forward(model, shared->images.to(device_), text.input_ids.to(device_),
                                               text.attention_mask.to(device_), tokens_);
      *features = {out.image_feat, out.text_feat};
      return std::vector<at::Tensor>{out.loss_mlm, out.loss_ita, out.loss_itm};
    };
    // Pretrain.py:72-74: after optimizer.step(), with the updated temp.
    step.after_update = [this, shared, features](AlbefModel& model) {
      grouper_->collect(shared->index, features->first, features->second, shared->indices,
                        model->temp.item<float>(), draws_);
    };
    return step;
  }

  void end_epoch(int64_t, distributed::ProcessGroup* group) override {
    std::vector<int64_t> order = grouper_->grouped();
    if (!across_) order = grit::shuffle_mini_batches(order, grouping_.batch_size, draws_);
    if (group) order = to_vector(group->all_gather(at::tensor(order, at::kLong)));
    if (across_) {
      // The official code shuffles on every rank with its own draws and
      // keeps whichever rank wrote total_indices.mat last; here rank 0's.
      at::Tensor shuffled = at::tensor(grit::shuffle_mini_batches(order, grouping_.batch_size, draws_), at::kLong);
      if (group) group->broadcast({shuffled});
      order = to_vector(shuffled);
    }
    order_ = std::move(order);
    grouper_.reset();
  }

  io::PyObjectPtr state(distributed::ProcessGroup* group) override {
    auto dict = io::PyObject::new_dict();
    dict->set("order", io::PyObject::from_tensor(at::tensor(order_, at::kLong)));
    dict->set("generator", io::PyObject::from_tensor(stacked(draws_.state(), group)));
    if (grouper_) {
      const std::vector<at::Tensor> parts = grouper_->state();
      const char* names[] = {"image_queue", "text_queue", "idx_queue", "pointers", "grouped"};
      for (size_t i = 0; i < parts.size(); ++i)
        dict->set(names[i], io::PyObject::from_tensor(stacked(parts[i], group)));
    }
    return dict;
  }

  void restore(const io::PyObjectPtr& state, const std::string& source) override {
    const data::TrainLoaderOptions& options = loader_->options();
    order_ = to_vector(checkpoint_tensor(state, "order", source));
    const at::Tensor generators = checkpoint_tensor(state, "generator", source);
    const bool same_world = generators.size(0) == options.world_size;
    if (same_world) draws_.set_state(generators[options.rank]);  // else the fresh stream of this rank's seed
    if (!state->get("grouped")) return;
    if (!same_world)
      fail(source, ": a GRIT run resumes inside an epoch only with the number of processes that saved it (",
           generators.size(0), ", now ", options.world_size, ")");
    std::vector<at::Tensor> parts;
    for (const char* name : {"image_queue", "text_queue", "idx_queue", "pointers", "grouped"})
      parts.push_back(checkpoint_tensor(state, name, source)[options.rank]);
    grouper_.emplace(grouping_, num_batches());
    grouper_->restore(parts, source);
    restored_grouper_ = true;
  }

  int64_t num_batches() const override { return loader_->num_batches(); }
  int64_t num_samples() const override { return loader_->num_samples(); }
  data::BadSampleReport bad_samples() const override { return loader_->bad_samples(); }

 private:
  std::unique_ptr<data::TrainLoader> loader_;
  const grit::GroupingOptions grouping_;
  const bool across_;
  std::shared_ptr<const text::BertTokenizer> tokenizer_;
  const MlmTokenIds tokens_;
  const c10::Device device_;
  grit::GeneratorDraws draws_;
  std::optional<grit::EpochGrouper> grouper_;
  bool restored_grouper_ = false;
  std::vector<int64_t> order_;  // the whole run's order of the current (or next) epoch; empty: the sampler's
};

}  // namespace

void run_grit_pretraining(const TrainOptions& options, const Config& config, bool shuffle_across_processes) {
  auto tokenizer = std::make_shared<const text::BertTokenizer>(config.vocab);
  auto dataset = read_pretrain_pairs(config, options.config_path);
  if (static_cast<int64_t>(dataset->size()) > kExactFloatIndices)
    std::cout << "note: " << dataset->size() << " pairs: GRIT's queue keeps dataset indices in float32 (as the "
              << "official code), exact only below 2^24 = " << kExactFloatIndices << "; larger ones are rounded\n";
  grit::GroupingOptions grouping;
  grouping.queue_size = config.queue_size;
  grouping.search_space = config.search_space;
  grouping.batch_size = config.batch_size;
  grouping.embed_dim = config.embed_dim;
  grouping.source = options.config_path;
  grouping.check();

  TrainingTask task;
  task.model = pretrain_model_options(/*momentum_encoders=*/false);
  task.schedule = TrainingSchedule::pretrain(config);  // GRIT's Pretrain.py steps its schedule as ALBEF's
  task.loss_names = {"loss_mlm", "loss_ita", "loss_itm"};
  task.data = [&config, &options, dataset, tokenizer, grouping, shuffle_across_processes](
                  data::TrainLoaderOptions loader, c10::Device device) -> std::unique_ptr<TrainData> {
    const uint64_t seed = static_cast<uint64_t>(options.seed + loader.rank) ^ kGritStream;
    return std::make_unique<GritTrainData>(pretrain_pairs_loader(std::move(*dataset), config, loader), grouping,
                                           shuffle_across_processes, tokenizer, device, seed);
  };
  run_training(options, config, std::move(task));
}

}  // namespace albef
