#pragma once
// `albef bench --suite python`: the Python module's overhead. The same model
// embeds the same 64 captions in this process through AlbefInference and in
// a Debian python3 through `albef.Model.embed_texts` (bench/python_overhead.py),
// alternately for several rounds; the ratio of the medians is the cost of
// the boundary (argument conversion, GIL, numpy result).

#include <nlohmann/json.hpp>

#include <string>

namespace albef::bench {

struct PythonBenchOptions {
  std::string config = "configs/Retrieval_coco.yaml";  ///< the full-size model
  std::string checkpoint;                               ///< default: random full-size weights (seed 0)
  std::string python = "/usr/bin/python3";
  std::string script = "bench/python_overhead.py";
  std::string module_dir;  ///< holds the albef package (default: python/ beside the albef binary)
  int captions = 64;
  int iters = 10;          ///< timed calls per side and round (median)
  int rounds = 3;
  int threads = 0;
  std::string precision = "fp32";
  std::string workdir;     ///< the random weights (empty: a temp folder)
};

/// {"captions", "rounds": [{"cpp_ms", "python_ms"}], "cpp_ms", "python_ms", "ratio"}.
nlohmann::json run_python_bench(const PythonBenchOptions& options, const std::string& self_exe);

void print_python_table(const nlohmann::json& report);

}  // namespace albef::bench
