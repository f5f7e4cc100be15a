// The official interpolate_pos_embed: CLS kept, grid resized bicubically.

#include "albef/io/npy.h"
#include "albef/model/vit.h"

#include "test_util.h"

using albef::testing::data_path;

namespace {
at::Tensor load(const std::string& name) { return albef::io::read_npy(data_path("pos_embed/" + name + ".npy")); }
}  // namespace

TEST(PosEmbed, TinyGridsMatchOfficial) {
  const at::Tensor source = load("tiny_pos_embed_res32");
  EXPECT_TENSOR_NEAR(albef::interpolate_pos_embed(source, 16), load("tiny_pos_embed_to_res64"), 1e-6);
  EXPECT_TENSOR_NEAR(albef::interpolate_pos_embed(source, 9), load("tiny_pos_embed_to_res48"), 1e-6);
  EXPECT_TENSOR_NEAR(albef::interpolate_pos_embed(source, 1), load("tiny_pos_embed_to_res16"), 1e-6);
  EXPECT_TRUE(albef::interpolate_pos_embed(source, 4).equal(load("tiny_pos_embed_to_res32")));
}

TEST(PosEmbed, Res256To384Geometry) {
  EXPECT_TENSOR_NEAR(albef::interpolate_pos_embed(load("random_pos_embed_grid16"), 24 * 24),
                     load("random_pos_embed_grid16_to_grid24"), 1e-6);
}
