// Reading and writing real PyTorch .pth files: the bundled tiny ALBEF
// checkpoint, files torch.save writes in both formats, files we write and
// torch.load reads, and hostile or broken input.

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/io/checkpoint.h"
#include "pyobject_compare.h"
#include "test_util.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <sstream>

namespace albef::io {
namespace {

using albef::testing::data_path;
using albef::testing::make_temp_dir;
using albef::testing::run_command;
using albef::testing::source_path;
using Kind = PyObject::Kind;

const std::string kTiny = "tiny/albef_pretrain_tiny.pth";

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

std::string python_command(const std::string& script, const std::string& args) {
  return std::string(ALBEF_PYTHON3) + " " + script + " " + args;
}

/// The albef::Error message of read_torch_file(path), or "" when it loads.
std::string read_error(const std::string& path) {
  try {
    read_torch_file(path);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

#define EXPECT_READ_FAILS_WITH(path, ...)                                                     \
  do {                                                                                      \
    const std::string albef_message_ = read_error(path);                                    \
    EXPECT_FALSE(albef_message_.empty()) << (path) << " loaded";                            \
    for (const std::string& albef_part_ : std::vector<std::string>{(path), __VA_ARGS__})    \
      EXPECT_NE(albef_message_.find(albef_part_), std::string::npos)                        \
          << "'" << albef_part_ << "' not in: " << albef_message_;                          \
  } while (0)

PyObjectPtr tensor_object(at::Tensor tensor, bool parameter = false) {
  PyObjectPtr object = PyObject::from_tensor(std::move(tensor));
  object->parameter = parameter;
  return object;
}

PyObjectPtr bytes_object(std::string bytes) {
  auto object = std::make_shared<PyObject>();
  object->kind = Kind::Bytes;
  object->text = std::move(bytes);
  return object;
}

const void* storage_address(const at::Tensor& tensor) { return tensor.storage().data(); }

/// Same structure, plain values, and tensors (dtype, layout, values).
void expect_same(const PyObjectPtr& a, const PyObjectPtr& b, const std::string& where) {
  albef::testing::expect_same_object(a, b, where, {0.0, /*exact_layout=*/true});
}

/// Asserts that the model's tied weights share one storage.
void expect_tied(const PyObjectPtr& model) {
  for (const std::string encoder : {"text_encoder", "text_encoder_m"}) {
    const auto weight = model->get(encoder + ".cls.predictions.decoder.weight");
    const auto embedding = model->get(encoder + ".bert.embeddings.word_embeddings.weight");
    const auto bias = model->get(encoder + ".cls.predictions.decoder.bias");
    const auto predictions_bias = model->get(encoder + ".cls.predictions.bias");
    ASSERT_TRUE(weight && embedding && bias && predictions_bias) << encoder;
    EXPECT_EQ(storage_address(weight->tensor), storage_address(embedding->tensor)) << encoder;
    EXPECT_EQ(storage_address(bias->tensor), storage_address(predictions_bias->tensor)) << encoder;
  }
}

// ------------------------------------------------------------ tiny, C++ only --

TEST(Checkpoint, ReadsTinyCheckpoint) {
  const PyObjectPtr root = read_torch_file(data_path(kTiny));
  ASSERT_TRUE(root->is_dict());
  std::vector<std::string> keys;
  for (const auto& entry : root->entries) keys.push_back(entry.first->text);
  EXPECT_EQ(keys, (std::vector<std::string>{"model", "optimizer", "lr_scheduler", "config", "epoch"}));

  const PyObjectPtr model = root->get("model");
  ASSERT_TRUE(model && model->is_dict());
  EXPECT_TRUE(model->ordered_dict);
  ASSERT_EQ(model->entries.size(), 268u);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> first = {
      {"temp", {}}, {"image_queue", {32, 16}}, {"text_queue", {32, 16}}, {"queue_ptr", {1}}};
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(model->entries[i].first->text, first[i].first);
    ASSERT_EQ(model->entries[i].second->kind, Kind::Tensor);
    EXPECT_EQ(model->entries[i].second->tensor.sizes(), at::IntArrayRef(first[i].second)) << first[i].first;
  }
  EXPECT_EQ(model->get("temp")->tensor.scalar_type(), at::kFloat);
  EXPECT_EQ(model->get("queue_ptr")->tensor.scalar_type(), at::kLong);
  for (const auto& [name, value] : model->entries) {
    EXPECT_FALSE(value->parameter) << name->text;
    EXPECT_TRUE(value->tensor.scalar_type() == at::kFloat || value->tensor.scalar_type() == at::kLong);
  }

  EXPECT_EQ(root->get("epoch")->integer, 0);
  const PyObjectPtr config = root->get("config");
  EXPECT_EQ(config->get("image_res")->integer, 32);
  EXPECT_DOUBLE_EQ(config->get("temp")->real, 0.07);
  EXPECT_EQ(config->get("train_file")->items.at(0)->text, "data/coco-by/captions.json");
  EXPECT_EQ(config->get("optimizer")->get("opt")->text, "adamW");
  const PyObjectPtr groups = root->get("optimizer")->get("param_groups");
  ASSERT_EQ(groups->kind, Kind::List);
  ASSERT_EQ(groups->items.size(), 2u);
  const PyObjectPtr betas = groups->items[0]->get("betas");
  ASSERT_EQ(betas->kind, Kind::Tuple);
  EXPECT_DOUBLE_EQ(betas->items.at(1)->real, 0.999);
  EXPECT_EQ(groups->items[0]->get("foreach")->kind, Kind::None);
  EXPECT_EQ(groups->items[1]->get("params")->items.back()->integer, 130);
  EXPECT_EQ(root->get("lr_scheduler")->get("warmup_prefix")->boolean, true);
}

TEST(Checkpoint, TiedWeightsShareStorage) {
  const PyObjectPtr model = read_torch_file(data_path(kTiny))->get("model");
  expect_tied(model);
  std::set<const void*> storages;
  for (const auto& entry : model->entries) storages.insert(storage_address(entry.second->tensor));
  EXPECT_EQ(storages.size(), 268u - 4u);  // two tied pairs in each of the two text encoders
}

TEST(Checkpoint, LazyCheckpointReadsEachStorageOnlyWhenFetched) {
  const PyObjectPtr eager = read_torch_file(data_path(kTiny))->get("model");
  LazyCheckpoint lazy(data_path(kTiny));
  const PyObjectPtr model = lazy.root()->get("model");
  ASSERT_EQ(model->entries.size(), eager->entries.size());
  for (const auto& entry : model->entries)
    EXPECT_EQ(entry.second->tensor.storage().data(), nullptr) << entry.first->text << " was read before fetch";
  for (size_t i = 0; i < model->entries.size(); ++i) {
    const at::Tensor& tensor = model->entries[i].second->tensor;
    lazy.fetch(tensor);
    EXPECT_TRUE(tensor.equal(eager->entries[i].second->tensor)) << model->entries[i].first->text;
    lazy.release(tensor);
    EXPECT_EQ(tensor.storage().data(), nullptr);
  }
  // Tied tensors share one storage: fetching either makes both present.
  const at::Tensor word = model->get("text_encoder.bert.embeddings.word_embeddings.weight")->tensor;
  const at::Tensor decoder = model->get("text_encoder.cls.predictions.decoder.weight")->tensor;
  lazy.fetch(decoder);
  EXPECT_TRUE(word.equal(eager->get("text_encoder.bert.embeddings.word_embeddings.weight")->tensor));
}

TEST(Checkpoint, LazyCheckpointReadsRecordsStraightIntoTensors) {
  const PyObjectPtr eager = read_torch_file(data_path(kTiny))->get("model");
  LazyCheckpoint lazy(data_path(kTiny));
  const PyObjectPtr model = lazy.root()->get("model");
  size_t direct = 0;
  for (size_t i = 0; i < model->entries.size(); ++i) {
    const at::Tensor& tensor = model->entries[i].second->tensor;
    at::Tensor destination = at::empty(tensor.sizes(), tensor.options());
    if (!lazy.read_into(tensor, destination)) continue;
    ++direct;
    EXPECT_TRUE(destination.equal(eager->entries[i].second->tensor)) << model->entries[i].first->text;
    EXPECT_EQ(tensor.storage().data(), nullptr) << "read_into filled the checkpoint's own storage";
  }
  EXPECT_EQ(direct, model->entries.size());
  // Another dtype or shape is the caller's conversion: nothing is read.
  const at::Tensor word = model->get("text_encoder.bert.embeddings.word_embeddings.weight")->tensor;
  at::Tensor as_double = at::empty(word.sizes(), word.options().dtype(at::kDouble));
  at::Tensor transposed = at::empty({word.size(1), word.size(0)}, word.options());
  EXPECT_FALSE(lazy.read_into(word, as_double));
  EXPECT_FALSE(lazy.read_into(word, transposed));
}

// The tiny checkpoint with a bit flipped in the word table's record (and in its momentum copy, which holds
// the same values), written to a new file whose path is returned.
std::string checkpoint_with_a_flipped_bit(const std::string& name) {
  const at::Tensor word =
      read_torch_file(data_path(kTiny))->get("model")->get("text_encoder.bert.embeddings.word_embeddings.weight")->tensor;
  std::string bytes = read_file(data_path(kTiny));
  const std::string start(static_cast<const char*>(word.data_ptr()), 64);
  size_t flipped = 0;
  for (size_t at = bytes.find(start); at != std::string::npos; at = bytes.find(start, at + 1), ++flipped)
    bytes[at + 1000] = static_cast<char>(bytes[at + 1000] ^ 0x40);
  EXPECT_GT(flipped, 0u);
  const std::string path = make_temp_dir(name) + "/flipped.pth";
  write_bytes(path, bytes);
  return path;
}

void expect_crc_error(const std::function<void()>& read) {
  try {
    read();
    FAIL() << "a flipped bit was accepted";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("flipped.pth"), std::string::npos) << message;
    EXPECT_NE(message.find("CRC"), std::string::npos) << message;
  }
}

TEST(Checkpoint, ReadIntoRejectsACorruptRecord) {
  LazyCheckpoint lazy(checkpoint_with_a_flipped_bit("corrupt_record"));
  const at::Tensor word = lazy.root()->get("model")->get("text_encoder.bert.embeddings.word_embeddings.weight")->tensor;
  at::Tensor destination = at::empty(word.sizes(), word.options());
  expect_crc_error([&] { lazy.read_into(word, destination); });
}

// A tensor converted as it is read (into a bf16 or int8 model) comes a few rows at a time, in order, the
// last block short, and the checkpoint's own storage stays hollow.
TEST(Checkpoint, ReadInRowsHandsOverTheRecordABlockAtATime) {
  const PyObjectPtr eager = read_torch_file(data_path(kTiny))->get("model");
  LazyCheckpoint lazy(data_path(kTiny));
  const PyObjectPtr model = lazy.root()->get("model");
  size_t read = 0;
  for (size_t i = 0; i < model->entries.size(); ++i) {
    const at::Tensor& tensor = model->entries[i].second->tensor;
    if (tensor.dim() == 0) continue;
    for (const int64_t rows_per_block : {int64_t{3}, tensor.size(0) + 1}) {
      at::Tensor joined = at::empty(tensor.sizes(), tensor.options());
      int64_t next_row = 0, blocks = 0;
      ASSERT_TRUE(lazy.read_in_rows(tensor, rows_per_block, [&](const at::Tensor& block, int64_t first_row) {
        EXPECT_EQ(first_row, next_row);
        EXPECT_EQ(block.size(0), std::min(rows_per_block, tensor.size(0) - first_row));
        joined.slice(0, first_row, first_row + block.size(0)).copy_(block);
        next_row += block.size(0);
        ++blocks;
      })) << model->entries[i].first->text;
      EXPECT_EQ(next_row, tensor.size(0));
      EXPECT_EQ(blocks, (tensor.size(0) + rows_per_block - 1) / rows_per_block);
      EXPECT_TRUE(joined.equal(eager->entries[i].second->tensor)) << model->entries[i].first->text;
      EXPECT_EQ(tensor.storage().data(), nullptr) << "read_in_rows filled the checkpoint's own storage";
    }
    ++read;
  }
  EXPECT_GT(read, 100u);
  // A fetched tensor is in memory already: nothing is read.
  const at::Tensor word = model->get("text_encoder.bert.embeddings.word_embeddings.weight")->tensor;
  lazy.fetch(word);
  EXPECT_FALSE(lazy.read_in_rows(word, 4, [](const at::Tensor&, int64_t) { FAIL() << "read a fetched tensor"; }));
}

TEST(Checkpoint, ReadInRowsRejectsACorruptRecord) {
  LazyCheckpoint lazy(checkpoint_with_a_flipped_bit("corrupt_rows"));
  const at::Tensor word = lazy.root()->get("model")->get("text_encoder.bert.embeddings.word_embeddings.weight")->tensor;
  expect_crc_error([&] { lazy.read_in_rows(word, 7, [](const at::Tensor&, int64_t) {}); });
}

TEST(Checkpoint, LazyCheckpointNamesTheFileOnBadInput) {
  const std::string dir = make_temp_dir("lazy_checkpoint");
  write_bytes(dir + "/garbage.pth", "this is not a checkpoint at all\n");
  try {
    LazyCheckpoint lazy(dir + "/garbage.pth");
    FAIL() << "garbage was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("garbage.pth"), std::string::npos) << error.what();
  }
  // A zip whose record is cut short fails when that record is fetched.
  const std::string bytes = read_file(data_path(kTiny));
  write_bytes(dir + "/cut.pth", bytes.substr(0, bytes.size() - 10));
  EXPECT_THROW(
      {
        LazyCheckpoint cut(dir + "/cut.pth");
        for (const auto& entry : cut.root()->get("model")->entries) cut.fetch(entry.second->tensor);
      },
      Error);
}

TEST(Checkpoint, StateDictFrom) {
  const std::string path = data_path(kTiny);
  const StateDict state = state_dict_from(read_torch_file(path), path);
  ASSERT_EQ(state.size(), 268u);
  EXPECT_EQ(state[1].first, "image_queue");

  PyObjectPtr wrapped = PyObject::new_dict();
  PyObjectPtr inner = state_dict_to_object({{"module.a", at::ones({2})}, {"b", at::zeros({1})}});
  wrapped->set("state_dict", inner);
  const StateDict unwrapped = state_dict_from(wrapped, "w.pth");
  ASSERT_EQ(unwrapped.size(), 2u);
  EXPECT_EQ(unwrapped[0].first, "a");
  EXPECT_EQ(unwrapped[1].first, "b");
  EXPECT_EQ(state_dict_from(inner, "w.pth").size(), 2u);  // a bare state dict

  inner->set("step", PyObject::from_int(3));
  try {
    state_dict_from(wrapped, "w.pth");
    ADD_FAILURE() << "non-tensor entry accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("w.pth"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("'step'"), std::string::npos) << error.what();
  }
  EXPECT_THROW(state_dict_from(PyObject::new_list(), "w.pth"), Error);
}

// ------------------------------------------------------ writing, C++ only --

PyObjectPtr varied_object() {
  const at::Tensor base = at::arange(30, at::kFloat).reshape({5, 6});
  PyObjectPtr root = PyObject::new_dict(true);
  root->set("f32", tensor_object(base));
  root->set("transposed", tensor_object(base.t()));
  root->set("slice", tensor_object(base.slice(0, 1, 4).slice(1, 2, 5)));
  root->set("expanded", tensor_object(at::tensor({1.0f, 2.0f}).expand({3, 2})));
  root->set("f64", tensor_object(at::linspace(-1, 1, 7, at::kDouble)));
  root->set("f16", tensor_object(at::tensor({0.5, -2.25, 65504.0}).to(at::kHalf)));
  root->set("bf16", tensor_object(at::tensor({1.5, -3.0, 1e30}).to(at::kBFloat16)));
  root->set("i64", tensor_object(at::tensor(std::vector<int64_t>{INT64_MIN, 0, INT64_MAX})));
  root->set("i32", tensor_object(at::tensor({-5, 7}, at::kInt)));
  root->set("i16", tensor_object(at::tensor({-300, 300}).to(at::kShort)));
  root->set("i8", tensor_object(at::tensor({-128, 127}).to(at::kChar)));
  root->set("u8", tensor_object(at::tensor({0, 255}).to(at::kByte)));
  root->set("bool", tensor_object(at::tensor({1, 0, 1}).to(at::kBool)));
  root->set("scalar", tensor_object(at::scalar_tensor(3.25)));
  root->set("empty", tensor_object(at::zeros({0, 3})));
  root->set("param", tensor_object(at::ones({2, 2}), true));

  PyObjectPtr plain = PyObject::new_dict();
  plain->set("none", PyObject::none());
  plain->set("true", PyObject::from_bool(true));
  plain->set("ints", PyObject::new_list({PyObject::from_int(0), PyObject::from_int(255), PyObject::from_int(256),
                                         PyObject::from_int(65536), PyObject::from_int(-1),
                                         PyObject::from_int(int64_t{1} << 40), PyObject::from_int(INT64_MIN),
                                         PyObject::from_int(INT64_MAX), PyObject::from_int(-129)}));
  plain->set("float", PyObject::from_float(-1.0 / 3.0));
  plain->set("text", PyObject::from_string("h\xc3\xa9llo \xe2\x9c\x93"));
  plain->set("bytes", bytes_object(std::string("\x00\xff\x80" "ab", 5)));
  plain->set("no_bytes", bytes_object(""));
  plain->set("tuple", PyObject::new_tuple({PyObject::from_int(1), PyObject::new_tuple()}));
  PyObjectPtr int_keys = PyObject::new_dict();
  int_keys->entries.emplace_back(PyObject::from_int(3), PyObject::from_string("three"));
  plain->set("int_keys", int_keys);
  std::vector<PyObjectPtr> many;
  for (int i = 0; i < 1500; ++i) many.push_back(PyObject::from_int(i));
  plain->set("many", PyObject::new_list(many));
  plain->set("set", PyObject::new_list({PyObject::from_int(5)}));
  plain->set("frozen", PyObject::new_list({PyObject::from_int(6)}));
  root->set("plain", plain);
  return root;
}

TEST(Checkpoint, WriteRoundTrip) {
  const std::string dir = make_temp_dir("checkpoint_write");
  const PyObjectPtr original = varied_object();
  write_torch_file(dir + "/varied.pth", original);
  const PyObjectPtr loaded = read_torch_file(dir + "/varied.pth");
  expect_same(original, loaded, "varied");
  EXPECT_EQ(storage_address(loaded->get("f32")->tensor), storage_address(loaded->get("transposed")->tensor));
  EXPECT_EQ(storage_address(loaded->get("f32")->tensor), storage_address(loaded->get("slice")->tensor));
  EXPECT_FALSE(loaded->get("transposed")->tensor.is_contiguous());
  EXPECT_EQ(loaded->get("scalar")->tensor.dim(), 0);

  const std::string tiny = dir + "/tiny.pth";
  write_torch_file(tiny, read_torch_file(data_path(kTiny)));
  const PyObjectPtr reread = read_torch_file(tiny);
  expect_same(read_torch_file(data_path(kTiny)), reread, "tiny");
  expect_tied(reread->get("model"));
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, WriteErrorsNameThePath) {
  const std::string dir = make_temp_dir("checkpoint_write_errors");
  const at::Tensor floats = at::zeros({4});
  PyObjectPtr mixed = PyObject::new_list({tensor_object(floats), tensor_object(floats.view(at::kInt))});
  try {
    write_torch_file(dir + "/mixed.pth", mixed);
    ADD_FAILURE() << "mixed dtypes on one storage written";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("mixed.pth"), std::string::npos) << error.what();
  }
  EXPECT_FALSE(std::ifstream(dir + "/mixed.pth").good());

