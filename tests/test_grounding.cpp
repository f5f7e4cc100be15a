// Weakly supervised grounding (Grounding.py, dataset/utils.py grounding_eval)
// against the official code's fixture, `albef grounding` end to end, and the
// `albef gradcam` heat maps.

#include "albef/core/error.h"
#include "albef/io/npy.h"
#include "albef/io/pyobject.h"
#include "albef/tasks/grounding.h"
#include "albef/text/tokenizer.h"
#include "albef/vision/image.h"
#include "tasks/grounding/heatmap.h"
#include "tasks/grounding/refer.h"

#include "test_util.h"
#include "tiny_model.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>

#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;
namespace grounding = albef::grounding;
using albef::testing::data_path;
using albef::testing::expect_relative;
using albef::testing::make_temp_dir;
using albef::testing::read_json_lines;
using albef::testing::run_command;
using albef::testing::source_path;
using Keys = std::vector<std::string>;
using nlohmann::json;

at::Tensor fixture(const std::string& name) { return albef::io::read_npy(data_path("grounding/npy/" + name + ".npy")); }

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

json recorded() { return read_json(data_path("grounding/grounding.json")); }

// The fixture's Grounding_tiny.yaml with absolute paths; `test_file` and
// `det_file` default to the fixture's.
std::string write_grounding_config(const std::string& dir, const std::string& test_file = "",
                                   const std::string& det_file = "", const std::string& train_file = "",
                                   int batch = 4) {
  const std::string refs = data_path("grounding/refs.json");
  std::ofstream(dir + "/Grounding_tiny.yaml")
      << "train_file: ['" << (train_file.empty() ? refs : train_file) << "']\n"
      << "test_file: ['" << (test_file.empty() ? refs : test_file) << "']\n"
      << "refcoco_data: '" << data_path("grounding/refer") << "'\n"
      << "det_file: '" << (det_file.empty() ? data_path("grounding/dets.json") : det_file) << "'\n"
      << "coco_file: 'unused.json'\n"
      << "image_root: '" << source_path("data/coco-by") << "/'\n"
      << "bert_config: '" << data_path("tiny/config_bert.json") << "'\n"
      << "image_res: 32\nbatch_size: " << batch << "\nqueue_size: 16\nmomentum: 0.995\nvision_width: 64\nembed_dim: 32\n"
      << "temp: 0.07\nalpha: 0.4\ndistill: true\nwarm_up: true\n"
      << "optimizer: {opt: adamW, lr: 1.0e-05, weight_decay: 0.02}\n"
      << "schedular: {sched: cosine, lr: 1.0e-05, epochs: 5, min_lr: 1.0e-06, decay_rate: 1, warmup_lr: 1.0e-05, "
         "warmup_epochs: 1, cooldown_epochs: 0}\n"
      << "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n";
  return dir + "/Grounding_tiny.yaml";
}

// Grounding.py's model after its load of the tiny pretraining checkpoint, in eval mode.
albef::AlbefModel load_grounding_model(albef::LoadReport* report = nullptr) {
  const albef::Config config = albef::load_config(write_grounding_config(make_temp_dir("grounding_model")));
  albef::AlbefModel model(config, albef::grounding_model_options(true));
  model->init_weights();
  const albef::LoadReport loaded = albef::load_checkpoint(model, data_path("tiny/albef_pretrain_tiny.pth"));
  if (report) *report = loaded;
  model->eval();
  return model;
}

albef::Gradcam fixture_gradcam(albef::AlbefModel& model, albef::GradcamMode mode, int64_t block) {
  return albef::compute_gradcam(model, fixture("inputs__image"), fixture("inputs__input_ids"),
                                fixture("inputs__attention_mask"), {mode, block});
}

std::string joined(const std::vector<std::string>& args) {
  std::string command;
  for (const auto& arg : args) command += (command.empty() ? "" : " ") + arg;
  return command;
}

void expect_error(const std::function<void()>& run, const std::vector<std::string>& needles) {
  try {
    run();
    ADD_FAILURE() << "no error; expected one naming " << needles.front();
  } catch (const albef::Error& e) {
    for (const std::string& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what() << "\n(looked for " << needle << ")";
  }
}

}  // namespace

