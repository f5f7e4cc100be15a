// `albef bench` runs end to end on the tiny model: albef's workers and the
// PyTorch baseline time the same workloads on the same weights and inputs
// and produce the same outputs. (Speed is the benchmark's business, not a
// test's: nothing here is timed.)

#include "test_util.h"

#include "albef/core/runtime.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;

namespace {

// The model suite on the tiny model with `flags`; its JSON report. `output` gets what it printed, and
// `workdir` (where given) the folder of its weights and inputs.
nlohmann::json run_tiny_model_suite(const std::string& name, const std::string& flags, std::string& output,
                                    std::string* workdir = nullptr) {
  const std::string dir = make_temp_dir(name);
  if (workdir) *workdir = dir + "/work";
  const std::string config = data_path("tiny/Pretrain.yaml");
  const int status = run_command(std::string(ALBEF_CLI) + " bench --suite model --pretrain-config " + config +
                                     " --retrieval-config " + config + " --vqa-config " + data_path("tiny/VQA.yaml") +
                                     " --nlvr-config " + config + " --ve-config " + config +
                                     " --vqa-answers 64 --vqa-k-test 4 --gallery-images 4 --k-test 2 --iters 1 --threads 1 --precision fp32" + flags +
                                     " --baseline " + source_path("bench/pytorch_baseline.py") + " --python " +
                                     ALBEF_PYTHON3 + " --workdir " + dir + "/work --json " + dir + "/bench.json",
                                 &output);
  EXPECT_EQ(status, 0) << output;
  std::ifstream in(dir + "/bench.json");
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

}  // namespace

TEST(Bench, ModelSuiteComparesWithPyTorchOnTheSameOutputs) {
  std::string output, workdir;
  const nlohmann::json report = run_tiny_model_suite(
      "bench_model",
      " --workload image_b32 --workload itm_b64 --workload retrieval --workload vqa_b16 --workload nlvr_b16"
      " --workload ve_b32 --workload gradcam_b16 --workload train_b8",
      output, &workdir);
  ASSERT_FALSE(report.is_discarded()) << output;
  const auto& rows = report["model"]["rows"];
  ASSERT_EQ(rows.size(), 8u) << report.dump(1);
  for (const auto& row : rows) {
    const std::string name = row["workload"].get<std::string>();
    EXPECT_FALSE(row.contains("albef_error")) << row.dump();
    EXPECT_FALSE(row.contains("torch_error")) << row.dump();
    EXPECT_GT(row.value("albef_rate", 0.0), 0.0) << name;
    EXPECT_GT(row.value("torch_rate", 0.0), 0.0) << name;
    EXPECT_GT(row.value("gflop", 0.0), 0.0) << name;
    if (name != "train_b8") {  // training draws its own random masks on each side
      ASSERT_TRUE(row.contains("max_rel_diff")) << row.dump();
      EXPECT_LT(row["max_rel_diff"].get<double>(), 1e-4) << name;
    }
    // Inference memory above the runtime, split into the inputs, the library code paged in, and the rest.
    EXPECT_EQ(row.contains("memory_ratio"), name != "train_b8") << row.dump();
    if (row.contains("memory_ratio")) {
      const double weights = row["weights_mb"].get<double>(), inputs = row["inputs_mb"].get<double>();
      const double above_runtime = row["albef_peak_mb"].get<double>() - row["albef_runtime_mb"].get<double>();
      EXPECT_GT(inputs, 0.0) << name;
      EXPECT_GE(row["code_mb"].get<double>(), 0.0) << name;
      EXPECT_NEAR(row["memory_ratio"].get<double>() * weights, above_runtime, 1e-6) << name;
      EXPECT_NEAR(row["model_memory_ratio"].get<double>() * weights,
                  above_runtime - inputs - row["code_mb"].get<double>(), 1e-6) << name;
    }
  }
  // image_b32 holds the images and captions it read; itm_b64 also the embeddings it fuses.
  const auto row_of = [&](const std::string& name) {
    return *std::find_if(rows.begin(), rows.end(), [&](const auto& row) { return row["workload"] == name; });
  };
  const std::string inputs_dir = workdir + "/inputs/";
  double file_bytes = 0;
  for (const char* file : {"images.npy", "text_ids.npy", "text_mask.npy"})
    file_bytes += static_cast<double>(std::ifstream(inputs_dir + file, std::ios::ate | std::ios::binary).tellg());
  EXPECT_NEAR(row_of("image_b32")["inputs_mb"].get<double>() * (1 << 20), file_bytes, 3 * 256.0);  // less headers
  EXPECT_GT(row_of("itm_b64")["inputs_mb"].get<double>(), row_of("image_b32")["inputs_mb"].get<double>());
  EXPECT_GT(report["model"]["gemm_peak_gflops"]["fp32"].get<double>(), 0.0);
  // What it ran on: the CPU and the OpenBLAS kernels PyTorch's float32 products used.
  const auto& machine = report["model"]["machine"];
  EXPECT_FALSE(machine["cpu"]["model_name"].get<std::string>().empty()) << machine.dump();
  EXPECT_FALSE(machine["openblas_core"].get<std::string>().empty()) << machine.dump();
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  EXPECT_EQ(machine["openblas_coretype"], coretype && *coretype ? coretype : "unset");
  EXPECT_NE(output.find("machine: "), std::string::npos) << output;
}

TEST(Bench, ClassifyIsMeasuredAgainstTheImageEncodingOfTheSameRun) {
  std::string output;
  const nlohmann::json report =
      run_tiny_model_suite("bench_classify", " --workload image_b32 --workload classify_1000", output);
  ASSERT_FALSE(report.is_discarded()) << output;
  const auto& rows = report["model"]["rows"];
  ASSERT_EQ(rows.size(), 2u) << report.dump(1);
  const nlohmann::json& classify = rows[1];
  EXPECT_EQ(classify["workload"], "classify_1000");
  EXPECT_FALSE(classify.contains("albef_error")) << classify.dump();
  EXPECT_FALSE(classify.contains("torch_rate")) << classify.dump();  // no PyTorch side: albef's own image rate is the yardstick
  ASSERT_TRUE(classify.contains("vs_image_b32")) << classify.dump();
  EXPECT_NEAR(classify["vs_image_b32"].get<double>(),
              classify["albef_rate"].get<double>() / rows[0]["albef_rate"].get<double>(), 1e-9);
  EXPECT_NE(output.find("the image_b32 rate of this run"), std::string::npos) << output;
}

TEST(Bench, Coco5kEstimateProjectsTheEvaluationFromRatesOnCocosCaptions) {
  std::string output;
  const nlohmann::json report = run_tiny_model_suite(
      "bench_coco5k", " --workload coco5k_estimate --captions " + source_path("data/coco-by/captions.json"), output);
  ASSERT_FALSE(report.is_discarded()) << output;
  const nlohmann::json row = report["model"]["rows"][0];
  EXPECT_FALSE(row.contains("albef_error")) << row.dump();
  EXPECT_FALSE(row.contains("torch_rate")) << row.dump();  // a projection of albef's own time
  EXPECT_GT(row["gflop"].get<double>(), 0.0);
  // 5,000 images and 25,000 captions encoded, then 256 candidates re-ranked for each of the 30,000 queries.
  const double seconds = 5000 * row["image_seconds"].get<double>() + 25000 * row["text_seconds"].get<double>() +
                         30000 * 256 / row["albef_rate"].get<double>();
  EXPECT_NEAR(row["coco5k_hours"].get<double>(), seconds / 3600, 1e-9);
  EXPECT_NE(output.find("COCO-5k at k_test 256"), std::string::npos) << output;
}

TEST(Bench, RoundsAlternateTheTwoSidesAndReportMedians) {
  std::string output;
  const nlohmann::json report = run_tiny_model_suite("bench_rounds", " --workload text_b64 --rounds 3", output);
  ASSERT_FALSE(report.is_discarded()) << output;
  EXPECT_NE(output.find("albef, pytorch; albef, pytorch; albef, pytorch"), std::string::npos) << output;
  const nlohmann::json row = report["model"]["rows"][0];
  for (const std::string side : {"albef", "torch"}) {
    ASSERT_TRUE(row.contains(side + "_round_seconds")) << row.dump();
    std::vector<double> rounds = row[side + "_round_seconds"].get<std::vector<double>>();
    ASSERT_EQ(rounds.size(), 3u);
    std::sort(rounds.begin(), rounds.end());
    EXPECT_EQ(row[side + "_seconds"].get<double>(), rounds[1]) << side;
  }
  EXPECT_NEAR(row["speedup"].get<double>(), row["torch_seconds"].get<double>() / row["albef_seconds"].get<double>(),
              1e-9);
}

// int8's target is a ratio to albef's own bf16: the two alternate round by
// round, as albef and PyTorch do, and the ratio is of their medians.
TEST(Bench, Int8AlternatesWithBf16AndReportsTheRatioOfTheirMedians) {
  if (!albef::dnnl_bf16_gemm_available()) GTEST_SKIP() << "this CPU has no native bf16: int8 has no bf16 to pair with";
  std::string output;
  const nlohmann::json report =
      run_tiny_model_suite("bench_int8", " --precision int8 --workload text_b64 --rounds 3 --no-pytorch", output);
  ASSERT_FALSE(report.is_discarded()) << output;
  EXPECT_NE(output.find("text_b64_int8: albef, albef bf16; albef, albef bf16; albef, albef bf16"), std::string::npos)
      << output;
  const auto rows = report["model"]["rows"];
  const auto int8 = std::find_if(rows.begin(), rows.end(), [](const auto& row) { return row["precision"] == "int8"; });
  ASSERT_NE(int8, rows.end()) << rows.dump();
  ASSERT_TRUE(int8->contains("bf16_rate") && int8->contains("vs_bf16")) << int8->dump();
  EXPECT_NEAR((*int8)["vs_bf16"].get<double>(),
              (*int8)["albef_rate"].get<double>() / (*int8)["bf16_rate"].get<double>(), 1e-9);
}

TEST(Bench, IndexSuiteReportsEveryStructure) {
  const std::string dir = make_temp_dir("bench_index");
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " bench --suite index --gallery 3000 --threads 1 --json " + dir +
                            "/index.json",
                        &output),
            0)
      << output;
  std::ifstream in(dir + "/index.json");
  const nlohmann::json rows = nlohmann::json::parse(in)["index"];
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["index"], "flat");
  EXPECT_DOUBLE_EQ(rows[0]["recall_at_k"].get<double>(), 1.0);  // exact search against itself
  for (const auto& row : rows) EXPECT_GT(row["index_mb"].get<double>(), 0.0) << row.dump();
}