  const std::string missing_dir = dir + "/no/such/dir/x.pth";
  try {
    write_torch_file(missing_dir, varied_object());
    ADD_FAILURE() << "wrote into a missing folder";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(missing_dir), std::string::npos) << error.what();
  }
}

// ---------------------------------------------------------- bad input --

// A legacy torch.save stream around a hand-made object pickle.
std::string legacy_stream(const std::string& object, const std::string& keys = "\x80\x02].",
                          const std::string& data = "") {
  return std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15) +  // magic number
         "\x80\x02M\xe9\x03." +                                                         // protocol 1001
         std::string("\x80\x02}X\x0d\x00\x00\x00little_endian\x88s.", 24) +             // sys info
         object + keys + data;
}

std::string binunicode(const std::string& text) {
  std::string out = "X";
  for (int i = 0; i < 4; ++i) out += static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text;
}

std::string int1(int value) { return std::string("K") + static_cast<char>(value); }

// torch._utils._rebuild_tensor_v2 of FloatStorage '0' (numel elements) with
// the given size, through a legacy view (view_key '1', offset, view_size)
// when view_size > 0.
std::string tensor_pickle(int numel, int size, int view_offset = 0, int view_size = 0) {
  const std::string view =
      view_size > 0 ? "(" + binunicode("1") + int1(view_offset) + int1(view_size) + "t" : std::string("N");
  return std::string("\x80\x02") + "ctorch._utils\n_rebuild_tensor_v2\n(" + "(" + binunicode("storage") +
         "ctorch\nFloatStorage\n" + binunicode("0") + binunicode("cpu") + int1(numel) + view + "tQ" + int1(0) +
         int1(size) + "\x85" + int1(1) + "\x85" + "\x89}tR.";
}

