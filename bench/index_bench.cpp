#include "bench/index_bench.h"

#include "albef/serve/image_index.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <unistd.h>

namespace albef::bench {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

at::Tensor random_unit_rows(int64_t n, int64_t dim) {
  const at::Tensor x = at::randn({n, dim});
  return x / x.norm(2, 1, true);
}

}  // namespace

nlohmann::json run_index_bench(const IndexBenchOptions& options) {
  at::manual_seed(0);
  const at::Tensor gallery = random_unit_rows(options.gallery, options.dim);
  const at::Tensor queries = random_unit_rows(options.queries, options.dim);
  std::vector<std::string> paths(static_cast<size_t>(options.gallery));
  for (size_t i = 0; i < paths.size(); ++i) paths[i] = "images/" + std::to_string(i) + ".jpg";

  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::vector<serve::IndexHit>> exact;
  namespace fs = std::filesystem;
  const std::string scratch = (fs::temp_directory_path() / ("albef_index_bench_" + std::to_string(::getpid()))).string();
  for (const auto kind : {serve::IndexKind::Flat, serve::IndexKind::Ivf, serve::IndexKind::Hnsw}) {
    auto start = std::chrono::steady_clock::now();
    serve::ImageIndex index(options.dim, kind, options.gallery);
    index.add(gallery, paths);
    const double build_s = seconds_since(start);
    // The saved faiss file holds what the structure keeps in memory
    // (features, lists or graph); process RSS deltas would hide it behind
    // the allocator's reuse of freed memory.
    index.save(scratch);
    const auto index_bytes = static_cast<double>(fs::file_size(scratch));
    for (const char* suffix : {"", ".paths", ".json"}) fs::remove(scratch + suffix);

    start = std::chrono::steady_clock::now();
    const int64_t single = std::min<int64_t>(options.queries, 200);
    for (int64_t q = 0; q < single; ++q) index.search(queries.slice(0, q, q + 1), options.k);
    const double query_ms = 1000.0 * seconds_since(start) / static_cast<double>(single);
    start = std::chrono::steady_clock::now();
    const auto hits = index.search(queries, options.k);
    const double batch_query_ms = 1000.0 * seconds_since(start) / static_cast<double>(options.queries);
    if (kind == serve::IndexKind::Flat) exact = hits;

    int64_t found = 0;
    for (size_t q = 0; q < hits.size(); ++q) {
      std::set<int64_t> truth;
      for (const auto& hit : exact[q]) truth.insert(hit.id);
      for (const auto& hit : hits[q]) found += truth.count(hit.id);
    }
    rows.push_back({{"index", index.kind_name()},
                    {"gallery", options.gallery},
                    {"dim", options.dim},
                    {"build_s", build_s},
                    {"index_mb", index_bytes / (1 << 20)},
                    {"query_ms", query_ms},
                    {"batch_query_ms", batch_query_ms},
                    {"recall_at_k", static_cast<double>(found) / static_cast<double>(options.queries * options.k)},
                    {"k", options.k}});
  }
  return rows;
}

}  // namespace albef::bench