TEST(Bench, AttentionSuiteMeasuresTheKernelAgainstLibTorchsCompositeOnTheSameOutputs) {
  const std::string dir = make_temp_dir("bench_attention");
  std::string output;
  ASSERT_EQ(run_command(std::string(ALBEF_CLI) + " bench --suite attention --precision fp32 --precision bf16 " +
                            "--precision int8 --calls 1 --threads 1 --json " + dir + "/attention.json",
                        &output),
            0)
      << output;
  std::ifstream in(dir + "/attention.json");
  const nlohmann::json rows = nlohmann::json::parse(in)["attention"];
  // Four shapes in fp32, and in bf16 where the CPU has it; int8 has no attention kernel of its own.
  const size_t expected = albef::dnnl_bf16_gemm_available() ? 8u : 4u;
  ASSERT_EQ(rows.size(), expected) << output;
  EXPECT_NE(output.find("skipping int8"), std::string::npos) << output;
  for (const auto& row : rows) {
    const double tolerance = row["precision"] == "fp32" ? 1e-4 : 5e-2;  // bf16: probabilities rounded to bf16
    EXPECT_LT(row["max_diff"].get<double>(), tolerance) << row.dump();
    EXPECT_GT(row["albef_ms"].get<double>(), 0.0) << row.dump();
    EXPECT_GT(row["aten_ms"].get<double>(), 0.0) << row.dump();
  }
  EXPECT_EQ(rows[2]["shape"], "fusion_cross");
  EXPECT_EQ(rows[2]["k_len"], 257);
}

