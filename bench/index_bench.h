#pragma once
// Gallery search at scale: the faiss index structures on random normalised
// features (time to build, memory, query latency, recall against exact).

#include <nlohmann/json.hpp>

#include <cstdint>

namespace albef::bench {

struct IndexBenchOptions {
  int64_t gallery = 100000;  ///< images in the gallery
  int64_t dim = 256;         ///< ALBEF's embed_dim
  int64_t queries = 1000;    ///< captions searched (recall and batched latency)
  int64_t k = 10;
};

/// One JSON object per index structure (flat, ivf, hnsw) with build_s,
/// index_mb (the structure's size), query_ms (one caption at a time),
/// batch_query_ms (per caption, all at once) and recall_at_k (of the exact
/// top k; random features are the hardest case for approximate search).
nlohmann::json run_index_bench(const IndexBenchOptions& options);

}  // namespace albef::bench
