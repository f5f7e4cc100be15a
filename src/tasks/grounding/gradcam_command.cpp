#include "tasks/grounding/gradcam_command.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/core/web.h"
#include "albef/io/npy.h"
#include "albef/tasks/grounding.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/image.h"
#include "tasks/flags.h"
#include "tasks/grounding/heatmap.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

namespace albef::grounding {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct GradcamFlags {
  std::string config, checkpoint, out, mode = "itm", text_encoder;
  std::vector<std::string> images, texts;
  int64_t block_num = 8;
  bool per_word = false, html = false;
  tasks::ComputeFlags compute;
};

// A file-name-safe form of a word piece ("##ing" stays, "'" becomes "_").
std::string file_safe(const std::string& piece) {
  std::string out;
  for (unsigned char c : piece) out += std::isalnum(c) || c == '#' || c == '-' ? static_cast<char>(c) : '_';
  return out.empty() ? "_" : out;
}

// A JPEG (longest side at most 384 px) as a data URI, for the page.
std::string page_image(const cv::Mat& rgb) {
  const double scale = std::min(1.0, 384.0 / std::max(rgb.cols, rgb.rows));
  cv::Mat small, bgr;
  cv::resize(rgb, small, cv::Size(), scale, scale, cv::INTER_AREA);
  cv::cvtColor(small, bgr, cv::COLOR_RGB2BGR);
  std::vector<unsigned char> bytes;
  if (!cv::imencode(".jpg", bgr, bytes, {cv::IMWRITE_JPEG_QUALITY, 90})) fail("cannot encode a JPEG");
  return "data:image/jpeg;base64," + base64(bytes);
}

void write_png(const std::string& path, const cv::Mat& rgb) {
  const std::vector<unsigned char> bytes = encode_png(rgb);
  write_atomically(path, [&bytes](const std::string& tmp) {
    std::ofstream(tmp, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                               static_cast<std::streamsize>(bytes.size()));
  });
}

struct Pair {
  std::string image, text;
};

// One image with several sentences, one sentence with several images, or
// as many of each (paired in order).
std::vector<Pair> pairs_of(const GradcamFlags& flags) {
  const size_t images = flags.images.size(), texts = flags.texts.size();
  if (images != 1 && texts != 1 && images != texts)
    fail("give one --image with several --text, one --text with several --image, or as many of each (paired in "
         "order); got ", images, " images and ", texts, " texts");
  std::vector<Pair> pairs;
  for (size_t i = 0; i < std::max(images, texts); ++i)
    pairs.push_back({flags.images[images == 1 ? 0 : i], flags.texts[texts == 1 ? 0 : i]});
  return pairs;
}

void run_gradcam(const GradcamFlags& flags) {
  init_runtime(flags.compute.threads);
  const Config config = load_config(flags.config, flags.text_encoder);
  GradcamOptions options;
  options.mode = parse_gradcam_mode(flags.mode, "--mode");
  options.block_num = flags.block_num;
  check_gradcam_block(config, options, "--block_num");
  if (flags.per_word && options.mode != GradcamMode::Itm)
    fail("--per-word needs --mode itm (an itc map explains the whole sentence's similarity, not its words)");
  const std::vector<Pair> pairs = pairs_of(flags);
  std::map<std::string, cv::Mat> pictures;  // decoded before the model loads: a bad file fails at once
  for (const Pair& pair : pairs)
    if (!pictures.count(pair.image)) pictures[pair.image] = vision::read_rgb(pair.image);
  prepare_output_dir(flags.out, "--out");

  const text::BertTokenizer tokenizer(config.vocab);
  const c10::Device device = parse_device(flags.compute.device);
  const Precision precision = parse_precision(flags.compute.precision);
  flags.compute.warn_if_bf16_is_emulated();
  AlbefModel model = load_inference_model(config, grounding_model_options(false), flags.checkpoint, device, precision);

  std::vector<std::string> captions;
  std::vector<at::Tensor> images;
  for (const Pair& pair : pairs) {
    captions.push_back(text::pre_caption(pair.text, 30));  // as the notebook and Grounding.py clean text
    images.push_back(vision::load_test_image(pair.image, static_cast<int>(config.image_res)));
  }
  const text::BatchEncoding encoding =
      tokenizer.encode_batch(captions, static_cast<int>(config.bert.max_position_embeddings), text::Padding::Longest);
  Gradcam cam;
  {
    PrecisionGuard guard(precision, device);
    cam = compute_gradcam(model, at::stack(images).to(device), encoding.input_ids.to(device),
                          encoding.attention_mask.to(device), options);
  }
  const at::Tensor lengths = encoding.attention_mask.sum(1);

  json manifest = json::array();
  std::string page;
  for (size_t k = 0; k < pairs.size(); ++k) {
    const auto row = static_cast<int64_t>(k);
    const int64_t length = lengths[row].item<int64_t>();
    // One sentence's map: the official token average over its own tokens
    // ([CLS] included), so it does not depend on the other sentences' length.
    const at::Tensor sentence_map = options.mode == GradcamMode::Itm
                                        ? cam.token_maps[row].slice(0, 0, length).mean(0).cpu()
                                        : cam.maps[row].cpu();
    const std::string stem = std::to_string(k) + "_" + fs::path(pairs[k].image).stem().string();
    const cv::Mat& picture = pictures.at(pairs[k].image);
    cv::Mat overlay = overlay_heatmap(picture, sentence_map);
    annotate_heatmap(overlay, captions[k] + "  (" + gradcam_mode_name(options.mode) + ", layer " +
                                  std::to_string(options.block_num) + ")");
    io::write_npy(flags.out + "/" + stem + ".npy", sentence_map);
    write_png(flags.out + "/" + stem + ".png", overlay);
    json entry = {{"image", pairs[k].image}, {"text", pairs[k].text},     {"caption", captions[k]},
                  {"mode", flags.mode},      {"block_num", flags.block_num}, {"map", stem + ".npy"},
                  {"png", stem + ".png"}};
    std::string words_html;
    if (flags.per_word) {
      // The notebook's per-word pictures: every token after [CLS].
      json words = json::array();
      const at::Tensor word_maps = cam.token_maps[row].slice(0, 1, length).cpu().contiguous();
      io::write_npy(flags.out + "/" + stem + "_words.npy", word_maps);
      for (int64_t j = 0; j < word_maps.size(0); ++j) {
        const std::string piece = tokenizer.id_to_token(encoding.input_ids[row][j + 1].item<int64_t>());
        cv::Mat word = overlay_heatmap(picture, word_maps[j]);
        annotate_heatmap(word, "\"" + piece + "\" in: " + captions[k]);
        char index[24];
        std::snprintf(index, sizeof index, "%02lld", static_cast<long long>(j + 1));
        const std::string name = stem + "_word" + index + "_" + file_safe(piece) + ".png";
        write_png(flags.out + "/" + name, word);
        words.push_back({{"piece", piece}, {"png", name}});
        if (flags.html)
          words_html += "<figure><img src=\"" + page_image(word) + "\"><figcaption>" + html_escape(piece) +
                        "</figcaption></figure>";
      }
      entry["words"] = std::move(words);
      entry["words_map"] = stem + "_words.npy";
    }
    if (flags.html)
      page += "<section><h2>" + html_escape(pairs[k].text) + "</h2><p>" + html_escape(pairs[k].image) +
              "</p><div class=\"row\"><figure><img src=\"" + page_image(picture) +
              "\"><figcaption>image</figcaption></figure><figure><img src=\"" + page_image(overlay) +
              "\"><figcaption>whole sentence</figcaption></figure>" + words_html + "</div></section>\n";
    std::printf("%s: %s%s\n", stem.c_str(), (flags.out + "/" + stem + ".png").c_str(),
                flags.per_word ? (" + " + std::to_string(length - 1) + " word maps").c_str() : "");
    manifest.push_back(std::move(entry));
  }
  std::ofstream(flags.out + "/gradcam.json") << manifest.dump(1) << "\n";
  if (flags.html) {
    const std::string html =
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ALBEF Grad-CAM</title><style>"
        "body{font-family:sans-serif;margin:1em}.row{display:flex;flex-wrap:wrap;gap:8px}"
        "figure{margin:0}figcaption{text-align:center;font-size:90%}img{max-height:256px}</style></head><body>"
        "<h1>Grad-CAM (" + flags.mode + ", layer " + std::to_string(flags.block_num) + ")</h1>\n" + page +
        "</body></html>\n";
    write_atomically(flags.out + "/gradcam.html", [&html](const std::string& tmp) { std::ofstream(tmp) << html; });
    std::printf("wrote %s/gradcam.html\n", flags.out.c_str());
  }
}

}  // namespace

