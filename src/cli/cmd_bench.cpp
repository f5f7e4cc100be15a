// albef bench: measured speed and memory (code under bench/).

#include "cli/common.h"

#include "index_bench.h"
#include "memory.h"

#include "albef/core/fs.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct BenchFlags {
  std::string suite = "index";
  std::string json_path;
  int threads = 0;
  bench::IndexBenchOptions index;
};

void print_index_table(const nlohmann::json& rows) {
  std::printf("gallery search: %lld random %lld-d features, %s\n", rows[0]["gallery"].get<long long>(),
              rows[0]["dim"].get<long long>(), "top-10 of 1,000 captions");
  std::printf("%-10s %9s %10s %11s %13s %9s\n", "index", "build s", "index MB", "query ms", "batched ms/q",
              "recall");
  for (const auto& row : rows)
    std::printf("%-10s %9.2f %10.1f %11.3f %13.4f %9.3f\n", row["index"].get<std::string>().c_str(),
                row["build_s"].get<double>(), row["index_mb"].get<double>(), row["query_ms"].get<double>(),
                row["batch_query_ms"].get<double>(), row["recall_at_k"].get<double>());
}

void run_bench(const BenchFlags& flags) {
  init_runtime(flags.threads);
  nlohmann::json report = {{"threads", at::get_num_threads()}};
  if (flags.suite == "index" || flags.suite == "all") {
    report["index"] = bench::run_index_bench(flags.index);
    print_index_table(report["index"]);
  }
  report["peak_resident_mb"] = static_cast<double>(bench::peak_resident_bytes()) / (1 << 20);
  std::printf("peak resident memory of this run: %.0f MB\n", report["peak_resident_mb"].get<double>());
  if (!flags.json_path.empty())
    write_atomically(flags.json_path, [&](const std::string& tmp) { std::ofstream(tmp) << report.dump(1) << "\n"; });
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* command = app.add_subcommand("bench", "Measure speed and memory (see bench/README.md)");
  command->add_option("--suite", flags->suite, "What to measure: index, or all")
      ->check(CLI::IsMember({"index", "all"}));
  command->add_option("--gallery", flags->index.gallery, "Images in the synthetic search gallery")
      ->check(CLI::PositiveNumber);
  command->add_option("--threads", flags->threads, "Compute threads (0 = every core)")->check(CLI::NonNegativeNumber);
  command->add_option("--json", flags->json_path, "Also write the results as JSON");
  command->callback([flags] { run_bench(*flags); });
}

}  // namespace albef::cli
