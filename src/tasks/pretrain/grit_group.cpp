// `albef grit-group`: GRIT-VLP's grouping of one epoch over features saved
// beforehand (e.g. by `albef embed`), with the official draws or albef's.

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/io/npy.h"
#include "tasks/pretrain/grit_group.h"
#include "tasks/pretrain/grit_sampler.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <memory>

namespace albef {
namespace {

struct GritGroupFlags {
  std::string image_feat, text_feat, indices, out, draws;
  int64_t queue_size = 48000, search_space = 1920, batch_size = 128;
  double temp = 0.07;
  uint64_t seed = 42;
};

at::Tensor read_matrix(const std::string& path, const std::string& flag) {
  const at::Tensor tensor = io::read_npy(path);
  if (tensor.dim() != 2) fail(path, " (", flag, "): expected [pairs, dim] features, got shape ", tensor.sizes());
  return tensor.to(at::kFloat);
}

void run_grit_group(const GritGroupFlags& flags) {
  const at::Tensor images = read_matrix(flags.image_feat, "--image_feat");
  const at::Tensor texts = read_matrix(flags.text_feat, "--text_feat");
  const at::Tensor indices = io::read_npy(flags.indices).view({-1});
  if (!at::isIntegralType(indices.scalar_type(), /*includeBool=*/false))
    fail(flags.indices, " (--indices): expected integer dataset indices, got ", indices.scalar_type());
  if (!texts.sizes().equals(images.sizes()))
    fail(flags.text_feat, " (--text_feat): shape ", texts.sizes(), " differs from --image_feat's ", images.sizes());
  if (indices.numel() != images.size(0))
    fail(flags.indices, " (--indices): ", indices.numel(), " indices for ", images.size(0), " feature rows");
  grit::GroupingOptions options;
  options.queue_size = flags.queue_size;
  options.search_space = flags.search_space;
  options.batch_size = flags.batch_size;
  options.embed_dim = images.size(1);
  options.source = "--queue_size/--search_space/--batch_size";
  options.check();
  const int64_t steps = images.size(0) / flags.batch_size;
  if (steps == 0) fail(flags.image_feat, ": ", images.size(0), " pairs do not fill one batch of ", flags.batch_size);
  if (steps * flags.batch_size < images.size(0))
    std::cerr << "note: the last " << images.size(0) - steps * flags.batch_size
              << " pair(s) make no full batch and are left out (drop_last, as the training loader)\n";
  prepare_output_file(flags.out, "--out");

  std::unique_ptr<grit::Draws> draws;
  if (flags.draws.empty()) {
    draws = std::make_unique<grit::GeneratorDraws>(flags.seed);
  } else {
    const nlohmann::json recorded = nlohmann::json::parse(read_file(flags.draws), nullptr, false);
    if (recorded.is_discarded()) fail(flags.draws, " (--draws): not valid JSON");
    draws = std::make_unique<grit::RecordedDraws>(recorded, flags.draws + " (--draws)");
  }
  grit::EpochGrouper grouper(options, steps);
  const int64_t batch = flags.batch_size;
  for (int64_t step = 0; step < steps; ++step)
    grouper.collect(step, images.slice(0, step * batch, (step + 1) * batch),
                    texts.slice(0, step * batch, (step + 1) * batch), indices.slice(0, step * batch, (step + 1) * batch),
                    static_cast<float>(flags.temp), *draws);
  const std::vector<int64_t> final_order = grit::shuffle_mini_batches(grouper.grouped(), batch, *draws);
  nlohmann::json batches = nlohmann::json::array();
  for (size_t begin = 0; begin < final_order.size(); begin += static_cast<size_t>(batch))
    batches.push_back(std::vector<int64_t>(final_order.begin() + static_cast<std::ptrdiff_t>(begin),
                                           final_order.begin() + static_cast<std::ptrdiff_t>(
                                                                     std::min(final_order.size(), begin + batch))));
  const nlohmann::json result = {{"grouped", grouper.grouped()}, {"final_order", final_order}, {"batches", batches}};
  write_atomically(flags.out, [&](const std::string& tmp) {
    std::ofstream out(tmp);
    out << result.dump() << "\n";
    if (!out) fail(flags.out, ": cannot write");
  });
  std::cout << "grouped " << final_order.size() << " pairs into " << batches.size() << " mini-batches: " << flags.out
            << "\n";
}

}  // namespace

void add_grit_group_command(CLI::App& app) {
  auto flags = std::make_shared<GritGroupFlags>();
  CLI::App* command = app.add_subcommand(
      "grit-group", "GRIT-VLP's grouped mini-batch order of one epoch, over saved ITC features (npy)");
  command->add_option("--image_feat", flags->image_feat, "Image features [N, D] (.npy)")->required();
  command->add_option("--text_feat", flags->text_feat, "Text features [N, D] (.npy), row i = pair i")->required();
  command->add_option("--indices", flags->indices, "Dataset index of each pair [N] (.npy, integers)")->required();
  command->add_option("--queue_size", flags->queue_size, "Pairs per grouping queue (GRIT: 48000)");
  command->add_option("--search_space", flags->search_space, "Pairs per search space (GRIT: 1920)");
  command->add_option("--batch_size", flags->batch_size, "Mini-batch size (steps collect N / batch_size batches)");
  command->add_option("--temp", flags->temp, "Softmax temperature of the grouping (the model's temp)");
  command->add_option("--out", flags->out, "Where to write {grouped, final_order, batches} (JSON)")->required();
  command->add_option("--draws", flags->draws,
                      "Recorded random draws (JSON: phases[].randperm, grouping_calls[].start, chunk_order), e.g. a "
                      "sampler case of the GRIT fixtures");
  command->add_option("--seed", flags->seed, "Seed of albef's own draws (without --draws)");
  command->callback([flags] { run_grit_group(*flags); });
}

}  // namespace albef
