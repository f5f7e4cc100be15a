#include "albef/serve/gallery.h"

#include "albef/core/error.h"
#include "albef/core/web.h"
#include "albef/model/itm.h"
#include "albef/core/fs.h"
#include "albef/vision/image.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unordered_set>

namespace albef::serve {
namespace fs = std::filesystem;
namespace {

constexpr size_t kReportedSkips = 10;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

nlohmann::json model_info(const AlbefInference& albef) {
  return {{"config", albef.options().config_path},
          {"checkpoint", albef.options().checkpoint_path},
          {"embed_dim", albef.config().embed_dim},
          {"image_res", albef.config().image_res}};
}

ImageIndex open_or_create(const AlbefInference& albef, const std::string& index_path, const IndexBuildOptions& options,
                          int64_t new_images) {
  if (!options.append || !fs::exists(index_path)) {
    ImageIndex index(albef.config().embed_dim, options.kind, new_images);
    index.info() = model_info(albef);
    return index;
  }
  ImageIndex index = ImageIndex::load(index_path);
  if (index.dim() != albef.config().embed_dim)
    fail(index_path, ": holds ", index.dim(), "-d features but ", albef.options().config_path, " makes ",
         albef.config().embed_dim, "-d ones");
  const std::string built_with = index.info().value("checkpoint", "");
  if (fs::path(built_with).filename() != fs::path(albef.options().checkpoint_path).filename())
    std::cerr << "warning: " << index_path << " was built with " << built_with << ", appending features of "
              << albef.options().checkpoint_path << "\n";
  return index;
}

// A JPEG thumbnail (longest side 192 px) as a data URI, or "" if the image
// cannot be read any more.
std::string thumbnail_uri(const std::string& path) {
  try {
    const cv::Mat rgb = vision::read_rgb(path);
    const double scale = 192.0 / std::max(rgb.cols, rgb.rows);
    cv::Mat small, bgr;
    cv::resize(rgb, small, cv::Size(), std::min(1.0, scale), std::min(1.0, scale), cv::INTER_AREA);
    cv::cvtColor(small, bgr, cv::COLOR_RGB2BGR);
    std::vector<uchar> bytes;
    if (!cv::imencode(".jpg", bgr, bytes, {cv::IMWRITE_JPEG_QUALITY, 85})) return "";
    return "data:image/jpeg;base64," + base64(bytes);
  } catch (const Error&) {
    return "";
  }
}

}  // namespace

IndexBuildReport build_image_index(AlbefInference& albef, const std::vector<std::string>& image_paths,
                                   const std::string& index_path, const IndexBuildOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  IndexBuildReport report;
  std::vector<std::string> todo;
  ImageIndex index = open_or_create(albef, index_path, options, static_cast<int64_t>(image_paths.size()));
  {
    std::unordered_set<std::string> known;
    for (int64_t id = 0; id < index.size(); ++id) known.insert(index.path(id));
    for (const auto& path : image_paths) {
      if (known.insert(path).second)
        todo.push_back(path);
      else
        ++report.already_indexed;
    }
  }

  at::NoGradGuard no_grad;
  AlbefModel& model = albef.model();
  const c10::Device device = albef.device();
  data::EvalImageLoader loader(todo, static_cast<int>(albef.config().image_res), albef.options().batch_size,
                               options.workers, 3, /*skip_unreadable=*/true);
  // Features wait here until there are enough to train an IVF index, and
  // between saves.
  std::vector<at::Tensor> pending;
  std::vector<std::string> pending_paths;
  int64_t since_save = 0, done = 0;
  auto flush = [&](bool force) {
    if (pending_paths.empty()) return;
    if (!force && static_cast<int64_t>(pending_paths.size()) < index.training_size()) return;
    index.add(at::cat(pending), pending_paths);
    pending.clear();
    pending_paths.clear();
  };
  while (auto batch = loader.next()) {
    for (const auto& bad : batch->unreadable) {
      ++report.skipped;
      if (report.first_skipped.size() < kReportedSkips) report.first_skipped.push_back(bad);
    }
    done += batch->images.size(0) + static_cast<int64_t>(batch->unreadable.size());
    if (batch->images.size(0) > 0) {
      at::Tensor features;
      {
        PrecisionGuard precision(albef.options().precision, device);
        features = model->encode_image_features(batch->images.to(device));
      }
      pending.push_back(features.to(at::kCPU, at::kFloat));
      const auto indices = batch->indices.accessor<int64_t, 1>();
      for (int64_t i = 0; i < indices.size(0); ++i) pending_paths.push_back(todo[static_cast<size_t>(indices[i])]);
      since_save += indices.size(0);
      flush(false);
      if (options.save_every > 0 && since_save >= options.save_every && pending_paths.empty()) {
        index.save(index_path);
        since_save = 0;
      }
    }
    if (options.progress) {
      const double elapsed = seconds_since(start);
      std::printf("\rindexing: %lld/%lld images, %.1f images/s, %lld skipped", static_cast<long long>(done),
                  static_cast<long long>(todo.size()), done / std::max(elapsed, 1e-9),
                  static_cast<long long>(report.skipped));
      std::fflush(stdout);
    }
  }
  if (options.progress && !todo.empty()) std::printf("\n");
  flush(true);
  report.added = static_cast<int64_t>(todo.size()) - report.skipped;
  index.save(index_path);
  report.total = index.size();
  report.kind = index.kind_name();
  report.seconds = seconds_since(start);
  return report;
}

std::vector<std::vector<SearchResult>> search_gallery(AlbefInference& albef, const ImageIndex& index,
                                                      const std::vector<std::string>& captions,
                                                      const SearchOptions& options) {
  ALBEF_CHECK(options.k > 0, "k must be positive, got ", options.k);
  ALBEF_CHECK(options.rerank >= 0, "rerank must not be negative, got ", options.rerank);
  if (index.dim() != albef.config().embed_dim)
    fail("the index holds ", index.dim(), "-d features but ", albef.options().config_path, " makes ",
         albef.config().embed_dim, "-d ones");
  const at::Tensor queries = albef.text_features(captions);
  const auto hits = index.search(queries, std::max(options.k, options.rerank));

  std::vector<std::vector<SearchResult>> results(captions.size());
  at::NoGradGuard no_grad;
  AlbefModel& model = albef.model();
  const c10::Device device = albef.device();
  for (size_t q = 0; q < captions.size(); ++q) {
    std::vector<SearchResult> found;
    for (const auto& hit : hits[q]) found.push_back({hit.id, index.path(hit.id), hit.score, {}, {}});
    const size_t rerank = std::min(found.size(), static_cast<size_t>(options.rerank));
    if (rerank > 0) {
      const text::BatchEncoding text = albef.tokenize({captions[q]});
      const at::Tensor ids = text.input_ids.to(device), mask = text.attention_mask.to(device);
      at::Tensor text_embeds;
      {
        PrecisionGuard precision(albef.options().precision, device);
        text_embeds = model->encode_text(ids, mask);
      }
      std::vector<SearchResult> scored;
      const auto batch_size = static_cast<size_t>(albef.options().batch_size);
      for (size_t begin = 0; begin < rerank; begin += batch_size) {
        std::vector<at::Tensor> images;
        std::vector<size_t> which;
        for (size_t i = begin; i < std::min(rerank, begin + batch_size); ++i) {
          try {
            images.push_back(vision::load_test_pixels(found[i].path, static_cast<int>(albef.config().image_res)));
            which.push_back(i);
          } catch (const Error& e) {
            std::cerr << "warning: dropped from re-ranking: " << e.what() << "\n";
          }
        }
        if (images.empty()) continue;
        at::Tensor logits;
        {
          PrecisionGuard precision(albef.options().precision, device);
          const at::Tensor image_embeds = model->encode_image(at::stack(images).to(device));
          const auto n = static_cast<int64_t>(images.size());
          // One caption against n images: the text side is broadcast.
          FusionImages candidates(image_embeds);
          logits = itm_logits(model, text_embeds.expand({n, -1, -1}), mask.expand({n, -1}), candidates).to(at::kCPU);
        }
        const at::Tensor match = at::softmax(logits, -1).select(1, 1);
        for (size_t j = 0; j < which.size(); ++j) {
          SearchResult result = found[which[j]];
          result.itm_logit = logits[static_cast<int64_t>(j)][1].item<double>();
          result.itm_match = match[static_cast<int64_t>(j)].item<double>();
          scored.push_back(std::move(result));
        }
      }
      std::stable_sort(scored.begin(), scored.end(),
                       [](const SearchResult& a, const SearchResult& b) { return *a.itm_logit > *b.itm_logit; });
      scored.insert(scored.end(), found.begin() + static_cast<std::ptrdiff_t>(rerank), found.end());
      found = std::move(scored);
    }
    if (found.size() > static_cast<size_t>(options.k)) found.resize(static_cast<size_t>(options.k));
    results[q] = std::move(found);
  }
  return results;
}

nlohmann::json search_results_json(const std::vector<std::string>& captions,
                                   const std::vector<std::vector<SearchResult>>& results) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t q = 0; q < captions.size(); ++q) {
    nlohmann::json found = nlohmann::json::array();
    for (size_t r = 0; r < results[q].size(); ++r) {
      const SearchResult& result = results[q][r];
      nlohmann::json item = {{"rank", r + 1}, {"id", result.id}, {"path", result.path}, {"itc", result.itc}};
      if (result.itm_logit) item["itm_logit"] = *result.itm_logit;
      if (result.itm_match) item["itm_match"] = *result.itm_match;
      found.push_back(std::move(item));
    }
    const bool reranked = !results[q].empty() && results[q].front().itm_logit.has_value();
    out.push_back({{"query", captions[q]}, {"ranked_by", reranked ? "itm_logit" : "itc"}, {"results", std::move(found)}});
  }
  return out;
}

