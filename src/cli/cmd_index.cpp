// albef index: embed a gallery of images into a faiss index for `albef search`.

#include "cli/common.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/serve/gallery.h"

#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct IndexFlags {
  ModelFlags model;
  std::string images, out, kind = "auto";
  serve::IndexBuildOptions build;
};

void run_index(const IndexFlags& flags) {
  prepare_output_file(flags.out, "--out");  // before the work, not after it
  const std::vector<std::string> images = image_paths_from(flags.images);
  if (images.empty()) fail(flags.images, ": no images to index");
  serve::IndexBuildOptions build = flags.build;
  build.kind = serve::parse_index_kind(flags.kind);
  InferenceOptions options = flags.model.options();
  options.images_only = true;  // a gallery needs image features only: no BERT in memory
  AlbefInference albef(options);
  const serve::IndexBuildReport report = serve::build_image_index(albef, images, flags.out, build);
  std::cout << "indexed " << report.added << " images in " << report.seconds << " s; " << flags.out << " ("
            << report.kind << ") holds " << report.total << " images";
  if (report.already_indexed > 0) std::cout << "; " << report.already_indexed << " were indexed already";
  std::cout << "\n";
  if (report.skipped > 0) {
    std::cout << "skipped " << report.skipped << " unreadable image(s):";
    for (const auto& bad : report.first_skipped) std::cout << "\n  " << bad.message;
    std::cout << "\n";
  }
}

}  // namespace

void add_index_command(CLI::App& app) {
  auto flags = std::make_shared<IndexFlags>();
  CLI::App* command = app.add_subcommand("index", "Embed images into a faiss index (for albef search)");
  flags->model.add_to(*command);
  command->add_option("--images", flags->images, "A file listing image paths, one per line, or a folder")
      ->required();
  command->add_option("--out", flags->out, "The index file (INDEX, INDEX.paths and INDEX.json are written)")
      ->required();
  command->add_flag("--append", flags->build.append,
                    "Add to an existing index (images it already holds are skipped)");
  command->add_option("--index-type", flags->kind,
                      "auto (flat below 250,000 images, else IVF), flat (exact), ivf or hnsw")
      ->check(CLI::IsMember({"auto", "flat", "ivf", "hnsw"}));
  command->add_option("--workers", flags->build.workers, "Image-decoding threads (0 = one per core)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--save-every", flags->build.save_every, "Also save after every N new images (0 = at the end)")
      ->check(CLI::NonNegativeNumber);
  command->callback([flags] { run_index(*flags); });
}

}  // namespace albef::cli