std::string float_storage(int numel) {
  std::string data(8, '\0');
  data[0] = static_cast<char>(numel);
  for (int i = 0; i < numel; ++i) {
    const float value = static_cast<float>(i + 1);
    data.append(reinterpret_cast<const char*>(&value), sizeof value);
  }
  return data;
}

TEST(CheckpointBadInput, MissingEmptyAndGarbageFiles) {
  const std::string dir = make_temp_dir("checkpoint_garbage");
  EXPECT_READ_FAILS_WITH(dir + "/missing.pth", "cannot open");
  write_bytes(dir + "/empty.pth", "");
  EXPECT_READ_FAILS_WITH(dir + "/empty.pth", "empty");
  write_bytes(dir + "/garbage.pth", "this is not a checkpoint at all\n");
  EXPECT_READ_FAILS_WITH(dir + "/garbage.pth", "not a PyTorch checkpoint");
  write_bytes(dir + "/garbage_zip.pth", std::string("PK\x03\x04", 4) + std::string(300, 'x'));
  EXPECT_READ_FAILS_WITH(dir + "/garbage_zip.pth");
  EXPECT_READ_FAILS_WITH(dir, "directory");
}

TEST(CheckpointBadInput, TruncatedZip) {
  const std::string dir = make_temp_dir("checkpoint_truncated_zip");
  const std::string bytes = read_file(data_path(kTiny));
  write_bytes(dir + "/half.pth", bytes.substr(0, bytes.size() / 2));
  EXPECT_READ_FAILS_WITH(dir + "/half.pth");
  write_bytes(dir + "/tail_cut.pth", bytes.substr(0, bytes.size() - 10));
  EXPECT_READ_FAILS_WITH(dir + "/tail_cut.pth");
  std::filesystem::remove_all(dir);
}