TEST(Bench, SimlaStepIsMeasuredBesideAlbefsStep) {
  std::string output;
  const nlohmann::json report =
      run_tiny_model_suite("bench_simla",
                           " --workload train_b8 --workload train_simla_b8 --simla-config " +
                               data_path("simla/Pretrain_tiny.yaml"),
                           output);
  ASSERT_FALSE(report.is_discarded()) << output;
  const auto& rows = report["model"]["rows"];
  ASSERT_EQ(rows.size(), 2u) << report.dump(1);
  const nlohmann::json& simla = rows[1];
  EXPECT_EQ(simla["workload"], "train_simla_b8");
  EXPECT_FALSE(simla.contains("albef_error")) << simla.dump();
  EXPECT_FALSE(simla.contains("torch_error")) << simla.dump();
  EXPECT_GT(simla.value("albef_rate", 0.0), 0.0);
  EXPECT_GT(simla.value("torch_rate", 0.0), 0.0);
  EXPECT_GT(simla.value("gflop", 0.0), 0.0);
  // Both sides against their own train_b8 of the run.
  ASSERT_TRUE(simla.contains("vs_train_b8") && simla.contains("torch_vs_train_b8")) << simla.dump();
}

TEST(Bench, GritStepIsMeasuredBesideAlbefsStep) {
  std::string output;
  const nlohmann::json report =
      run_tiny_model_suite("bench_grit", " --workload train_b8 --workload train_grit_b8", output);
  ASSERT_FALSE(report.is_discarded()) << output;
  const auto& rows = report["model"]["rows"];
  ASSERT_EQ(rows.size(), 2u) << report.dump(1);
  const nlohmann::json& grit = rows[1];
  EXPECT_EQ(grit["workload"], "train_grit_b8");
  EXPECT_FALSE(grit.contains("albef_error")) << grit.dump();
  EXPECT_FALSE(grit.contains("torch_error")) << grit.dump();
  // No momentum model: fewer FLOPs than ALBEF's step; both sides measured against their own train_b8.
  EXPECT_LT(grit["gflop"].get<double>(), rows[0]["gflop"].get<double>());
  ASSERT_TRUE(grit.contains("vs_train_b8") && grit.contains("torch_vs_train_b8")) << grit.dump();
  EXPECT_NEAR(grit["vs_train_b8"].get<double>(), grit["albef_rate"].get<double>() / rows[0]["albef_rate"].get<double>(),
              1e-9);
  EXPECT_NE(output.find("ALBEF's training step of this run"), std::string::npos) << output;
}
