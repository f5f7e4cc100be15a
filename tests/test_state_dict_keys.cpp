// The full-size models' state_dict names, shapes and dtypes equal the
// official ones (recorded from salesforce/ALBEF with its own configs).

#include "albef/model/albef.h"
#include "albef/tasks/pretrain.h"
#include "albef/tasks/retrieval.h"
#include "tasks/pretrain/simla_model.h"

#include "test_util.h"

#include <nlohmann/json.hpp>

#include <fstream>

using albef::testing::data_path;
using albef::testing::source_path;

namespace {

// `size`: the manifest's entry for one model size (SIMLA's file holds `full`
// and `tiny`); empty when the file is the list itself.
void expect_manifest(const std::string& config_path, const albef::ModelOptions& options,
                     const std::string& manifest_path, const std::string& size = "") {
  const albef::Config config = albef::load_config(config_path);
  albef::AlbefModel model(config, options);
  const auto state = albef::state_dict(*model);
  std::ifstream in(manifest_path);
  const nlohmann::json file = nlohmann::json::parse(in);
  const nlohmann::json& manifest = size.empty() ? file : file.at(size);
  ASSERT_EQ(state.size(), manifest.size());
  for (size_t i = 0; i < state.size(); ++i) {
    const auto& [name, tensor] = state[i];
    const auto& entry = manifest[i];
    ASSERT_EQ(name, entry[0].get<std::string>()) << "entry " << i;
    EXPECT_EQ(tensor.sizes().vec(), entry[1].get<std::vector<int64_t>>()) << name;
    const std::string dtype = tensor.scalar_type() == at::kLong ? "int64" : "float32";
    EXPECT_EQ(dtype, entry[2].get<std::string>()) << name;
  }
}

}  // namespace

TEST(StateDictKeys, PretrainMatchesOfficialManifest) {
  expect_manifest(source_path("configs/Pretrain.yaml"), albef::pretrain_model_options(), data_path("keys/pretrain.json"));
}

TEST(StateDictKeys, RetrievalMatchesOfficialManifest) {
  expect_manifest(source_path("configs/Retrieval_coco.yaml"), albef::retrieval_model_options(),
                  data_path("keys/retrieval.json"));
}

TEST(StateDictKeys, GritPretrainMatchesOfficialManifest) {
  // GRIT-VLP's ALBEF_Base (configs/Pretrain_GRIT.yaml): ALBEF's online
  // entries only, 422 of them (tests/data/grit/README.md).
  expect_manifest(source_path("configs/Pretrain_GRIT.yaml"), albef::pretrain_model_options(false),
                  data_path("keys/grit.json"));
}

TEST(SimlaKeys, FullSizeMatchesOfficialManifest) {
  // configs/Pretrain_SIMLA.yaml + shared_bert.json: 972 entries, 476,526,827 parameters.
  expect_manifest(source_path("configs/Pretrain_SIMLA.yaml"), albef::simla_model_options(),
                  data_path("simla/state_dict_keys.json"), "full");
}

TEST(SimlaKeys, TinyMatchesOfficialManifest) {
  expect_manifest(data_path("simla/Pretrain_tiny.yaml"), albef::simla_model_options(),
                  data_path("simla/state_dict_keys.json"), "tiny");
}