TEST(GroundingModel, CheckpointLoadsAsGroundingPyLoadsIt) {
  albef::LoadReport report;
  load_grounding_model(&report);
  const json official = recorded();
  EXPECT_EQ(report.missing_keys, official["load_missing_keys"].get<Keys>());
  Keys unexpected = report.unexpected_keys, expected = official["load_unexpected_keys"].get<Keys>();
  std::sort(unexpected.begin(), unexpected.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(unexpected, expected);
}

TEST(GroundingModel, FullSizeKeysAndShapesAreTheOfficialOnes) {
  // Grounding.py builds model_retrieval.ALBEF: fixtures/keys/grounding.json is
  // byte for byte the retrieval manifest, kept here as keys/retrieval.json.
  const albef::Config config = albef::load_config(source_path("configs/Grounding.yaml"));
  albef::AlbefModel model(config, albef::grounding_model_options(true));
  albef::testing::expect_official_keys(model, data_path("keys/retrieval.json"));
}

TEST(Gradcam, ItmMatchesOfficial) {
  albef::AlbefModel model = load_grounding_model();
  const albef::Gradcam cam = fixture_gradcam(model, albef::GradcamMode::Itm, 3);
  EXPECT_TENSOR_NEAR(cam.attention, fixture("itm__attention_map"), 1e-5);
  expect_relative(cam.gradients, fixture("itm__attn_gradients"), 1e-4, "itm attention gradients");
  EXPECT_TENSOR_NEAR(cam.maps, fixture("itm__gradcam"), 1e-5);
  // The per-token maps average (over the padded length, [CLS] included) to the official map.
  ASSERT_EQ(cam.token_maps.sizes(), (std::vector<int64_t>{4, 7, 2, 2}));
  EXPECT_TENSOR_NEAR(cam.token_maps.mean(1), fixture("itm__gradcam"), 1e-6);
  // Padding tokens have no map.
  const at::Tensor padding = fixture("inputs__attention_mask").eq(0);
  EXPECT_EQ(cam.token_maps.index({padding}).abs().sum().item<double>(), 0.0);
}

TEST(Gradcam, ItcMatchesOfficial) {
  albef::AlbefModel model = load_grounding_model();
  const albef::Gradcam cam = fixture_gradcam(model, albef::GradcamMode::Itc, 1);
  EXPECT_TENSOR_NEAR(cam.attention, fixture("itc__attention_map"), 1e-5);
  expect_relative(cam.gradients, fixture("itc__attn_gradients"), 1e-4, "itc attention gradients");
  EXPECT_TENSOR_NEAR(cam.maps, fixture("itc__gradcam"), 1e-5);
  EXPECT_FALSE(cam.token_maps.defined());
}

TEST(Gradcam, ComputesNoWeightGradientAndLeavesTheModelAsItWas) {
  // The official val() runs a full backward and fills every weight's .grad;
  // here only the attention's gradient is computed.
  albef::AlbefModel model = load_grounding_model();
  for (auto& parameter : model->parameters()) ASSERT_FALSE(parameter.grad().defined());
  for (const auto& [mode, block] : {std::pair{albef::GradcamMode::Itm, 3}, std::pair{albef::GradcamMode::Itc, 1}}) {
    fixture_gradcam(model, mode, block);
    for (const auto& item : model->named_parameters())
      EXPECT_FALSE(item.value().grad().defined()) << item.key() << " got a gradient";
  }
  // Recording is off again: the layer's next forward keeps nothing new.
  const auto& layer = *model->text_bert()->layer[3]->as<albef::BertLayer>()->crossattention->self;
  const at::Tensor kept = layer.attention_map();
  fixture_gradcam(model, albef::GradcamMode::Itc, 1);
  EXPECT_TRUE(layer.attention_map().is_same(kept));
}

TEST(Gradcam, BlockOutsideTheModelIsNamed) {
  albef::AlbefModel model = load_grounding_model();
  expect_error([&] { fixture_gradcam(model, albef::GradcamMode::Itm, 8); }, {"--block_num 8", "2..3"});
  expect_error([&] { fixture_gradcam(model, albef::GradcamMode::Itm, 1); }, {"--block_num 1", "fusion layer"});
  expect_error([&] { fixture_gradcam(model, albef::GradcamMode::Itc, 2); }, {"--block_num 2", "ViT block 0..1"});
}

TEST(GroundingEval, UpsampledMapAndBoxScoresAsOfficial) {
  albef::AlbefModel model = load_grounding_model();
  const at::Tensor maps = fixture_gradcam(model, albef::GradcamMode::Itm, 3).maps;
  const json ref0 = recorded()["modes"]["itm"]["per_ref"][0];
  const at::Tensor upsampled = grounding::upsample_map(maps[0], 422, 640);
  // Every 8th row and column of the official F.interpolate(..., mode='bicubic') output.
  EXPECT_TENSOR_NEAR(upsampled.slice(0, 0, 422, 8).slice(1, 0, 640, 8), fixture("itm__ref0__mask_upsampled_every8"),
                     1e-6);
  EXPECT_NEAR(upsampled.min().item<double>(), ref0["mask_upsampled_min"].get<double>(), 1e-8);
  EXPECT_NEAR(upsampled.sum().item<double>(), ref0["mask_upsampled_sum"].get<double>(), 1e-3);
  std::vector<grounding::Box> boxes;
  const json dets = read_json(data_path("grounding/dets.json"));
  for (const json& det : dets["790"])
    boxes.push_back({det[0].get<double>(), det[1].get<double>(), det[2].get<double>(), det[3].get<double>()});
  const std::vector<float> scores = grounding::score_boxes(upsampled, boxes);
  const auto official = ref0["box_scores"].get<std::vector<double>>();
  ASSERT_EQ(scores.size(), official.size());
  for (size_t i = 0; i < scores.size(); ++i) EXPECT_NEAR(scores[i], official[i], 1e-5 * official[i]) << "box " << i;
  // bicubic without align_corners overshoots: a map with one hot cell dips below 0.
  const at::Tensor peaked = at::tensor({1.0f, 0.0f, 0.0f, 0.0f}).view({2, 2});
  EXPECT_LT(grounding::upsample_map(peaked, 40, 40).min().item<float>(), 0.0f);
}

TEST(GroundingEval, IouUsesInclusivePixelCoordinates) {
  EXPECT_NEAR(grounding::compute_iou({20, 15, 580, 390}, {10, 10, 600, 400}), 0.9425, 1e-12);
  EXPECT_NEAR(grounding::compute_iou({255, 155, 130, 100}, {10, 10, 600, 400}), 0.05416666666666667, 1e-12);
  // Touching boxes share a pixel row in inclusive coordinates, but x1 < x2 is strict: no overlap.
  EXPECT_EQ(grounding::compute_iou({0, 0, 10, 10}, {9, 0, 10, 10}), 0.0);
  EXPECT_NEAR(grounding::compute_iou({0, 0, 10, 10}, {8, 0, 10, 10}), 20.0 / 180.0, 1e-12);
}

TEST(GroundingEval, ReusesThePreviousBoxWhenNoScoreIsAboveZero) {
  const grounding::Refer refer = grounding::load_refer(data_path("grounding/refer"));
  const grounding::Detections dets = grounding::load_detections(data_path("grounding/dets.json"), refer);
  std::vector<grounding::Expression> expressions =
      grounding::load_expressions({data_path("grounding/refs.json")}, "", true);
  // Ref 0's map picks a box; ref 1's map is all zeros: it keeps ref 0's box.
  at::Tensor maps = at::zeros({4, 2, 2});
  maps[0].fill_(1.0);
  const grounding::GroundingEvaluation evaluation = grounding::grounding_eval(expressions, maps, refer, dets, "dets");
  ASSERT_TRUE(evaluation.results[0].box.has_value());
  EXPECT_FALSE(evaluation.results[0].reused_previous);
  EXPECT_TRUE(evaluation.results[1].reused_previous);
  EXPECT_EQ(evaluation.results[1].box, evaluation.results[0].box);
  EXPECT_EQ(evaluation.reused_boxes, 3);
  // With nothing before it, an all-zero first map chooses no box: a miss.
  const grounding::GroundingEvaluation none =
      grounding::grounding_eval(expressions, at::zeros({4, 2, 2}), refer, dets, "dets");
  EXPECT_FALSE(none.results[0].box.has_value());
  EXPECT_FALSE(none.results[0].hit);
}

TEST(GroundingData, ReadsReferAsPython2WroteIt) {
  const grounding::Refer refer = grounding::load_refer(data_path("grounding/refer"));
  const json gt = read_json(data_path("grounding/gt.json"));
  ASSERT_EQ(refer.refs.size(), 4u);
  for (const auto& [key, box] : gt["gt_boxes_xywh"].items()) {
    const grounding::Ref& ref = refer.refs.at(std::stoll(key));
    EXPECT_EQ(ref.box, (grounding::Box{box[0], box[1], box[2], box[3]})) << key;
    EXPECT_EQ(ref.split, gt["splits"][key].get<std::string>());
    EXPECT_EQ(ref.image_id, gt["ref_image_id"][key].get<int64_t>());
  }
  EXPECT_EQ(refer.image_sizes.at(790), (std::array<int64_t, 2>{422, 640}));
  // The whole pickle, Python 2's STRING and UNICODE opcodes included.
  const albef::io::PyObjectPtr refs = albef::io::read_pickle_file(refer.refs_file);
  EXPECT_EQ(refs->items[3]->get("sentences")->items[0]->get("raw")->text, "blue street sign caf\u00e9");
  EXPECT_EQ(refs->items[0]->get("sentences")->items[0]->get("tokens")->items[1]->text, "birthday");
}

TEST(GroundingData, ProtocolZeroLiteralsDecodeAsPython) {
  const std::string dir = make_temp_dir("pickle_text");
  // ["a\n'b", u"\u00e9\U0001F600", 7, 123456789012L, -2.5, True, <memo 1 again>] as Python 2 writes it.
  std::ofstream(dir + "/p0.p", std::ios::binary)
      << "(lp0\nS'a\\n\\'b'\np1\naV\\u00e9\\U0001f600\np2\naI7\naL123456789012L\naF-2.5\naI01\nag1\na.";
  const albef::io::PyObjectPtr list = albef::io::read_pickle_file(dir + "/p0.p");
  ASSERT_EQ(list->items.size(), 7u);
  EXPECT_EQ(list->items[0]->text, "a\n'b");
  EXPECT_EQ(list->items[1]->text, "\u00e9\U0001F600");
  EXPECT_EQ(list->items[2]->integer, 7);
  EXPECT_EQ(list->items[3]->integer, 123456789012LL);
  EXPECT_EQ(list->items[4]->real, -2.5);
  EXPECT_TRUE(list->items[5]->boolean);
  EXPECT_EQ(list->items[6]->text, "a\n'b");
  for (const auto& [content, needle] : std::vector<std::pair<std::string, std::string>>{
           {"(lp0\nI12x\na.", "malformed INT"},
           {"(lp0\nS'open\na.", "malformed STRING"},
           {"(lp0\ng9\na.", "unknown memo key"},
           {"cos\nsystem\n(S'true'\ntR.", "os"}}) {
    std::ofstream(dir + "/bad.p", std::ios::binary) << content;
    expect_error([&] { albef::io::read_pickle_file(dir + "/bad.p"); }, {"bad.p", needle});
  }
}

TEST(GroundingData, BadDetectionsAndRefsAreNamed) {
  const std::string dir = make_temp_dir("grounding_bad");
  const grounding::Refer refer = grounding::load_refer(data_path("grounding/refer"));
  std::ofstream(dir + "/dets_unknown.json") << R"({"790": [[0, 0, 10, 10, 0.5]], "424242": [[0, 0, 5, 5, 0.1]]})";
  expect_error([&] { grounding::load_detections(dir + "/dets_unknown.json", refer); },
               {"dets_unknown.json", "\"424242\"", "instances.json"});
  std::ofstream(dir + "/dets_bad_box.json") << R"({"790": [[0, 0, 10]]})";
  expect_error([&] { grounding::load_detections(dir + "/dets_bad_box.json", refer); },
               {"dets_bad_box.json", "\"790\" detection 0"});
  std::ofstream(dir + "/refs_unknown.json") << R"([{"image": "images/000000000790.jpg", "text": "x", "ref_id": 77}])";
  std::ofstream(dir + "/refs_no_id.json") << R"([{"image": "images/000000000790.jpg", "text": "x"}])";
  expect_error([&] { grounding::load_expressions({dir + "/refs_no_id.json"}, "", true); },
               {"refs_no_id.json", "entry 0", "ref_id"});

  // Through the command: an unknown ref and a ref whose image has no boxes
  // fail before any work, naming the file and the entry.
  std::ofstream(dir + "/dets_empty.json") << R"({"790": [], "107438": [[0, 0, 10, 10, 0.5]]})";
  for (const auto& [config, needles] : std::vector<std::pair<std::string, Keys>>{
           {write_grounding_config(make_temp_dir("grounding_bad_ref"), dir + "/refs_unknown.json"),
            {"refs_unknown.json", "entry 0", "ref_id 77", "refs(unc).p"}},
           {write_grounding_config(make_temp_dir("grounding_no_boxes"), "", dir + "/dets_empty.json"),
            {"refs.json", "entry 0", "dets_empty.json", "no boxes for image 790"}}}) {
    std::string output;
    EXPECT_NE(run_command(std::string(ALBEF_CLI) + " grounding --evaluate --config " + config + " --checkpoint " +
                              data_path("tiny/albef_pretrain_tiny.pth") + " --block_num 3 --output_dir " + dir +
                              "/out",
                          &output),
              0);
    for (const std::string& needle : needles) EXPECT_NE(output.find(needle), std::string::npos) << output;
  }
  std::string output;
  EXPECT_NE(run_command(std::string(ALBEF_CLI) + " grounding --evaluate --config " +
                            write_grounding_config(make_temp_dir("grounding_block")) + " --checkpoint " +
                            data_path("tiny/albef_pretrain_tiny.pth") + " --output_dir " + dir + "/out",
                        &output),
            0);
  EXPECT_NE(output.find("--block_num 8 is not a fusion layer"), std::string::npos) << output;
}

TEST(GroundingCli, EvaluationMatchesOfficialForBothModes) {
  const std::string dir = make_temp_dir("grounding_eval");
  const std::string config = write_grounding_config(dir);
  const json official = recorded();
  for (const auto& [mode, block] : {std::pair<std::string, int>{"itm", 3}, std::pair<std::string, int>{"itc", 1}}) {
    const std::string out = dir + "/" + mode;
    std::string output;
    ASSERT_EQ(run_command(joined({ALBEF_CLI, "grounding", "--evaluate", "--config", config, "--checkpoint",
                                  data_path("tiny/albef_pretrain_tiny.pth"), "--gradcam_mode", mode, "--block_num",
                                  std::to_string(block), "--output_dir", out, "--threads", "1"}),
                          &output),
              0)
        << output;
    const json& expected = official["modes"][mode];
    const auto log = read_json_lines(out + "/log.txt");
    ASSERT_EQ(log.size(), 1u);
    for (const auto& [split, accuracy] : expected["grounding_eval"].items())
      EXPECT_DOUBLE_EQ(log[0][split].get<double>(), accuracy.get<double>()) << mode << " " << split;
    const json results = read_json(out + "/grounding_results.json");
    const at::Tensor maps = fixture(mode + "__gradcam");
    ASSERT_EQ(results.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      const json& got = results[i];
      const json& want = expected["per_ref"][i];
      EXPECT_EQ(got["ref_id"], want["ref_id"]);
      EXPECT_EQ(got["box"], want["pred_box"]) << mode << " ref " << i;
      EXPECT_NEAR(got["iou"].get<double>(), want["iou"].get<double>(), 1e-12);
      EXPECT_EQ(got["hit"], want["hit_iou_ge_0.5"]);
      for (size_t b = 0; b < 5; ++b)
        EXPECT_NEAR(got["box_scores"][b].get<double>(), want["box_scores"][b].get<double>(),
                    1e-5 * std::abs(want["box_scores"][b].get<double>()));
      for (int64_t y = 0; y < 2; ++y)
        for (int64_t x = 0; x < 2; ++x)
          EXPECT_NEAR(got["gradcam"][y][x].get<double>(), maps[static_cast<int64_t>(i)][y][x].item<double>(), 1e-6);
    }
    EXPECT_NE(output.find("testA_d: 1.000"), std::string::npos) << output;
  }
}

TEST(GroundingCli, BatchesAreTheOfficialOnesAlsoDataParallel) {
  // Batches of 2: refs 0-1 and 2-3 are padded to their own longest, so the
  // itm maps differ from the fixture's one batch of 4 (the official quirk);
  // two ranks take one batch each and write the same results as one process.
  const std::string dir = make_temp_dir("grounding_launch");
  const std::string config = write_grounding_config(dir, "", "", "", 2);
  const std::string evaluate = " grounding --evaluate --config " + config + " --checkpoint " +
                               data_path("tiny/albef_pretrain_tiny.pth") + " --block_num 2 --threads 1";
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + evaluate + " --output_dir " + dir + "/one", &output), 0) << output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " launch --nproc 2 --" + evaluate + " --output_dir " + dir + "/two",
                        &output),
            0)
      << output;
  const json one = read_json(dir + "/one/grounding_results.json"), two = read_json(dir + "/two/grounding_results.json");
  ASSERT_EQ(one.size(), 4u);
  ASSERT_EQ(two.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(one[i]["box"], two[i]["box"]) << i;
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 2; ++x)
        EXPECT_NEAR(one[i]["gradcam"][y][x].get<double>(), two[i]["gradcam"][y][x].get<double>(), 1e-7) << i;
  }
  EXPECT_EQ(read_json_lines(dir + "/one/log.txt"), read_json_lines(dir + "/two/log.txt"));

  // The same model in one batch of 4: "the parked bike" (4 tokens with [CLS]) is padded to 7 there
  // instead of 4, and its map, divided by the padded length, shrinks by 4/7.
  const std::string four = write_grounding_config(make_temp_dir("grounding_batch4"));
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " grounding --evaluate --config " + four + " --checkpoint " +
                            data_path("tiny/albef_pretrain_tiny.pth") + " --block_num 2 --threads 1 --output_dir " +
                            dir + "/four",
                        &output),
            0)
      << output;
  const json batched = read_json(dir + "/four/grounding_results.json");
  for (int y = 0; y < 2; ++y) {
    for (int x = 0; x < 2; ++x) {
      const double alone = one[2]["gradcam"][y][x].get<double>();
      EXPECT_NEAR(batched[2]["gradcam"][y][x].get<double>(), alone * 4.0 / 7.0, 1e-5 * std::abs(alone));
    }
  }
}

