#pragma once
// What a checkpoint is, read from its entries' names and shapes only (the
// tensor data stays in the file): `albef info`, and `albef convert` to know
// which momentum parameters a LAVIS checkpoint lacks.

#include "albef/model/checkpoint_layout.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace albef::tasks {

/// A checkpoint against the model of one task (Task::checkpoint_model).
struct KindMatch {
  std::string kind;                     ///< the task's name: pretrain, retrieval, vqa, ...
  std::vector<std::string> missing;     ///< in that model, not in the checkpoint
  std::vector<std::string> unexpected;  ///< in the checkpoint, not in that model
  /// Momentum parameters missing from a LAVIS checkpoint whose online twins
  /// are there (LAVIS saves trainable parameters only): loading copies them.
  std::vector<std::string> momentum_from_online;
  size_t mismatches() const { return missing.size() + unexpected.size(); }
};

struct CheckpointInfo {
  std::string path;
  CheckpointLayout layout = CheckpointLayout::Official;
  /// The best-matching task, or "feature_extractor" (LAVIS's
  /// albef_feature_extractor: the encoders and projections only).
  std::string kind;
  std::string kind_note;  ///< why, where names alone do not decide
  int64_t image_res = 0, patch_size = 0, vision_depth = 0, vision_width = 0;
  int64_t text_layers = 0, fusion_layer = 0, text_width = 0, decoder_layers = 0;
  int64_t tensors = 0;     ///< state_dict entries
  int64_t parameters = 0;  ///< elements of the parameters (tied ones once), buffers excluded
  int64_t buffer_elements = 0;
  std::map<std::string, int64_t> dtypes;  ///< dtype -> elements
  std::optional<int64_t> epoch;
  nlohmann::json config;                  ///< the stored config, or null
  std::vector<std::string> other_entries;  ///< top-level entries beside the weights
  std::vector<KindMatch> matches;          ///< every task's model, best first
};

/// Reads `path` as io::LazyCheckpoint (no tensor data) and compares it with
/// every task's model, built at the checkpoint's depths with tiny widths
/// (names depend on depths only).
CheckpointInfo inspect_checkpoint(const std::string& path);

nlohmann::json to_json(const CheckpointInfo& info);

}  // namespace albef::tasks
