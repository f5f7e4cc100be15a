#include "albef/model/dvae.h"

#include "albef/core/error.h"
#include "albef/io/module_pickle.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>
#include <unordered_map>

namespace albef {
namespace {

// DALL-E's utils.logit_laplace_eps.
constexpr int64_t kGroupCount = 4;

// The number of weights an encoder of these sizes holds (as a double: the
// sizes come from a file and may be absurd).
double parameter_count(const DvaeEncoderOptions& o) {
  const auto conv = [](double n_in, double n_out, double kw) { return n_out * n_in * kw * kw + n_out; };
  const auto block = [&](double n_in, double n_out) {
    const double hid = n_out / 4;
    return (n_in != n_out ? conv(n_in, n_out, 1) : 0.0) + conv(n_in, hid, 3) + 2 * conv(hid, hid, 3) + conv(hid, n_out, 1);
  };
  double total = conv(static_cast<double>(o.input_channels), static_cast<double>(o.n_hid), 7);
  double width = static_cast<double>(o.n_hid);
  for (int64_t g = 0; g < kGroupCount; ++g) {
    const double group_width = static_cast<double>(o.n_hid) * static_cast<double>(int64_t{1} << g);
    for (int64_t i = 0; i < o.n_blk_per_group; ++i) {
      total += block(width, group_width);
      width = group_width;
    }
  }
  return total + conv(width, static_cast<double>(o.vocab_size), 1);
}

torch::nn::ModuleDict module_dict(const std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>& items) {
  return torch::nn::ModuleDict(items);
}

}  // namespace

DalleConv2dImpl::DalleConv2dImpl(int64_t n_in, int64_t n_out, int64_t kw) {
  ALBEF_CHECK(n_in >= 1 && n_out >= 1, "conv sizes must be positive, got ", n_in, " -> ", n_out);
  ALBEF_CHECK(kw >= 1 && kw % 2 == 1, "the kernel width must be odd, got ", kw);
  // DALL-E's init: normal with std 1/sqrt(fan_in), zero bias.
  w = register_parameter("w", at::randn({n_out, n_in, kw, kw}) / std::sqrt(static_cast<double>(n_in * kw * kw)),
                         false);
  b = register_parameter("b", at::zeros({n_out}), false);
}

at::Tensor DalleConv2dImpl::forward(const at::Tensor& x) {
  ALBEF_CHECK(x.dim() == 4 && x.size(1) == w.size(1), "expected [N, ", w.size(1), ", H, W], got ", x.sizes());
  const int64_t padding = (w.size(2) - 1) / 2;
  return at::conv2d(x, w, b, /*stride=*/1, padding);
}

DvaeEncoderBlockImpl::DvaeEncoderBlockImpl(int64_t n_in, int64_t n_out, int64_t n_layers) {
  ALBEF_CHECK(n_out % 4 == 0, "a block's width must be a multiple of 4, got ", n_out);
  ALBEF_CHECK(n_layers >= 1, "n_layers must be positive, got ", n_layers);
  const int64_t n_hid = n_out / 4;
  post_gain = 1.0 / static_cast<double>(n_layers * n_layers);
  if (n_in != n_out) id_path = register_module("id_path", DalleConv2d(n_in, n_out, 1));
  conv_1 = DalleConv2d(n_in, n_hid, 3);
  conv_2 = DalleConv2d(n_hid, n_hid, 3);
  conv_3 = DalleConv2d(n_hid, n_hid, 3);
  conv_4 = DalleConv2d(n_hid, n_out, 1);
  res_path = register_module("res_path", module_dict({{"conv_1", conv_1.ptr()},
                                                      {"conv_2", conv_2.ptr()},
                                                      {"conv_3", conv_3.ptr()},
                                                      {"conv_4", conv_4.ptr()}}));
}

at::Tensor DvaeEncoderBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv_1(at::relu(x));
  h = conv_2(at::relu(h));
  h = conv_3(at::relu(h));
  h = conv_4(at::relu(h));
  return (id_path ? id_path(x) : x) + post_gain * h;
}

DvaeEncoderImpl::DvaeEncoderImpl(const DvaeEncoderOptions& options) : options_(options) {
  ALBEF_CHECK(options.n_hid >= 1 && options.n_blk_per_group >= 1 && options.input_channels >= 1 &&
                  options.vocab_size >= 1,
              "dVAE sizes must be positive (n_hid ", options.n_hid, ", n_blk_per_group ", options.n_blk_per_group,
              ", input_channels ", options.input_channels, ", vocab_size ", options.vocab_size, ")");
  const int64_t n_layers = kGroupCount * options.n_blk_per_group;
  input_ = DalleConv2d(options.input_channels, options.n_hid, 7);
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> items{{"input", input_.ptr()}};
  // Group g (1-based) works at width 2^(g-1) * n_hid; its first block widens from the previous group's.
  int64_t width = options.n_hid;
  for (int64_t g = 1; g <= kGroupCount; ++g) {
    const int64_t group_width = options.n_hid << (g - 1);
    std::vector<DvaeEncoderBlock> group;
    std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> named;
    for (int64_t i = 1; i <= options.n_blk_per_group; ++i) {
      group.emplace_back(width, group_width, n_layers);
      named.emplace_back("block_" + std::to_string(i), group.back().ptr());
      width = group_width;
    }
    groups_.push_back(std::move(group));
    items.emplace_back("group_" + std::to_string(g), module_dict(named).ptr());
  }
  output_conv_ = DalleConv2d(width, options.vocab_size, 1);
  items.emplace_back("output", module_dict({{"conv", output_conv_.ptr()}}).ptr());
  blocks = register_module("blocks", module_dict(items));
}