TEST(GroundingCli, FineTunesThenEvaluatesEachEpoch) {
  const std::string dir = make_temp_dir("grounding_train");
  std::string output;
  ASSERT_EQ(run_command(joined({ALBEF_CLI, "grounding", "--config", write_grounding_config(dir), "--checkpoint",
                                data_path("tiny/albef_pretrain_tiny.pth"), "--block_num", "3", "--output_dir",
                                dir + "/run", "--epochs", "2", "--threads", "1", "--workers", "1"}),
                        &output),
            0)
      << output;
  const auto log = read_json_lines(dir + "/run/log.txt");
  ASSERT_EQ(log.size(), 2u);
  for (const char* key : {"train_loss_ita", "train_loss_itm", "train_lr", "val_d", "testA_d", "testB_d", "epoch"})
    EXPECT_TRUE(log[1].contains(key)) << key;
  EXPECT_TRUE(fs::exists(dir + "/run/checkpoint_01.pth"));
  EXPECT_TRUE(fs::exists(dir + "/run/loss_curve.png"));
  EXPECT_EQ(read_json(dir + "/run/grounding_results.json").size(), 4u);
}

TEST(GradcamCli, WritesOverlaysPerWordMapsAndAPage) {
  const std::string dir = make_temp_dir("gradcam_cli");
  const std::string image = source_path("data/coco-by/images/000000000790.jpg");
  std::string output;
  ASSERT_EQ(run_command(joined({ALBEF_CLI, "gradcam", "--config", write_grounding_config(dir), "--checkpoint",
                                data_path("tiny/albef_pretrain_tiny.pth"), "--image", image, "--text",
                                "'the birthday cake on the table'", "--text", "'woman on the left'", "--block_num",
                                "3", "--per-word", "--html", "--out", dir + "/maps", "--threads", "1"}),
                        &output),
            0)
      << output;
  const cv::Mat picture = albef::vision::read_rgb(image);
  const json manifest = read_json(dir + "/maps/gradcam.json");
  ASSERT_EQ(manifest.size(), 2u);

  // Each sentence's map is the official token average of that sentence alone
  // (here the two were one batch, padded to the longer).
  albef::AlbefModel model = load_grounding_model();
  const albef::text::BertTokenizer tokenizer(albef::text::kBundledVocabulary);
  const at::Tensor input = albef::vision::load_test_image(image, 32).unsqueeze(0);
  size_t pictures = 2;
  for (size_t k = 0; k < 2; ++k) {
    const json& entry = manifest[k];
    const auto encoding =
        tokenizer.encode_batch({entry["caption"].get<std::string>()}, 512, albef::text::Padding::Longest);
    const albef::Gradcam alone = albef::compute_gradcam(model, input, encoding.input_ids, encoding.attention_mask,
                                                        {albef::GradcamMode::Itm, 3});
    const at::Tensor map = albef::io::read_npy(dir + "/maps/" + entry["map"].get<std::string>());
    EXPECT_TENSOR_NEAR(map, alone.maps[0], 1e-6);

    const cv::Mat overlay = cv::imread(dir + "/maps/" + entry["png"].get<std::string>());  // BGR
    ASSERT_FALSE(overlay.empty());
    EXPECT_EQ(overlay.size(), picture.size());
    // The overlay is hottest (red over blue, jet) in the map's hottest cell.
    const auto cell_heat = [&](int64_t cell) {
      const int cx = static_cast<int>((cell % 2 + 0.5) * overlay.cols / 2), cy = static_cast<int>((cell / 2 + 0.5) * overlay.rows / 2);
      const cv::Scalar mean = cv::mean(overlay(cv::Rect(cx - 10, cy - 10, 20, 20)));
      return mean[2] - mean[0];
    };
    const at::Tensor flat = map.flatten();
    EXPECT_GT(cell_heat(flat.argmax().item<int64_t>()), cell_heat(flat.argmin().item<int64_t>()) + 20) << k;

    // --per-word: one map per token after [CLS], as the notebook shows them
    // (ALBEF's tokenizer adds no [SEP]).
    const int64_t length = encoding.input_ids.size(1);
    ASSERT_EQ(entry["words"].size(), static_cast<size_t>(length - 1));
    EXPECT_EQ(entry["words"][0]["piece"], k == 0 ? "the" : "woman");
    EXPECT_EQ(entry["words"].back()["piece"], k == 0 ? "table" : "left");
    EXPECT_TENSOR_NEAR(albef::io::read_npy(dir + "/maps/" + entry["words_map"].get<std::string>()),
                       alone.token_maps[0].slice(0, 1), 1e-6);
    for (const json& word : entry["words"]) {
      const cv::Mat png = cv::imread(dir + "/maps/" + word["png"].get<std::string>());
      ASSERT_FALSE(png.empty()) << word;
      EXPECT_EQ(png.size(), picture.size());
      ++pictures;
    }
    ++pictures;
  }
  std::ifstream in(dir + "/maps/gradcam.html");
  const std::string page((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("the birthday cake on the table"), std::string::npos);
  size_t images = 0;
  for (size_t at = page.find("data:image/jpeg;base64,"); at != std::string::npos;
       at = page.find("data:image/jpeg;base64,", at + 1))
    ++images;
  EXPECT_EQ(images, pictures);  // per pair: the image, the sentence map, every word's map
}

TEST(GradcamCli, BadRequestsAreNamed) {
  const std::string dir = make_temp_dir("gradcam_bad");
  const std::string config = write_grounding_config(dir);
  const std::string image = source_path("data/coco-by/images/000000000790.jpg");
  const std::string base = std::string(ALBEF_CLI) + " gradcam --config " + config + " --checkpoint " +
                           data_path("tiny/albef_pretrain_tiny.pth") + " --out " + dir + "/maps";
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {" --image " + image + " --text a --block_num 5", "--block_num 5"},
           {" --image " + image + " --image " + image + " --text a --text b --text c --block_num 3", "2 images and 3 texts"},
           {" --image " + image + " --text a --block_num 1 --mode itc --per-word", "--per-word needs --mode itm"},
           {" --image " + dir + "/missing.jpg --text a --block_num 3", "missing.jpg"}}) {
    std::string output;
    EXPECT_NE(run_command(base + args, &output), 0) << args;
    EXPECT_NE(output.find(needle), std::string::npos) << output;
  }
  EXPECT_FALSE(fs::exists(dir + "/maps/gradcam.json"));
}
