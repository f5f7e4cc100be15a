// DALL-E's dVAE encoder (SIMLA's visual tokenizer) against PyTorch: a small
// random encoder restated in tests/python/make_dvae_encoder.py is pickled
// whole, as DALL-E ships encoder.pkl (zip and legacy formats); read as data,
// it gives PyTorch's logits and codes for the two bundled images. A pickle
// naming any class outside the DALL-E encoder's (a torch.nn.Linear, os.system)
// is refused by name, as are a module whose sizes do not match its weights
// and one whose pickled state names another class.
// `albef tokenize-image` writes the same codes.

#include "albef/core/error.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/dvae.h"
#include "albef/vision/dalle_pixels.h"

#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;

namespace {

constexpr int64_t kImageRes = 32;

std::string make_encoder_command(const std::string& dir, const std::string& variant) {
  return std::string(ALBEF_PYTHON3) + " " + source_path("tests/python/make_dvae_encoder.py") + " " + dir + " " +
         dir + "/inputs.npy --variant " + variant;
}

// The tokenizer inputs of the two bundled images and what PyTorch makes of
// them, written once per run: dir/{inputs,expected_logits,expected_codes}.npy
// and dir/encoder.pkl, dir/encoder_legacy.pkl.
const std::string& python_encoder_dir() {
  static const std::string dir = [] {
    const std::string d = make_temp_dir("dvae");
    const at::Tensor inputs = at::stack({albef::vision::load_tokenizer_image(data_path("images/camera.png"), kImageRes),
                                         albef::vision::load_tokenizer_image(data_path("images/horse.png"), kImageRes)});
    albef::io::write_npy(d + "/inputs.npy", inputs);
    std::string output;
    const int rc = run_command(make_encoder_command(d, "normal"), &output);
    EXPECT_EQ(rc, 0) << output;
    return d;
  }();
  return dir;
}

std::string variant_file(const std::string& variant) {
  const std::string dir = make_temp_dir("dvae_" + variant);
  albef::io::write_npy(dir + "/inputs.npy", at::zeros({1, 3, kImageRes, kImageRes}));
  std::string output;
  EXPECT_EQ(run_command(make_encoder_command(dir, variant), &output), 0) << output;
  return dir + "/encoder.pkl";
}

void expect_load_fails_with(const std::string& path, const std::string& message) {
  try {
    albef::load_dvae_encoder(path);
    ADD_FAILURE() << path << " loaded";
  } catch (const albef::Error& error) {
    EXPECT_NE(std::string(error.what()).find(message), std::string::npos) << error.what();
  }
}

}  // namespace

TEST(Dvae, DefaultEncoderHasDalleNamesAndSize) {
  const albef::DvaeEncoder encoder;
  const auto parameters = encoder->named_parameters();
  int64_t count = 0;
  for (const auto& parameter : parameters) count += parameter.value().numel();
  EXPECT_EQ(count, 53786240);  // the official Encoder() the SIMLA fixtures report
  EXPECT_EQ(parameters.size(), 2u * (1 + 4 * 2 * 4 + 3 + 1));  // input, 8 blocks x 4 convs, 3 id_paths, output
  EXPECT_EQ(parameters["blocks.input.w"].sizes(), (at::IntArrayRef{256, 3, 7, 7}));
  EXPECT_EQ(parameters["blocks.group_1.block_1.res_path.conv_1.w"].sizes(), (at::IntArrayRef{64, 256, 3, 3}));
  EXPECT_EQ(parameters["blocks.group_2.block_1.id_path.w"].sizes(), (at::IntArrayRef{512, 256, 1, 1}));
  EXPECT_EQ(parameters["blocks.group_4.block_2.res_path.conv_4.b"].sizes(), (at::IntArrayRef{2048}));
  EXPECT_EQ(parameters["blocks.output.conv.w"].sizes(), (at::IntArrayRef{8192, 2048, 1, 1}));
  EXPECT_EQ(parameters.find("blocks.group_1.block_1.id_path.w"), nullptr);  // same width: the identity
}

TEST(Dvae, MapPixelsAsDalle) {
  const at::Tensor mapped = albef::vision::map_pixels(at::tensor({0.0f, 0.5f, 1.0f}));
  EXPECT_TENSOR_NEAR(mapped, at::tensor({0.1f, 0.5f, 0.9f}), 1e-7);
  EXPECT_THROW(albef::vision::map_pixels(at::zeros({2}, at::kDouble)), albef::Error);
}