at::Tensor DvaeEncoderImpl::forward(const at::Tensor& x) {
  ALBEF_CHECK(x.dim() == 4 && x.size(1) == options_.input_channels && x.scalar_type() == at::kFloat,
              "expected float32 [N, ", options_.input_channels, ", H, W], got ", x.scalar_type(), " ", x.sizes());
  ALBEF_CHECK(x.size(2) % 8 == 0 && x.size(3) % 8 == 0, "the image sides must be multiples of 8, got ", x.sizes());
  at::Tensor h = input_(x);
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (auto& block : groups_[g]) h = block(h);
    if (g + 1 < groups_.size()) h = at::max_pool2d(h, {2, 2});
  }
  return output_conv_(at::relu(h));
}

at::Tensor DvaeEncoderImpl::codes(const at::Tensor& x) { return forward(x).argmax(1).flatten(1); }

const std::vector<std::string>& dvae_encoder_pickle_classes() {
  static const std::vector<std::string> classes{
      "dall_e.encoder.Encoder",
      "dall_e.encoder.EncoderBlock",
      "dall_e.utils.Conv2d",
      "torch.nn.modules.container.Sequential",
      "torch.nn.modules.activation.ReLU",
      "torch.nn.modules.pooling.MaxPool2d",
      "torch.nn.modules.linear.Identity",
  };
  return classes;
}

DvaeEncoder load_dvae_encoder(const std::string& path) {
  const io::PyObjectPtr root = io::read_module_file(path, dvae_encoder_pickle_classes());
  const std::string cls = io::module_class(root, path, "");
  if (cls != "dall_e.encoder.Encoder") fail(path, ": the pickled module is a ", cls, ", not a dall_e.encoder.Encoder");
  DvaeEncoderOptions options;
  options.n_hid = io::module_int(root, "n_hid", path, "");
  options.n_blk_per_group = io::module_int(root, "n_blk_per_group", path, "");
  options.input_channels = io::module_int(root, "input_channels", path, "");
  options.vocab_size = io::module_int(root, "vocab_size", path, "");
  const io::StateDict state = io::module_state_dict(root, path);
  // The file's weights are in memory already: building an encoder only when
  // its size matches theirs bounds what absurd sizes could make us allocate.
  double stored_count = 0;
  for (const auto& entry : state) stored_count += static_cast<double>(entry.second.numel());
  // Every block holds at least 8 tensors, which also bounds parameter_count's loop.
  if (options.n_hid < 4 || options.n_hid % 4 != 0 || options.n_blk_per_group < 1 ||
      options.n_blk_per_group > static_cast<int64_t>(state.size()) || options.input_channels < 1 ||
      options.vocab_size < 1 || parameter_count(options) != stored_count)
    fail(path, ": the encoder's sizes (n_hid ", options.n_hid, ", n_blk_per_group ", options.n_blk_per_group,
         ", input_channels ", options.input_channels, ", vocab_size ", options.vocab_size,
         ") do not match the weights it holds (", stored_count, " values)");
  // The random init is overwritten below; leave the global generator where it
  // was, so a resumed training run draws what the uninterrupted one drew.
  auto generator = at::detail::getDefaultCPUGenerator();
  const at::Tensor generator_state = generator.get_state();
  DvaeEncoder encoder(options);
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(generator_state);
  }
  const auto parameters = encoder->named_parameters();
  std::unordered_map<std::string, at::Tensor> stored(state.begin(), state.end());
  if (stored.size() != state.size()) fail(path, ": a weight name appears twice");
  at::NoGradGuard no_grad;
  for (const auto& parameter : parameters) {
    const auto it = stored.find(parameter.key());
    if (it == stored.end()) fail(path, ": weight '", parameter.key(), "' is missing");
    if (it->second.sizes() != parameter.value().sizes())
      fail(path, ": weight '", parameter.key(), "' has shape ", it->second.sizes(), ", expected ",
           parameter.value().sizes());
    parameter.value().copy_(it->second);
    stored.erase(it);
  }
  if (!stored.empty()) fail(path, ": unexpected weight '", stored.begin()->first, "' for this encoder");
  encoder->eval();
  return encoder;
}

}  // namespace albef
