#include "tiny_model.h"

#include "albef/io/checkpoint.h"
#include "test_util.h"

#include <fstream>

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

void expect_state_manifest(AlbefModel& model, const std::string& manifest_path,
                           const std::function<bool(const std::string&)>& skip) {
  std::ifstream in(manifest_path);
  const nlohmann::ordered_json manifest = nlohmann::ordered_json::parse(in);
  const io::StateDict state = state_dict(*model);
  ASSERT_EQ(state.size(), manifest.size()) << manifest_path;
  size_t i = 0;
  for (const auto& [name, entry] : manifest.items()) {
    ASSERT_EQ(state[i].first, name) << "entry " << i;
    const at::Tensor& tensor = state[i++].second;
    EXPECT_EQ(tensor.sizes().vec(), entry["shape"].get<std::vector<int64_t>>()) << name;
    if (skip && skip(name)) continue;
    const double sum = entry["sum"].get<double>(), abs_sum = entry["abs_sum"].get<double>();
    EXPECT_NEAR(tensor.to(at::kDouble).sum().item<double>(), sum, 1e-4 * std::max(1.0, std::abs(abs_sum))) << name;
    EXPECT_NEAR(tensor.to(at::kDouble).abs().sum().item<double>(), abs_sum, 1e-4 * std::max(1.0, abs_sum)) << name;
  }
}

void expect_official_keys(AlbefModel& model, const std::string& keys_json) {
  const io::StateDict state = state_dict(*model);
  std::ifstream in(keys_json);
  const nlohmann::json manifest = nlohmann::json::parse(in);
  ASSERT_EQ(state.size(), manifest.size()) << keys_json;
  for (size_t i = 0; i < state.size(); ++i) {
    ASSERT_EQ(state[i].first, manifest[i][0].get<std::string>()) << "entry " << i;
    EXPECT_EQ(state[i].second.sizes().vec(), manifest[i][1].get<std::vector<int64_t>>()) << state[i].first;
  }
}

}  // namespace albef::testing