TEST(Dvae, PickledEncoderGivesPyTorchLogitsAndCodes) {
  const std::string& dir = python_encoder_dir();
  const at::Tensor inputs = albef::io::read_npy(dir + "/inputs.npy");
  const at::Tensor expected_logits = albef::io::read_npy(dir + "/expected_logits.npy");
  const at::Tensor expected_codes = albef::io::read_npy(dir + "/expected_codes.npy");
  ASSERT_EQ(expected_codes.sizes(), (at::IntArrayRef{2, 16}));
  // The pixels really are mapped: nothing outside [0.1, 0.9].
  EXPECT_GE(inputs.min().item<float>(), 0.1f - 1e-6f);
  EXPECT_LE(inputs.max().item<float>(), 0.9f + 1e-6f);
  for (const char* file : {"encoder.pkl", "encoder_legacy.pkl"}) {
    SCOPED_TRACE(file);
    albef::DvaeEncoder encoder = albef::load_dvae_encoder(dir + "/" + file);
    EXPECT_EQ(encoder->options().n_hid, 16);
    EXPECT_EQ(encoder->options().vocab_size, 128);
    at::NoGradGuard no_grad;
    EXPECT_TENSOR_NEAR(encoder->forward(inputs), expected_logits, 1e-4);
    EXPECT_TRUE(at::equal(encoder->codes(inputs), expected_codes)) << encoder->codes(inputs) << expected_codes;
  }
}

TEST(Dvae, LoadingLeavesTheGlobalGeneratorAlone) {
  // Training loads the tokenizer after seeding (and after a resume restored the
  // generator): the throwaway init of the encoder must not draw from it.
  const std::string path = python_encoder_dir() + "/encoder.pkl";
  at::manual_seed(5);
  const at::Tensor expected = at::rand({4});
  at::manual_seed(5);
  albef::load_dvae_encoder(path);
  EXPECT_TRUE(at::equal(at::rand({4}), expected));
}

TEST(Dvae, RefusesClassesOutsideTheEncoder) {
  expect_load_fails_with(variant_file("extra_class"), "refusing to load global 'torch.nn.modules.linear.Linear'");
  expect_load_fails_with(variant_file("os_system"), "refusing to load global 'posix.system'");
}

TEST(Dvae, CheckpointReaderRefusesModulePickles) {
  try {
    albef::io::read_torch_file(python_encoder_dir() + "/encoder.pkl");
    ADD_FAILURE() << "a pickled module read as a checkpoint";
  } catch (const albef::Error& error) {
    EXPECT_NE(std::string(error.what()).find("refusing to load global 'dall_e.encoder.Encoder'"), std::string::npos)
        << error.what();
  }
}

TEST(Dvae, RefusesSizesThatDoNotMatchTheWeights) {
  expect_load_fails_with(variant_file("wrong_size"), "do not match the weights it holds");
}

TEST(Dvae, RefusesAClassSetFromTheData) {
  expect_load_fails_with(variant_file("class_in_state"), "an object's __class__ set from the data");
}

TEST(TokenizeImage, WritesTheCodesOfEachImage) {
  const std::string& dir = python_encoder_dir();
  const std::string out = dir + "/codes.npy";
  std::string output;
  const int rc = run_command(std::string(ALBEF_CLI) + " tokenize-image --dvae " + dir + "/encoder.pkl --image_res " +
                                 std::to_string(kImageRes) + " --image " + data_path("images/camera.png") + " " +
                                 data_path("images/horse.png") + " --out " + out,
                             &output);
  ASSERT_EQ(rc, 0) << output;
  const at::Tensor codes = albef::io::read_npy(out);
  EXPECT_EQ(codes.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(codes, albef::io::read_npy(dir + "/expected_codes.npy"))) << codes;
}

TEST(TokenizeImage, RefusesAResolutionThatIsNoMultipleOf8) {
  const std::string& dir = python_encoder_dir();
  std::string output;
  const int rc = run_command(std::string(ALBEF_CLI) + " tokenize-image --dvae " + dir +
                                 "/encoder.pkl --image_res 36 --image " + data_path("images/camera.png") + " --out " +
                                 dir + "/never.npy",
                             &output);
  EXPECT_NE(rc, 0);
  EXPECT_NE(output.find("multiple of 8"), std::string::npos) << output;
}
