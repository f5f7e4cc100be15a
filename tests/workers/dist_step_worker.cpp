// One rank of a 2-process data-parallel run on the tiny official model, for
// tests/test_distributed.cpp: three pretraining steps on this rank's shard
// of the fixture batch (samples 2*rank, 2*rank+1) with the trainer's
// collectives (weights broadcast, momentum features all-gathered into the
// queues, gradients averaged), writing what the test compares as .npy.
//
// usage: albef_dist_step_worker CONFIG CHECKPOINT FIXTURE_NPY_DIR OUT_DIR
// with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment.

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "albef/distributed/process_group.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/train/optimizer.h"
#include "albef/tasks/pretrain.h"
#include "tasks/pretrain/step.h"

#include <ATen/ATen.h>

#include <iostream>

namespace {

// The parameters whose step-0 gradients the test checks.
const char* kChecked[] = {"visual_encoder.blocks.0.attn.qkv.weight",
                          "text_encoder.bert.encoder.layer.2.crossattention.self.key.weight", "itm_head.weight",
                          "temp"};

int run(int argc, char** argv) {
  if (argc != 5) albef::fail("usage: albef_dist_step_worker CONFIG CHECKPOINT FIXTURE_NPY_DIR OUT_DIR");
  const std::string config_path = argv[1], checkpoint = argv[2], fixtures = argv[3], out = argv[4];
  albef::init_runtime(1);
  const auto env = albef::distributed::DistributedEnv::from_environment();
  albef::distributed::ProcessGroup group(env, c10::Device(c10::kCPU), std::chrono::seconds(60));
  const std::string prefix = out + "/rank" + std::to_string(env.rank) + "_";

  const albef::Config config = albef::load_config(config_path);
  albef::AlbefModel model(config, albef::pretrain_model_options(true));
  albef::load_state_dict(model, albef::io::state_dict_from(albef::io::read_torch_file(checkpoint), checkpoint),
                         checkpoint);
  model->train();
  std::vector<at::Tensor> state = model->parameters();
  for (const auto& buffer : model->buffers()) state.push_back(buffer);
  {
    at::NoGradGuard no_grad;
    group.broadcast(state);
  }
  albef::AdamW optimizer = albef::create_optimizer(*model, config.optimizer);
  const albef::FeatureGather gather = [&group](const at::Tensor& x) { return group.all_gather(x); };

  const int64_t first = 2 * env.rank;
  const at::Tensor images = albef::io::read_npy(fixtures + "/inputs__image.npy").slice(0, first, first + 2);
  const at::Tensor ids = albef::io::read_npy(fixtures + "/inputs__input_ids.npy").slice(0, first, first + 2);
  const at::Tensor mask = albef::io::read_npy(fixtures + "/inputs__attention_mask.npy").slice(0, first, first + 2);
  for (int step = 0; step < 3; ++step) {
    optimizer.zero_grad();
    at::manual_seed(static_cast<uint64_t>(1000 * step + env.rank));  // the test draws the same masks and negatives
    const albef::StepOutputs result = albef::pretrain_forward(model, images, ids, mask, 0.4, {}, nullptr, gather);
    (result.loss_mlm + result.loss_ita + result.loss_itm).backward();
    std::vector<at::Tensor> gradients;
    for (const auto& parameter : model->parameters())
      if (parameter.requires_grad()) gradients.push_back(parameter.grad());
    if (step == 0) {
      albef::io::write_npy(prefix + "image_feat_m.npy", result.image_feat_m);
      albef::io::write_npy(prefix + "text_feat_m.npy", result.text_feat_m);
    }
    group.average(gradients);
    if (step == 0)
      for (const auto& item : model->named_parameters())
        for (const char* name : kChecked)
          if (item.key() == name) albef::io::write_npy(prefix + "grad_" + name + ".npy", item.value().grad());
    optimizer.step();
  }
  std::vector<at::Tensor> flat;
  for (const auto& parameter : model->parameters()) flat.push_back(parameter.detach().reshape({-1}));
  albef::io::write_npy(prefix + "parameters.npy", at::cat(flat));
  for (const auto& item : model->named_buffers())
    if (item.key() == "image_queue" || item.key() == "text_queue" || item.key() == "queue_ptr")
      albef::io::write_npy(prefix + item.key() + ".npy", item.value());
  group.barrier();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "albef_dist_step_worker: " << e.what() << "\n";
    return 1;
  }
}