const std::vector<std::pair<std::string, std::string>> kHostileGlobals = {
    {std::string("\x80\x02") + "cos\nsystem\n" + binunicode("touch /tmp/albef_pwned") + "\x85R.", "os.system"},
    {std::string("\x80\x02") + "cbuiltins\neval\n" + binunicode("1+1") + "\x85R.", "builtins.eval"},
    {std::string("\x80\x04\x8c\x0asubprocess\x8c\x05Popen\x93."), "subprocess.Popen"},
    {std::string("\x80\x02") + "cnumpy.core.multiarray\n_reconstruct\n.", "numpy.core.multiarray._reconstruct"},
    {std::string("\x80\x02") + "ctorch\nload\n.", "torch.load"},
};

TEST(CheckpointBadInput, RefusesGlobalsInLegacyStream) {
  const std::string dir = make_temp_dir("checkpoint_globals_legacy");
  for (size_t i = 0; i < kHostileGlobals.size(); ++i) {
    const std::string path = dir + "/hostile" + std::to_string(i) + ".pth";
    write_bytes(path, legacy_stream(kHostileGlobals[i].first));
    EXPECT_READ_FAILS_WITH(path, "refusing to load global '" + kHostileGlobals[i].second + "'");
  }
}

TEST(CheckpointBadInput, RefusesGlobalsInZip) {
  const std::string dir = make_temp_dir("checkpoint_globals_zip");
  const std::string script = dir + "/make_zip.py";
  write_bytes(script,
              "import sys, zipfile\n"
              "with zipfile.ZipFile(sys.argv[2], 'w') as z:\n"
              "    z.write(sys.argv[1], 'archive/data.pkl')\n"
              "    z.writestr('archive/version', '3\\n')\n");
  for (size_t i = 0; i < 2; ++i) {
    const std::string pickle = dir + "/data" + std::to_string(i) + ".pkl";
    const std::string path = dir + "/hostile" + std::to_string(i) + ".pth";
    write_bytes(pickle, kHostileGlobals[i].first);
    std::string output;
    ASSERT_EQ(run_command(python_command(script, pickle + " " + path), &output), 0) << output;
    EXPECT_READ_FAILS_WITH(path, "refusing to load global '" + kHostileGlobals[i].second + "'");
  }
}

