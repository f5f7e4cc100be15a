// albef embed: normalised ITC features of images and captions, as .npy.

#include "cli/common.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/io/npy.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct EmbedFlags {
  ModelFlags model;
  std::vector<std::string> images, texts;
  std::string image_list, text_file, out_dir;
};

void run_embed(const EmbedFlags& flags) {
  std::vector<std::string> images = flags.images;
  if (!flags.image_list.empty()) {
    const auto listed = image_paths_from(flags.image_list);
    images.insert(images.end(), listed.begin(), listed.end());
  }
  std::vector<std::string> texts = flags.texts;
  if (!flags.text_file.empty()) {
    const auto lines = read_lines(flags.text_file);
    texts.insert(texts.end(), lines.begin(), lines.end());
  }
  if (images.empty() && texts.empty()) fail("embed: nothing to embed (give --image/--images and/or --text/--texts)");
  check_output_dir(flags.out_dir, "--out");  // before the work; created once it succeeds

  InferenceOptions options = flags.model.options();
  // One modality alone needs only its own encoder in memory.
  options.images_only = texts.empty();
  options.texts_only = images.empty();
  AlbefInference albef(options);
  // Everything is computed before anything is written: a bad input leaves no partial output.
  const at::Tensor image_feat = albef.image_features(images);
  const at::Tensor text_feat = albef.text_features(texts);

  std::filesystem::create_directories(flags.out_dir);
  io::write_npy(flags.out_dir + "/image_feat.npy", image_feat);
  io::write_npy(flags.out_dir + "/text_feat.npy", text_feat);
  const nlohmann::json index = {
      {"images", images},
      {"texts", texts},
      {"embed_dim", albef.config().embed_dim},
      {"config", flags.model.config},
      {"checkpoint", flags.model.checkpoint},
      {"precision", flags.model.compute.precision},
  };
  write_atomically(flags.out_dir + "/index.json", [&](const std::string& tmp) {
    std::ofstream out(tmp);
    out << index.dump(1) << "\n";
    if (!out) fail(flags.out_dir, "/index.json: write failed");
  });
  std::cout << "wrote " << image_feat.size(0) << " image and " << text_feat.size(0) << " text features ("
            << albef.config().embed_dim << "-d) to " << flags.out_dir << "\n";
}

}  // namespace

void add_embed_command(CLI::App& app) {
  auto flags = std::make_shared<EmbedFlags>();
  CLI::App* command = app.add_subcommand("embed", "Write normalised ITC features of images and texts as .npy");
  flags->model.add_to(*command);
  command->add_option("--image", flags->images, "An image file (repeatable)");
  command->add_option("--images", flags->image_list, "A file listing image paths, one per line, or a folder");
  command->add_option("--text", flags->texts, "A caption (repeatable)");
  command->add_option("--texts", flags->text_file, "A file of captions, one per line");
  command->add_option("--out", flags->out_dir, "Output folder (image_feat.npy, text_feat.npy, index.json)")
      ->required();
  command->callback([flags] { run_embed(*flags); });
}

}  // namespace albef::cli
