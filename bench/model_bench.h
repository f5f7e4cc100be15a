#pragma once
// The full-size model against PyTorch on the same machine, in one run:
// image encoding (batch 1 and 32), text encoding (64 x 30 tokens), ITM
// fusion (64 pairs), retrieval evaluation on a synthetic gallery, VQA answer
// ranking (16 questions against a 3,128-answer list), NLVR2 and SNLI-VE
// evaluation (16 sentences over two images, 32 image-sentence pairs), one
// pretraining step (batch 8), each in fp32 and bf16, with peak memory, the
// FLOPs each workload needs and the fraction of this CPU's measured GEMM
// peak it reaches. Every workload runs in a fresh process (albef's own
// worker, then bench/pytorch_baseline.py), so each peak memory is its own.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace albef::bench {

/// The workloads, in report order; names shared with bench/pytorch_baseline.py.
const std::vector<std::string>& model_workloads();

struct ModelBenchOptions {
  std::string pretrain_config = "configs/Pretrain.yaml";       ///< the training step's model
  std::string retrieval_config = "configs/Retrieval_coco.yaml"; ///< the inference workloads' model
  std::string vqa_config = "configs/VQA.yaml";                  ///< vqa_b16's model (its decoder depth)
  std::string nlvr_config = "configs/NLVR.yaml";                ///< nlvr_b16's model
  std::string ve_config = "configs/VE.yaml";                    ///< ve_b32's model
  std::string simla_config = "configs/Pretrain_SIMLA.yaml";     ///< train_simla_b8's model
  std::string checkpoint;   ///< weights to use (empty: random, seed 0)
  std::string workdir;      ///< weights, inputs and outputs (empty: a temp folder, removed after)
  std::string python = "/usr/bin/python3";
  std::string baseline_script = "bench/pytorch_baseline.py";
  std::string coco_captions = "data/coco-by/captions.json";  ///< coco5k_estimate's captions (their lengths are COCO's)
  bool pytorch = true;      ///< also run the PyTorch baseline
  std::vector<std::string> workloads;   ///< empty: all
  std::vector<std::string> precisions;  ///< empty: fp32, and bf16 where the CPU multiplies bf16 natively
  int threads = 0;          ///< 0: every core
  int iters = 3;
  int warmup = 1;
  int rounds = 1;           ///< albef and PyTorch workers run alternately this many times; medians reported
  int64_t gallery_images = 16;  ///< the retrieval gallery: N images x 5N captions
  int64_t k_test = 16;
  int64_t vqa_answers = 3128;  ///< the answer list's size (the official VQA v2 list has 3,128)
  int64_t vqa_k_test = 128;    ///< candidates re-ranked per question (VQA.yaml's k_test)
};

/// What one worker process measured.
struct WorkerRequest {
  std::string workload, precision, config, weights, inputs, out_json, outputs_dir;
  int threads = 0, iters = 3, warmup = 1;
  int64_t k_test = 16;
  int64_t k_test_vqa = 128;
};

/// Runs one workload in this process (the child side of run_model_bench)
/// and writes its JSON report: seconds (median), rate, unit, peak_rss_mb,
/// weights_mb.
void run_model_worker(const WorkerRequest& request);

/// Runs everything and returns {"gemm_peak": ..., "rows": [...]}: per
/// workload and precision, albef's and PyTorch's rates, their ratio,
/// whether the outputs agree, peak memory, FLOPs and fraction of peak.
nlohmann::json run_model_bench(const ModelBenchOptions& options, const std::string& self_exe);

/// Prints the table of run_model_bench's result.
void print_model_table(const nlohmann::json& report);

}  // namespace albef::bench