TEST(CheckpointBadInput, MalformedPickles) {
  const std::string dir = make_temp_dir("checkpoint_malformed");
  const auto check = [&](const std::string& name, const std::string& stream, const std::string& expected) {
    const std::string path = dir + "/" + name + ".pth";
    write_bytes(path, stream);
    EXPECT_READ_FAILS_WITH(path, expected);
  };
  // The hand-made tensor stream itself loads, so the failures below are the checks'.
  const std::string keys = "\x80\x02]" + binunicode("0") + "a.";
  write_bytes(dir + "/valid.pth", legacy_stream(tensor_pickle(2, 2), keys, float_storage(2)));
  const PyObjectPtr valid = read_torch_file(dir + "/valid.pth");
  ASSERT_EQ(valid->kind, Kind::Tensor);
  EXPECT_TRUE(at::equal(valid->tensor, at::tensor({1.0f, 2.0f})));
  write_bytes(dir + "/view.pth", legacy_stream(tensor_pickle(4, 2, 1, 2), keys, float_storage(4)));
  EXPECT_TRUE(at::equal(read_torch_file(dir + "/view.pth")->tensor, at::tensor({2.0f, 3.0f})));

  // Protocol 2 bytes: _codecs.encode(text, 'latin1') of their Latin-1 decoding, UTF-8 encoded.
  const auto encoded = [](const std::string& utf8) {
    return "\x80\x02" "c_codecs\nencode\n" + binunicode(utf8) + binunicode("latin1") + "\x86R.";
  };
  write_bytes(dir + "/bytes.pth", legacy_stream(encoded("a\xc3\xa9\xc2\x80")));
  const PyObjectPtr bytes = read_torch_file(dir + "/bytes.pth");
  ASSERT_EQ(bytes->kind, Kind::Bytes);
  EXPECT_EQ(bytes->text, "a\xe9\x80");
  check("not_latin1", legacy_stream(encoded("\xe2\x82\xac")), "bytes that are not latin-1 text");

  check("past_storage", legacy_stream(tensor_pickle(2, 10), keys, float_storage(2)), "past its storage");
  check("past_view", legacy_stream(tensor_pickle(4, 3, 2, 2), keys, float_storage(4)), "past its storage");
  check("view_outside", legacy_stream(tensor_pickle(4, 1, 3, 2), keys, float_storage(4)), "view outside");
  check("huge_storage", legacy_stream(tensor_pickle(120, 2), keys, float_storage(2)),
        "does not fit in the rest of the file");
  check("short_data", legacy_stream(tensor_pickle(2, 2), keys, float_storage(2).substr(0, 12)), "truncated");
  check("no_data", legacy_stream(tensor_pickle(2, 2)), "has no data");
  check("deep", legacy_stream("\x80\x02" + std::string(200000, '(') + std::string(200000, 'l') + "."), "nested deeper");
  check("recursive", legacy_stream(std::string("\x80\x02]q\x00h\x00" "a.", 9)), "contains itself");
  check("long1", legacy_stream(std::string("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.", 14)),
        "does not fit in 64 bits");
  check("huge_length", legacy_stream("\x80\x02X\xff\xff\xff\x7f" "abc"), "truncated or corrupt pickle at byte");
  check("no_stop", legacy_stream("\x80\x02N", ""), "truncated or corrupt pickle at byte 48");  // 45-byte header
  check("opcode", legacy_stream("\x80\x02\xff."), "unsupported pickle opcode 0xff");
  check("underflow", legacy_stream("\x80\x02s."), "stack underflow");
  check("bad_magic", std::string("\x80\x02\x8a\x0a") + std::string(11, 'x'), "not a PyTorch checkpoint");
  check("call_storage", legacy_stream("\x80\x02" "ctorch\nFloatStorage\n)R."), "refusing to call 'torch.FloatStorage'");
}

