// albef score: ITC similarity and ITM match probability of image-caption pairs.

#include "cli/common.h"

#include "albef/core/error.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct ScoreFlags {
  ModelFlags model;
  std::vector<std::string> images, texts;
  bool json = false;
};

// Shortens a caption for the table, on a UTF-8 character boundary.
std::string clip(const std::string& text, size_t width) {
  if (text.size() <= width) return text;
  size_t cut = width - 3;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut) + "...";
}

void run_score(const ScoreFlags& flags) {
  // One image with several captions scores each caption against it.
  const std::vector<std::string> images =
      flags.images.size() == 1 ? std::vector<std::string>(flags.texts.size(), flags.images[0]) : flags.images;
  if (images.size() != flags.texts.size())
    fail("score: got ", flags.images.size(), " --image but ", flags.texts.size(),
         " --text; give them in pairs (--image A --text \"...\" --image B --text \"...\") or one --image for all");
  AlbefInference albef(flags.model.options());
  const std::vector<PairScore> scores = albef.score_pairs(images, flags.texts);
  if (flags.json) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < scores.size(); ++i)
      out.push_back({{"image", images[i]}, {"text", flags.texts[i]}, {"itc", scores[i].itc},
                     {"itm", scores[i].itm_match}});
    std::cout << out.dump(1) << "\n";
    return;
  }
  std::printf("%-3s  %-28s  %-44s  %8s  %8s\n", "#", "image", "caption", "ITC", "ITM");
  for (size_t i = 0; i < scores.size(); ++i) {
    const std::string image = std::filesystem::path(images[i]).filename().string();
    std::printf("%-3zu  %-28s  %-44s  %8.4f  %8.4f\n", i, clip(image, 28).c_str(), clip(flags.texts[i], 44).c_str(),
                scores[i].itc, scores[i].itm_match);
  }
}

}  // namespace

void add_score_command(CLI::App& app) {
  auto flags = std::make_shared<ScoreFlags>();
  CLI::App* command = app.add_subcommand(
      "score", "ITC similarity and ITM match probability of image-caption pairs (--image/--text in pairs, or one --image "
      "for every --text)");
  flags->model.add_to(*command);
  command->add_option("--image", flags->images, "An image file (repeatable, paired with --text; a single one goes with every --text)")->required();
  command->add_option("--text", flags->texts, "A caption (repeatable, paired with --image)")->required();
  command->add_flag("--json", flags->json, "Print JSON instead of a table");
  command->callback([flags] { run_score(*flags); });
}

}  // namespace albef::cli