void add_gradcam_command(CLI::App& app) {
  auto flags = std::make_shared<GradcamFlags>();
  CLI::App* command = app.add_subcommand(
      "gradcam", "Grad-CAM heat maps: where the model looks for a sentence (and, with --per-word, for each word)");
  command->add_option("--config", flags->config, "A config of the model (configs/Grounding.yaml, Retrieval_*.yaml)")
      ->required();
  command->add_option("--checkpoint", flags->checkpoint, "A grounding, retrieval or pretraining checkpoint")
      ->required();
  command->add_option("--image", flags->images, "An image (repeatable)")->required();
  command->add_option("--text", flags->texts, "A sentence (repeatable)")->required();
  command->add_option("--out", flags->out, "Folder for the PNGs, .npy maps and gradcam.json")->required();
  tasks::add_text_encoder_flag(*command, flags->text_encoder);
  command->add_flag("--per-word,--per_word", flags->per_word, "Also one map per word piece (itm)");
  command->add_option("--mode", flags->mode, "itm (a fusion layer's cross-attention) or itc (a ViT block)")
      ->check(CLI::IsMember({"itm", "itc"}))
      ->capture_default_str();
  command->add_option("--block_num,--block-num", flags->block_num, "The layer Grad-CAM reads")->capture_default_str();
  command->add_flag("--html", flags->html, "Also write gradcam.html: the image and every map side by side");
  flags->compute.add_to(*command);
  command->callback([flags] { run_gradcam(*flags); });
}

}  // namespace albef::grounding
