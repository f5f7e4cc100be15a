// Config parsing: the official configs load with their values, ViT sizes
// default to ViT-B/16, and a key no official config has is an error naming it.

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/text/tokenizer.h"

#include "test_util.h"

#include <filesystem>
#include <fstream>
#include <vector>

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::source_path;

namespace {

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

std::string error_of(const std::string& path, const std::string& text_encoder = "") {
  try {
    albef::load_config(path, text_encoder);
  } catch (const albef::Error& e) {
    return e.what();
  }
  return "";
}

void expect_error_naming(const std::string& error, const std::vector<std::string>& needles) {
  EXPECT_FALSE(error.empty());
  for (const std::string& needle : needles) EXPECT_NE(error.find(needle), std::string::npos) << error;
}

}  // namespace

TEST(Config, OfficialPretrainValues) {
  const albef::Config config = albef::load_config(source_path("configs/Pretrain.yaml"));
  EXPECT_EQ(config.train_file.size(), 6u);
  EXPECT_EQ(config.image_res, 256);
  EXPECT_EQ(config.embed_dim, 256);
  EXPECT_EQ(config.batch_size, 64);
  EXPECT_EQ(config.queue_size, 65536);
  EXPECT_DOUBLE_EQ(config.temp, 0.07);
  EXPECT_DOUBLE_EQ(config.momentum, 0.995);
  EXPECT_DOUBLE_EQ(config.optimizer.lr, 1e-4);
  EXPECT_DOUBLE_EQ(config.optimizer.weight_decay, 0.02);
  EXPECT_EQ(config.schedular.warmup_epochs, 20);
  EXPECT_DOUBLE_EQ(config.schedular.min_lr, 1e-5);
  // ViT-B/16 unless vision_config says otherwise.
  EXPECT_EQ(config.vision.embed_dim, 768);
  EXPECT_EQ(config.vision.depth, 12);
  EXPECT_EQ(config.vision.num_heads, 12);
  EXPECT_EQ(config.vision.patch_size, 16);
  EXPECT_DOUBLE_EQ(config.vision.mlp_ratio, 4.0);
  EXPECT_EQ(config.bert.hidden_size, 768);
  EXPECT_EQ(config.bert.fusion_layer, 6);
  EXPECT_EQ(config.bert.vocab_size, 30522);
  EXPECT_DOUBLE_EQ(config.bert.layer_norm_eps, 1e-12);
  EXPECT_EQ(config.raw["optimizer"]["opt"], "adamW");
}

TEST(Config, GritPretrainValues) {
  // GRIT-VLP's configs/Pretrain.yaml values, and the key that selects its mode.
  const albef::Config config = albef::load_config(source_path("configs/Pretrain_GRIT.yaml"));
  EXPECT_EQ(config.pretrain_mode, "grit");
  EXPECT_EQ(config.batch_size, 128);
  EXPECT_DOUBLE_EQ(config.mlm_probability, 0.5);
  EXPECT_EQ(config.queue_size, 48000);
  EXPECT_EQ(config.search_space, 1920);
  EXPECT_EQ(config.train_epochs, 20);
  EXPECT_EQ(config.schedular.epochs, 30);
  EXPECT_EQ(albef::load_config(source_path("configs/Pretrain.yaml")).pretrain_mode, "albef");
  const std::string dir = make_temp_dir("config_grit");
  const std::string path = write_file(dir, "mode.yaml", "bert_config: '" + source_path("configs/config_bert.json") +
                                                            "'\npretrain_mode: grid\n");
  expect_error_naming(error_of(path), {"mode.yaml", "pretrain_mode", "grid"});
}

TEST(Config, OfficialRetrievalValues) {
  const albef::Config coco = albef::load_config(source_path("configs/Retrieval_coco.yaml"));
  EXPECT_EQ(coco.image_res, 384);
  EXPECT_EQ(coco.k_test, 256);
  EXPECT_EQ(coco.batch_size_train, 32);
  EXPECT_EQ(coco.batch_size_test, 64);
  EXPECT_TRUE(coco.distill);
  EXPECT_TRUE(coco.warm_up);
  ASSERT_EQ(coco.test_file.size(), 1u);
  EXPECT_EQ(coco.test_file[0], "data/coco_test.json");
  const albef::Config flickr = albef::load_config(source_path("configs/Retrieval_flickr.yaml"));
  EXPECT_EQ(flickr.k_test, 128);
  EXPECT_EQ(flickr.schedular.epochs, 10);
}