void write_search_html(const std::string& html_path, const std::vector<std::string>& captions,
                       const std::vector<std::vector<SearchResult>>& results) {
  std::string page =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>albef search</title><style>"
      "body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:6px;width:200px;"
      "vertical-align:top}img{max-width:192px;max-height:192px}figcaption{font-size:12px;word-break:break-all}"
      "</style></head><body>\n";
  for (size_t q = 0; q < captions.size(); ++q) {
    page += "<h2>" + html_escape(captions[q]) + "</h2>\n<div>\n";
    for (size_t r = 0; r < results[q].size(); ++r) {
      const SearchResult& result = results[q][r];
      char scores[128];
      if (result.itm_logit)  // the order follows the ITM logit; its probability beside it
        std::snprintf(scores, sizeof(scores), "ITM logit %.3f (p %.3f) &middot; ITC %.3f", *result.itm_logit,
                      *result.itm_match, result.itc);
      else
        std::snprintf(scores, sizeof(scores), "ITC %.3f", result.itc);
      const std::string uri = thumbnail_uri(result.path);
      page += "<figure>" + (uri.empty() ? std::string("<div>(unreadable)</div>") : "<img src=\"" + uri + "\">") +
              "<figcaption>#" + std::to_string(r + 1) + " " + scores + "<br>" + html_escape(result.path) +
              "</figcaption></figure>\n";
    }
    page += "</div>\n";
  }
  page += "</body></html>\n";
  write_atomically(html_path, [&](const std::string& tmp) {
    std::ofstream out(tmp);
    out << page;
    if (!out) fail(tmp, ": write failed");
  });
}

}  // namespace albef::serve
