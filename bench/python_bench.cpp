#include "bench/python_bench.h"

#include "albef/api/inference.h"
#include "albef/core/error.h"
#include "albef/io/checkpoint.h"
#include "albef/tasks/retrieval.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <unistd.h>

namespace albef::bench {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string quoted(const std::string& text) { return "'" + text + "'"; }

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// The first `count` captions of the bundled COCO pairs.
std::vector<std::string> bundled_captions(int count) {
  std::ifstream in("data/coco-by/captions.json");
  if (!in) fail("bench --suite python: no data/coco-by/captions.json (run it from the repository root)");
  std::vector<std::string> out;
  for (const json& item : json::parse(in))
    for (const json& caption : item["caption"])
      if (static_cast<int>(out.size()) < count) out.push_back(caption.get<std::string>());
  return out;
}

// The module's side: one python3 run, its median milliseconds per call.
double python_side(const PythonBenchOptions& options, const std::string& module_dir, const std::string& weights,
                   const std::string& captions_file) {
  const std::string command = "PYTHONPATH=" + quoted(module_dir) + " " + options.python + " " + quoted(options.script) +
                              " --config " + quoted(options.config) + " --checkpoint " + quoted(weights) +
                              " --captions " + quoted(captions_file) + " --precision " + options.precision +
                              " --threads " + std::to_string(options.threads) + " --iters " +
                              std::to_string(options.iters);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  if (!pipe) fail("bench --suite python: cannot run ", options.python);
  std::string output;
  std::array<char, 4096> buffer;
  while (size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe.get())) output.append(buffer.data(), n);
  const int status = ::pclose(pipe.release());
  const json result = json::parse(output, nullptr, false);
  if (status != 0 || result.is_discarded())
    fail("bench --suite python: ", command, " failed (build the module: it lives in ", module_dir, ")\n", output);
  return result["ms"].get<double>();
}

}  // namespace

json run_python_bench(const PythonBenchOptions& options, const std::string& self_exe) {
  const std::string dir = options.workdir.empty()
                              ? (fs::temp_directory_path() / ("albef_python_bench_" + std::to_string(::getpid()))).string()
                              : options.workdir;
  fs::create_directories(dir);
  struct RemoveTemporary {  // also when a side fails
    std::string dir;
    ~RemoveTemporary() {
      std::error_code ignored;
      if (!dir.empty()) fs::remove_all(dir, ignored);
    }
  } remove{options.workdir.empty() ? dir : ""};
  const std::string module_dir =
      options.module_dir.empty() ? (fs::path(self_exe).parent_path() / "python").string() : options.module_dir;
  std::string weights = options.checkpoint;
  if (weights.empty()) {
    weights = dir + "/retrieval_random.pth";
    at::manual_seed(0);
    AlbefModel model(load_config(options.config), retrieval_model_options(false));
    model->init_weights();
    io::write_torch_file(weights, io::state_dict_to_object(state_dict(*model)));
  }
  const std::vector<std::string> captions = bundled_captions(options.captions);
  const std::string captions_file = dir + "/captions.txt";
  {
    std::ofstream out(captions_file);
    for (const std::string& caption : captions) out << caption << "\n";
  }
  // The same model as the module loads: every caption in one forward pass.
  InferenceOptions inference;
  inference.config_path = options.config;
  inference.checkpoint_path = weights;
  inference.threads = options.threads;
  inference.precision = parse_precision(options.precision);
  inference.batch_size = static_cast<int64_t>(captions.size());
  auto albef = std::make_unique<AlbefInference>(inference);
  albef->text_features(captions);  // warm-up

  json report = {{"captions", captions.size()}, {"threads", at::get_num_threads()}, {"precision", options.precision},
                 {"rounds", json::array()}};
  std::vector<double> cpp_ms, python_ms;
  for (int round = 0; round < options.rounds; ++round) {
    std::vector<double> times;
    for (int i = 0; i < options.iters; ++i) {
      const auto start = std::chrono::steady_clock::now();
      albef->text_features(captions);
      times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    cpp_ms.push_back(median(times));
    python_ms.push_back(python_side(options, module_dir, weights, captions_file));
    report["rounds"].push_back({{"cpp_ms", cpp_ms.back()}, {"python_ms", python_ms.back()}});
    std::fprintf(stderr, "round %d: C++ %.2f ms, Python %.2f ms per call\n", round + 1, cpp_ms.back(), python_ms.back());
  }
  report["cpp_ms"] = median(cpp_ms);
  report["python_ms"] = median(python_ms);
  report["ratio"] = report["python_ms"].get<double>() / report["cpp_ms"].get<double>();
  return report;
}

void print_python_table(const json& report) {
  std::printf("embed %lld captions (%s, %lld threads): C++ %.2f ms, Python module %.2f ms per call: %.3fx\n",
              report["captions"].get<long long>(), report["precision"].get<std::string>().c_str(),
              report["threads"].get<long long>(), report["cpp_ms"].get<double>(), report["python_ms"].get<double>(),
              report["ratio"].get<double>());
}

}  // namespace albef::bench
