// albef search: the best images of an index for captions, ITC-ranked and
// optionally re-ranked by the ITM head.

#include "cli/common.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/serve/gallery.h"

#include <cstdio>
#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct SearchFlags {
  ModelFlags model;
  std::string index, html, queries_file;
  std::vector<std::string> queries;
  serve::SearchOptions search;
  bool json = false;
};

void print_table(const std::vector<std::string>& captions,
                 const std::vector<std::vector<serve::SearchResult>>& results) {
  for (size_t q = 0; q < captions.size(); ++q) {
    std::printf("%s\n", captions[q].c_str());
    for (size_t r = 0; r < results[q].size(); ++r) {
      const auto& result = results[q][r];
      // Re-ranked results are ordered by the ITM match logit (as the official evaluation ranks);
      // its probability is shown beside it, labelled.
      if (result.itm_logit)
        std::printf("  %3zu  itm logit %7.4f  (p %6.4f)  itc %7.4f  %s\n", r + 1, *result.itm_logit,
                    *result.itm_match, result.itc, result.path.c_str());
      else
        std::printf("  %3zu  itc %7.4f  %s\n", r + 1, result.itc, result.path.c_str());
    }
  }
}

void run_search(const SearchFlags& flags) {
  std::vector<std::string> queries = flags.queries;
  if (!flags.queries_file.empty()) {
    const auto lines = read_lines(flags.queries_file);
    queries.insert(queries.end(), lines.begin(), lines.end());
  }
  if (queries.empty()) fail("search: no caption given (positional arguments or --queries FILE)");
  if (!flags.html.empty()) prepare_output_file(flags.html, "--html");
  const serve::ImageIndex index = serve::ImageIndex::load(flags.index);
  AlbefInference albef(flags.model.options());
  const auto results = serve::search_gallery(albef, index, queries, flags.search);
  if (flags.json)
    std::cout << serve::search_results_json(queries, results).dump(1) << "\n";
  else
    print_table(queries, results);
  if (!flags.html.empty()) {
    serve::write_search_html(flags.html, queries, results);
    if (!flags.json) std::cout << "wrote " << flags.html << "\n";
  }
}

}  // namespace

void add_search_command(CLI::App& app) {
  auto flags = std::make_shared<SearchFlags>();
  CLI::App* command = app.add_subcommand("search", "Find the images of an index (albef index) that match captions");
  flags->model.add_to(*command);
  command->add_option("captions", flags->queries, "Captions to search for");
  command->add_option("--queries", flags->queries_file, "A file of captions, one per line");
  command->add_option("--index", flags->index, "The index written by albef index")->required();
  command->add_option("--k", flags->search.k, "Results per caption")->check(CLI::PositiveNumber);
  command->add_option("--rerank", flags->search.rerank,
                      "Re-rank this many ITC candidates with the ITM head (0 = ITC only)")
      ->check(CLI::NonNegativeNumber);
  command->add_flag("--json", flags->json, "Print the results as JSON");
  command->add_option("--html", flags->html, "Also write an HTML page with thumbnails and scores");
  command->callback([flags] { run_search(*flags); });
}

}  // namespace albef::cli
