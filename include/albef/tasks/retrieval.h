#pragma once
/// @file retrieval.h
/// @brief `albef retrieval`: the official Retrieval.py. This version runs
/// the evaluation (`--evaluate`), zero-shot or of a fine-tuned checkpoint.

#include "albef/core/runtime.h"
#include "albef/tasks/retrieval_eval.h"

#include <string>

namespace albef {

/// Flags of a retrieval run, as Retrieval.py's.
struct RetrievalOptions {
  std::string config_path;
  std::string checkpoint;
  std::string output_dir = "output/Retrieval";
  int threads = 0;
  Precision precision = Precision::Fp32;
  std::string device = "cpu";
};

/// Evaluates `checkpoint` on the config's val_file and test_file: prints and
/// appends to output_dir/log.txt the itm_eval metrics ({"val_txt_r1": ...,
/// "test_txt_r1": ..., "epoch": 0}) and writes the test set's score
/// matrices as score_i2t.npy / score_t2i.npy. Returns the test metrics.
nlohmann::json run_retrieval_evaluation(const RetrievalOptions& options);

}  // namespace albef