// ------------------------------------------------- against PyTorch itself --
// Each test starts PyTorch once: importing it costs seconds.

// One object of every supported kind; varied_object() is its C++ twin
// (sets become lists, as the reader loads them).
const std::string kVariedPython = R"PY(
import collections, sys, torch
def varied():
    base = torch.arange(30, dtype=torch.float32).reshape(5, 6)
    v = collections.OrderedDict()
    v['f32'] = base
    v['transposed'] = base.t()
    v['slice'] = base[1:4, 2:5]
    v['expanded'] = torch.tensor([1.0, 2.0]).expand(3, 2)
    v['f64'] = torch.linspace(-1, 1, 7, dtype=torch.float64)
    v['f16'] = torch.tensor([0.5, -2.25, 65504.0], dtype=torch.float16)
    v['bf16'] = torch.tensor([1.5, -3.0, 1e30], dtype=torch.bfloat16)
    v['i64'] = torch.tensor([-2**63, 0, 2**63 - 1])
    v['i32'] = torch.tensor([-5, 7], dtype=torch.int32)
    v['i16'] = torch.tensor([-300, 300], dtype=torch.int16)
    v['i8'] = torch.tensor([-128, 127], dtype=torch.int8)
    v['u8'] = torch.tensor([0, 255], dtype=torch.uint8)
    v['bool'] = torch.tensor([True, False, True])
    v['scalar'] = torch.tensor(3.25)
    v['empty'] = torch.zeros(0, 3)
    v['param'] = torch.nn.Parameter(torch.ones(2, 2))
    v['plain'] = {'none': None, 'true': True, 'ints': [0, 255, 256, 65536, -1, 2**40, -2**63, 2**63 - 1, -129],
                  'float': -1.0 / 3.0, 'text': 'h\u00e9llo \u2713', 'bytes': b'\x00\xff\x80ab', 'no_bytes': b'',
                  'tuple': (1, ()), 'int_keys': {3: 'three'}, 'many': list(range(1500)),
                  'set': {5}, 'frozen': frozenset([6])}
    return v
)PY";

