// albef bench: measured speed and memory, against PyTorch on the same
// machine (code under bench/, results in bench/README.md).

#include "cli/common.h"

#include "bench/attention_bench.h"
#include "bench/index_bench.h"
#include "bench/memory.h"
#include "bench/model_bench.h"
#include "bench/python_bench.h"
#include "bench/serve_bench.h"

#include "albef/core/fs.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <unistd.h>

namespace albef::cli {
namespace {

struct BenchFlags {
  std::string suite = "model";
  std::string json_path;
  int threads = 0;
  bench::AttentionBenchOptions attention;
  bench::IndexBenchOptions index;
  bench::ModelBenchOptions model;
  bench::ServeBenchOptions serve;
  bench::PythonBenchOptions python;
  bool no_pytorch = false;
  // A worker: one workload in this process (started by the model suite).
  bool worker = false;
  bench::WorkerRequest request;
};

void print_index_table(const nlohmann::json& rows) {
  std::printf("gallery search: %lld random %lld-d features, top-10 of 1,000 captions\n",
              rows[0]["gallery"].get<long long>(), rows[0]["dim"].get<long long>());
  std::printf("%-10s %9s %10s %11s %13s %9s\n", "index", "build s", "index MB", "query ms", "batched ms/q", "recall");
  for (const auto& row : rows)
    std::printf("%-10s %9.2f %10.1f %11.3f %13.4f %9.3f\n", row["index"].get<std::string>().c_str(),
                row["build_s"].get<double>(), row["index_mb"].get<double>(), row["query_ms"].get<double>(),
                row["batch_query_ms"].get<double>(), row["recall_at_k"].get<double>());
}

std::string self_executable() {
  std::error_code error;
  const auto path = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string("albef") : path.string();
}

void run_bench(BenchFlags& flags) {
  if (flags.worker) {
    flags.request.threads = flags.threads;
    bench::run_model_worker(flags.request);
    return;
  }
  init_runtime(flags.threads);
  if (!flags.json_path.empty()) prepare_output_file(flags.json_path, "--json");
  nlohmann::json report = {{"threads", at::get_num_threads()}};
  if (flags.suite == "model" || flags.suite == "all") {
    flags.model.threads = flags.threads;
    flags.model.pytorch = !flags.no_pytorch;
    report["model"] = bench::run_model_bench(flags.model, self_executable());
    bench::print_model_table(report["model"]);
  }
  if (flags.suite == "serve") {  // not in "all": it runs minutes of load (and --soak_seconds more)
    flags.serve.precision = flags.model.precisions.empty() ? "fp32" : flags.model.precisions.front();
    report["serve"] = bench::run_serve_bench(flags.serve, self_executable());
    bench::print_serve_table(report["serve"]);
  }
  if (flags.suite == "python") {  // not in "all": it needs the module built (build/python)
    flags.python.threads = flags.threads;
    flags.python.rounds = flags.model.rounds;
    flags.python.precision = flags.model.precisions.empty() ? "fp32" : flags.model.precisions.front();
    if (!flags.model.checkpoint.empty()) flags.python.checkpoint = flags.model.checkpoint;
    flags.python.config = flags.model.retrieval_config;
    flags.python.workdir = flags.model.workdir;
    report["python"] = bench::run_python_bench(flags.python, self_executable());
    bench::print_python_table(report["python"]);
  }
  if (flags.suite == "index" || flags.suite == "all") {
    report["index"] = bench::run_index_bench(flags.index);
    print_index_table(report["index"]);
  }
  if (flags.suite == "attention" || flags.suite == "all") {
    flags.attention.precisions = flags.model.precisions;
    report["attention"] = bench::run_attention_bench(flags.attention);
    bench::print_attention_table(report["attention"]);
  }
  report["peak_resident_mb"] = static_cast<double>(bench::peak_resident_bytes()) / (1 << 20);
  if (!flags.json_path.empty())
    write_atomically(flags.json_path, [&](const std::string& tmp) { std::ofstream(tmp) << report.dump(1) << "\n"; });
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* command = app.add_subcommand("bench", "Measure speed and memory against PyTorch (see bench/README.md)");
  command->add_option("--suite", flags->suite,
                      "model (full-size workloads vs PyTorch), index, attention (the attention kernel vs LibTorch's "
                      "composite), all (those three), serve (albef serve under load), or python (the Python module's "
                      "overhead over C++)")
      ->check(CLI::IsMember({"model", "index", "attention", "all", "serve", "python"}));
  command->add_option("--serve-seconds", flags->serve.seconds, "Serve suite: seconds per endpoint and client count")
      ->check(CLI::PositiveNumber);
  command->add_option("--serve-clients", flags->serve.clients, "Serve suite: client counts (repeatable; default 1 8 32)")
      ->check(CLI::PositiveNumber);
  command->add_option("--serve-endpoint", flags->serve.endpoints, "Serve suite: endpoints (repeatable)")
      ->check(CLI::IsMember({"embed_text", "embed_image", "search", "score"}));
  command->add_option("--serve-gallery", flags->serve.gallery, "Serve suite: images in the synthetic gallery")
      ->check(CLI::PositiveNumber);
  command->add_option("--soak-seconds", flags->serve.soak_seconds,
                      "Serve suite: also this long of mixed good and bad requests, memory sampled")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--threads", flags->threads, "Compute threads (0 = every core)")->check(CLI::NonNegativeNumber);
  command->add_option("--json", flags->json_path, "Also write the results as JSON");
  command->add_option_function<std::string>(
      "--checkpoint", [flags](const std::string& path) { flags->model.checkpoint = flags->serve.checkpoint = path; },
      "Weights to time (default: random, seed 0)");
  command->add_option("--workload", flags->model.workloads, "Only these workloads (repeatable)")
      ->check(CLI::IsMember(bench::model_workloads()));
  command->add_option("--precision", flags->model.precisions, "fp32, bf16 and/or int8 (repeatable; default fp32, and bf16 where the CPU has native bf16 matmuls)")
      ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  command->add_option("--iters", flags->model.iters, "Timed iterations per workload (median)")
      ->check(CLI::PositiveNumber);
  command->add_option("--rounds", flags->model.rounds,
                      "Run the albef and PyTorch workers alternately this many times per workload; report medians")
      ->check(CLI::PositiveNumber);
  command->add_option("--gallery-images", flags->model.gallery_images, "Retrieval gallery: N images x 5N captions")
      ->check(CLI::PositiveNumber);
  command->add_option("--k-test", flags->model.k_test, "Retrieval: candidates re-ranked per query")
      ->check(CLI::PositiveNumber);
  command->add_option("--vqa-answers", flags->model.vqa_answers, "vqa_b16: answers in the synthetic list")
      ->check(CLI::PositiveNumber);
  command->add_option("--vqa-k-test", flags->model.vqa_k_test, "vqa_b16: candidates re-ranked per question")
      ->check(CLI::PositiveNumber);
  command->add_option("--captions", flags->model.coco_captions,
                      "coco5k_estimate: COCO captions whose lengths it measures (data/coco-by/captions.json)");
  command->add_option("--pretrain-config", flags->model.pretrain_config, "The training step's model config");
  command->add_option_function<std::string>(
      "--retrieval-config",
      [flags](const std::string& config) { flags->model.retrieval_config = flags->serve.config = config; },
      "The inference workloads' model config (and the served model's)");
  command->add_option("--vqa-config", flags->model.vqa_config, "vqa_b16's model config (its decoder depth)");
  command->add_option("--nlvr-config", flags->model.nlvr_config, "nlvr_b16's model config");
  command->add_option("--simla-config", flags->model.simla_config, "train_simla_b8's model config (SIMLA's)");
  command->add_option("--ve-config", flags->model.ve_config, "ve_b32's model config");
  command->add_option("--workdir", flags->model.workdir, "Keep weights, inputs, outputs and logs here");
  command->add_flag("--no-pytorch", flags->no_pytorch, "Skip the PyTorch baseline");
  command->add_option("--python", flags->model.python, "The Python with torch for the baseline");
  command->add_option("--baseline", flags->model.baseline_script, "The baseline script (bench/pytorch_baseline.py)");
  command->add_option("--calls", flags->attention.calls, "Attention suite: timed calls per shape (the fastest counts)")
      ->check(CLI::PositiveNumber);
  command->add_option("--gallery", flags->index.gallery, "Index suite: images in the synthetic gallery")
      ->check(CLI::PositiveNumber);
  // The worker interface (used by the model suite, one process per workload).
  command->add_flag("--worker", flags->worker)->group("");
  command->add_option("--config", flags->request.config)->group("");
  command->add_option("--weights", flags->request.weights)->group("");
  command->add_option("--inputs", flags->request.inputs)->group("");
  command->add_option("--out", flags->request.out_json)->group("");
  command->add_option("--outputs", flags->request.outputs_dir)->group("");
  command->add_option("--warmup", flags->request.warmup)->group("");
  command->add_option("--k_test", flags->request.k_test)->group("");
  command->add_option("--k_test_vqa", flags->request.k_test_vqa)->group("");
  command->callback([flags] {
    if (flags->worker) {
      if (flags->model.workloads.size() != 1 || flags->model.precisions.size() != 1)
        throw CLI::ValidationError("--worker", "needs exactly one --workload and one --precision");
      flags->request.workload = flags->model.workloads[0];
      flags->request.precision = flags->model.precisions[0];
      flags->request.iters = flags->model.iters;
    }
    run_bench(*flags);
  });
}

}  // namespace albef::cli