TEST(Config, TinyVisionConfigAndRelativePaths) {
  const albef::Config config = albef::load_config(data_path("tiny/Pretrain.yaml"));
  EXPECT_EQ(config.vision.embed_dim, 64);
  EXPECT_EQ(config.vision.depth, 2);
  EXPECT_EQ(config.bert.num_hidden_layers, 4);
  EXPECT_EQ(config.bert.fusion_layer, 2);
  EXPECT_EQ(config.vocab, albef::text::kBundledVocabulary);  // no vocab: key and no file beside config_bert.json
}

TEST(Config, VocabularyComesFromTheVocabKeyThenTextEncoderThenBundled) {
  const std::string dir = make_temp_dir("config_vocabulary");
  std::filesystem::create_directories(dir + "/hf");
  std::ofstream(dir + "/hf/vocab.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  std::ofstream(dir + "/mine.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  const std::string tiny = data_path("tiny/Pretrain.yaml");
  EXPECT_EQ(albef::load_config(tiny, "bert-base-uncased").vocab, albef::text::kBundledVocabulary);
  EXPECT_EQ(albef::load_config(tiny, dir + "/hf").vocab, dir + "/hf/vocab.txt");  // as HuggingFace saves a tokenizer
  EXPECT_EQ(albef::load_config(tiny, dir + "/mine.txt").vocab, dir + "/mine.txt");
  expect_error_naming(error_of(tiny, "bert-base-cased"), {"--text_encoder bert-base-cased", "bundled"});
  expect_error_naming(error_of(tiny, dir), {"no vocab.txt"});

  std::ifstream in(tiny);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string bert_config = "'tiny/config_bert.json'";
  text.replace(text.find(bert_config), bert_config.size(), "'" + data_path("tiny/config_bert.json") + "'");
  std::ofstream(dir + "/with_vocab.yaml") << text << "vocab: '" << dir << "/mine.txt'\n";
  EXPECT_EQ(albef::load_config(dir + "/with_vocab.yaml", "bert-base-uncased").vocab, dir + "/mine.txt");  // the key wins
  std::ofstream(dir + "/missing_vocab.yaml") << text << "vocab: 'nowhere/vocab.txt'\n";
  expect_error_naming(error_of(dir + "/missing_vocab.yaml"),
                      {"missing_vocab.yaml", "vocab 'nowhere/vocab.txt'", "looked in", "--text_encoder"});
}

TEST(Config, MisspeltKeyNamesKeyAndFile) {
  const std::string dir = make_temp_dir("config_typo");
  std::string text = "bert_config: '" + source_path("configs/config_bert.json") + "'\nqueue_sise: 16\n";
  const std::string path = write_file(dir, "typo.yaml", text);
  const std::string message = error_of(path);
  EXPECT_NE(message.find("queue_sise"), std::string::npos) << message;
  EXPECT_NE(message.find("typo.yaml"), std::string::npos) << message;
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
}

TEST(Config, MisspeltNestedKey) {
  const std::string dir = make_temp_dir("config_nested");
  const std::string path = write_file(dir, "nested.yaml",
                                      "bert_config: '" + source_path("configs/config_bert.json") +
                                          "'\noptimizer: {opt: adamW, lr: 1e-4, weight_decy: 0.02}\n");
  const std::string message = error_of(path);
  EXPECT_NE(message.find("optimizer.weight_decy"), std::string::npos) << message;
}

TEST(Config, WrongTypeAndMissingFiles) {
  const std::string dir = make_temp_dir("config_bad");
  const std::string bert = source_path("configs/config_bert.json");
  EXPECT_NE(error_of(write_file(dir, "type.yaml", "bert_config: '" + bert + "'\nimage_res: big\n")).find("image_res"),
            std::string::npos);
  EXPECT_NE(error_of(write_file(dir, "nobert.yaml", "image_res: 256\n")).find("bert_config"), std::string::npos);
  EXPECT_NE(error_of(write_file(dir, "missing.yaml", "bert_config: 'nowhere.json'\n")).find("nowhere.json"),
            std::string::npos);
  EXPECT_NE(error_of(dir + "/absent.yaml").find("absent.yaml"), std::string::npos);
  const std::string bad_bert = write_file(dir, "bert.json", "{\"hidden_size\": 64, \"fusion_layr\": 2}");
  EXPECT_NE(error_of(write_file(dir, "badbert.yaml", "bert_config: '" + bad_bert + "'\n"))
                .find("fusion_layr"),
            std::string::npos);
}