/// Compares the tiny checkpoint with per-tensor sums PyTorch computed.
void expect_tiny_sums(const PyObjectPtr& model, const std::string& sums_path) {
  std::ifstream sums(sums_path);
  std::string line;
  size_t index = 0;
  while (std::getline(sums, line)) {
    std::istringstream fields(line);
    std::string name, dtype;
    double sum = 0, abs_sum = 0;
    fields >> name >> dtype >> sum >> abs_sum;
    ASSERT_LT(index, model->entries.size());
    EXPECT_EQ(model->entries[index].first->text, name);
    const at::Tensor tensor = model->entries[index].second->tensor;
    EXPECT_EQ(dtype, tensor.scalar_type() == at::kLong ? "torch.int64" : "torch.float32") << name;
    const at::Tensor values = tensor.to(at::kDouble);
    EXPECT_NEAR(values.sum().item<double>(), sum, 1e-9 * (1 + abs_sum)) << name;
    EXPECT_NEAR(values.abs().sum().item<double>(), abs_sum, 1e-9 * (1 + abs_sum)) << name;
    ++index;
  }
  EXPECT_EQ(index, 268u);
}

/// Checks what PyTorch's varied() looks like once read (any format).
void expect_varied(const PyObjectPtr& varied) {
  const auto tensor = [&](const char* name) { return varied->get(name)->tensor; };
  EXPECT_TRUE(at::equal(tensor("f16"), at::tensor({0.5, -2.25, 65504.0}).to(at::kHalf)));
  EXPECT_TRUE(at::equal(tensor("bf16"), at::tensor({1.5, -3.0, 1e30}).to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(tensor("i64"), at::tensor(std::vector<int64_t>{INT64_MIN, 0, INT64_MAX})));
  EXPECT_TRUE(at::equal(tensor("i8"), at::tensor({-128, 127}).to(at::kChar)));
  EXPECT_TRUE(at::equal(tensor("u8"), at::tensor({0, 255}).to(at::kByte)));
  EXPECT_TRUE(at::equal(tensor("bool"), at::tensor({1, 0, 1}).to(at::kBool)));
  EXPECT_EQ(tensor("scalar").dim(), 0);
  EXPECT_EQ(tensor("scalar").item<float>(), 3.25f);
  EXPECT_EQ(tensor("empty").sizes(), at::IntArrayRef({0, 3}));
  EXPECT_TRUE(at::equal(tensor("transposed"), tensor("f32").t()));
  EXPECT_EQ(storage_address(tensor("transposed")), storage_address(tensor("f32")));
  EXPECT_EQ(storage_address(tensor("slice")), storage_address(tensor("f32")));
  EXPECT_EQ(tensor("slice").storage_offset(), 8);
  EXPECT_EQ(tensor("expanded").strides(), at::IntArrayRef({0, 1}));
  EXPECT_TRUE(varied->get("param")->parameter);

  const PyObjectPtr plain = varied->get("plain");
  EXPECT_EQ(plain->get("ints")->items.at(6)->integer, INT64_MIN);
  EXPECT_EQ(plain->get("ints")->items.at(7)->integer, INT64_MAX);
  EXPECT_EQ(plain->get("text")->text, "h\xc3\xa9llo \xe2\x9c\x93");
  EXPECT_EQ(plain->get("bytes")->kind, Kind::Bytes);
  EXPECT_EQ(plain->get("bytes")->text, std::string("\x00\xff\x80" "ab", 5));
  EXPECT_EQ(plain->get("no_bytes")->text, "");
  EXPECT_EQ(plain->get("int_keys")->entries.at(0).first->integer, 3);
  EXPECT_EQ(plain->get("many")->items.size(), 1500u);
  EXPECT_EQ(plain->get("set")->kind, Kind::List);
  EXPECT_EQ(plain->get("frozen")->items.at(0)->integer, 6);
  // Field by field what the C++ side builds, so the writer test below
  // compares like with like.
  expect_same(varied, varied_object(), "varied");
}

/// Every strict prefix of a checkpoint fails with an error naming the file.
void expect_prefixes_fail(const std::string& source, const std::string& path, size_t step) {
  const std::string bytes = read_file(source);
  for (size_t size = 1; size < bytes.size(); size += step) {
    write_bytes(path, bytes.substr(0, size));
    const std::string message = read_error(path);
    ASSERT_NE(message.find(path), std::string::npos) << "cut at " << size << ": '" << message << "'";
  }
}

/// Random byte flips load or fail with albef::Error naming the file: never
/// crash, hang or throw anything else.
void expect_corruption_fails_cleanly(const std::string& source, const std::string& path, int rounds) {
  const std::string bytes = read_file(source);
  std::mt19937 random(1234);
  std::uniform_int_distribution<size_t> position(0, bytes.size() - 1);
  std::uniform_int_distribution<int> value(0, 255), flips(1, 4);
  int failures = 0;
  for (int round = 0; round < rounds; ++round) {
    std::string corrupted = bytes;
    for (int i = flips(random); i > 0; --i) corrupted[position(random)] = static_cast<char>(value(random));
    write_bytes(path, corrupted);
    try {
      read_torch_file(path);
    } catch (const Error& error) {
      ++failures;
      ASSERT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
    }
  }
  EXPECT_GT(failures, rounds / 10);
}

TEST(CheckpointPython, ReadsWhatPyTorchWrites) {
  const std::string dir = make_temp_dir("checkpoint_from_python");
  const std::string script = dir + "/make_files.py";
  write_bytes(script, kVariedPython + R"PY(
src, out = sys.argv[1], sys.argv[2]
ck = torch.load(src, map_location='cpu')
torch.save(ck, out + '/tiny_legacy.pth', _use_new_zipfile_serialization=False)
with open(out + '/tiny_sums.txt', 'w') as f:
    for name, t in ck['model'].items():
        d = t.double()
        f.write('%s %s %r %r\n' % (name, str(t.dtype), d.sum().item(), d.abs().sum().item()))
v = varied()
torch.save(v, out + '/varied_zip.pth')
torch.save(v, out + '/varied_zip_p5.pth', pickle_protocol=5)
torch.save(v, out + '/varied_legacy.pth', _use_new_zipfile_serialization=False)
torch.save(v, out + '/varied_legacy_p4.pth', _use_new_zipfile_serialization=False, pickle_protocol=4)
)PY");
  std::string output;
  ASSERT_EQ(run_command(python_command(script, data_path(kTiny) + " " + dir), &output), 0) << output;

  const PyObjectPtr tiny = read_torch_file(data_path(kTiny));
  expect_tiny_sums(tiny->get("model"), dir + "/tiny_sums.txt");
  const PyObjectPtr tiny_legacy = read_torch_file(dir + "/tiny_legacy.pth");
  expect_same(tiny, tiny_legacy, "tiny legacy");
  expect_tied(tiny_legacy->get("model"));

  const PyObjectPtr varied = read_torch_file(dir + "/varied_zip.pth");
  expect_varied(varied);
  for (const char* twin : {"varied_zip_p5.pth", "varied_legacy.pth", "varied_legacy_p4.pth"})
    expect_same(varied, read_torch_file(dir + "/" + twin), twin);

  const std::string tiny_legacy_bytes = read_file(dir + "/tiny_legacy.pth");
  write_bytes(dir + "/half.pth", tiny_legacy_bytes.substr(0, tiny_legacy_bytes.size() / 2));
  EXPECT_READ_FAILS_WITH(dir + "/half.pth", "truncated");
  expect_prefixes_fail(dir + "/varied_legacy.pth", dir + "/cut.pth", 7);
  expect_corruption_fails_cleanly(dir + "/varied_legacy.pth", dir + "/corrupted.pth", 1500);
  expect_corruption_fails_cleanly(dir + "/varied_legacy_p4.pth", dir + "/corrupted.pth", 500);
  expect_corruption_fails_cleanly(dir + "/varied_zip.pth", dir + "/corrupted.pth", 500);
  std::filesystem::remove_all(dir);
}

TEST(CheckpointPython, PyTorchReadsWhatWeWrite) {
  const std::string dir = make_temp_dir("checkpoint_to_python");
  write_torch_file(dir + "/tiny.pth", read_torch_file(data_path(kTiny)));
  write_torch_file(dir + "/varied.pth", varied_object());
  // PyTorch saves its own varied() and compares both pairs with torch.load.
  const std::string script = dir + "/compare.py";
  write_bytes(script, kVariedPython + R"PY(
sys.path.insert(0, sys.argv[1])
import compare_checkpoints
torch.save(varied(), sys.argv[2])
sys.exit(compare_checkpoints.main(sys.argv[:1] + sys.argv[3:]))
)PY");
  const std::string args = source_path("tests/python") + " " + dir + "/reference.pth " + data_path(kTiny) + " " +
                           dir + "/tiny.pth " + dir + "/reference.pth " + dir + "/varied.pth";
  std::string output;
  EXPECT_EQ(run_command(python_command(script, args), &output), 0) << output;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace albef::io
