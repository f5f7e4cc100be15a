#pragma once
// `albef bench --suite serve`: `albef serve` with the full-size model on
// loopback, loaded by this process's own HTTP clients (keep-alive, one per
// thread): requests/s and latency percentiles per endpoint at several client
// counts, the gain of batching (the same load against --max_batch 1), the
// server's memory, and an optional soak of mixed good and bad requests.

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace albef::bench {

struct ServeBenchOptions {
  std::string config = "configs/Retrieval_coco.yaml";  ///< the served model (ViT-B/16 at 384 px)
  std::string checkpoint;          ///< default: random full-size weights (seed 0)
  int64_t gallery = 100000;        ///< images in the synthetic search gallery
  double seconds = 10;             ///< measured per endpoint and client count
  std::vector<int> clients = {1, 8, 32};
  std::vector<std::string> endpoints = {"embed_text", "embed_image", "search", "score"};
  double soak_seconds = 0;         ///< > 0: mixed good and bad requests for this long, memory sampled
  std::string precision = "fp32";
  std::string workdir;             ///< weights, gallery and server logs (empty: a temp folder)
};

/// {"cells": [{endpoint, clients, requests, rps, p50_ms, p95_ms, p99_ms,
/// errors}], "batching": {...}, "server_rss_mb": {...}, "soak": {...}}.
nlohmann::json run_serve_bench(const ServeBenchOptions& options, const std::string& self_exe);

void print_serve_table(const nlohmann::json& report);

}  // namespace albef::bench
