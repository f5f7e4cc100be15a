#include "tiny_model.h"

#include "albef/io/checkpoint.h"
#include "test_util.h"

namespace albef::testing {

AlbefModel load_tiny_model(const ModelOptions& options, const std::string& checkpoint) {
  const Config config = load_config(data_path("tiny/Pretrain.yaml"));
  AlbefModel model(config, options);
  const std::string path = checkpoint.empty() ? data_path("tiny/albef_pretrain_tiny.pth") : checkpoint;
  const LoadReport report = load_checkpoint(model, path);
  // A pretraining checkpoint has no idx_queue (Retrieval.py's load reports it missing too).
  for (const auto& key : report.missing_keys) EXPECT_EQ(key, "idx_queue") << "missing from the checkpoint";
  model->eval();
  return model;
}

at::Tensor state_tensor(AlbefModel& model, const std::string& name) {
  for (const auto& [key, tensor] : state_dict(*model))
    if (key == name) return tensor;
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

void expect_relative(const at::Tensor& actual, const at::Tensor& expected, double rtol, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double diff = (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
  const double scale = expected.to(at::kDouble).abs().max().item<double>();
  EXPECT_LE(diff, rtol * scale + 1e-6) << what << " (scale " << scale << ")";
}

}  // namespace albef::testing
