// albef tokenize-image: SIMLA's visual tokens of images (DALL-E dVAE codes), as .npy.

#include "cli/common.h"

#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "albef/model/dvae.h"
#include "albef/vision/dalle_pixels.h"

#include <ATen/ATen.h>

#include <iostream>
#include <memory>

namespace albef::cli {
namespace {

struct TokenizeImageFlags {
  std::string dvae;
  int64_t image_res = 0;
  std::vector<std::string> images;
  std::string image_list;
  std::string out;
  int64_t batch_size = 16;
};

void run_tokenize_image(const TokenizeImageFlags& flags) {
  if (flags.image_res % 8 != 0)
    fail("tokenize-image: --image_res ", flags.image_res, " is not a multiple of 8 (one token per 8x8 cell)");
  std::vector<std::string> images = flags.images;
  if (!flags.image_list.empty()) {
    const auto listed = image_paths_from(flags.image_list);
    images.insert(images.end(), listed.begin(), listed.end());
  }
  if (images.empty()) fail("tokenize-image: no images (give --image and/or --images)");

  DvaeEncoder encoder = load_dvae_encoder(flags.dvae);
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> codes;
  for (size_t begin = 0; begin < images.size(); begin += static_cast<size_t>(flags.batch_size)) {
    const size_t end = std::min(images.size(), begin + static_cast<size_t>(flags.batch_size));
    std::vector<at::Tensor> batch;
    for (size_t i = begin; i < end; ++i) batch.push_back(vision::load_tokenizer_image(images[i], flags.image_res));
    codes.push_back(encoder->codes(at::stack(batch)));
  }
  const at::Tensor all = at::cat(codes);
  io::write_npy(flags.out, all);
  std::cout << "wrote " << all.size(0) << " x " << all.size(1) << " visual token ids (vocabulary "
            << encoder->options().vocab_size << ") to " << flags.out << "\n";
}

}  // namespace

void add_tokenize_image_command(CLI::App& app) {
  auto flags = std::make_shared<TokenizeImageFlags>();
  CLI::App* command = app.add_subcommand(
      "tokenize-image", "Write SIMLA's visual token ids of images (DALL-E dVAE codes): [N, (R/8)^2] int64 .npy");
  command->add_option("--dvae", flags->dvae, "DALL-E's encoder.pkl (a pickled dall_e.encoder.Encoder)")->required();
  command->add_option("--image_res,--image-res", flags->image_res,
                      "Side R the images are resized to (bicubic); SIMLA tokenizes at image_res / 2")
      ->required()
      ->check(CLI::PositiveNumber);
  command->add_option("--image", flags->images, "Image files");
  command->add_option("--images", flags->image_list, "A file listing image paths, one per line, or a folder");
  command->add_option("--out", flags->out, "Output .npy of int64 token ids, one row per image")->required();
  command->add_option("--batch-size,--batch_size", flags->batch_size, "Images per encoder call")
      ->check(CLI::PositiveNumber);
  command->callback([flags] { run_tokenize_image(*flags); });
}

}  // namespace albef::cli
