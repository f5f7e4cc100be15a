#include "albef/train/checkpointing.h"

#include "albef/core/error.h"
#include "albef/core/fs.h"
#include "albef/io/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <regex>

namespace albef {
namespace fs = std::filesystem;

io::PyObjectPtr json_to_pyobject(const nlohmann::json& value) {
  using io::PyObject;
  switch (value.type()) {
    case nlohmann::json::value_t::object: {
      auto dict = PyObject::new_dict();
      for (const auto& item : value.items()) dict->set(item.key(), json_to_pyobject(item.value()));
      return dict;
    }
    case nlohmann::json::value_t::array: {
      std::vector<io::PyObjectPtr> items;
      for (const auto& item : value) items.push_back(json_to_pyobject(item));
      return PyObject::new_list(std::move(items));
    }
    case nlohmann::json::value_t::boolean:
      return PyObject::from_bool(value.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return PyObject::from_int(value.get<int64_t>());
    case nlohmann::json::value_t::number_float:
      return PyObject::from_float(value.get<double>());
    case nlohmann::json::value_t::string:
      return PyObject::from_string(value.get<std::string>());
    default:
      return PyObject::none();
  }
}

namespace {

io::PyObjectPtr meters_to_pyobject(const MeterSums& meters) {
  auto dict = io::PyObject::new_dict();
  for (const auto& [name, sum_count] : meters)
    dict->set(name, io::PyObject::new_tuple({io::PyObject::from_float(sum_count.first),
                                             io::PyObject::from_int(sum_count.second)}));
  return dict;
}

int64_t get_int(const io::PyObjectPtr& dict, const std::string& key, const std::string& path) {
  const auto value = dict ? dict->get(key) : nullptr;
  if (!value || value->kind != io::PyObject::Kind::Int) fail(path, ": checkpoint has no integer '", key, "'");
  return value->integer;
}

}  // namespace

void save_training_checkpoint(const std::string& path, AlbefModel& model, const AdamW& optimizer,
                              const CosineLRScheduler& scheduler, const Config& config, int64_t completed_epoch,
                              const ResumeState& resume) {
  auto root = io::PyObject::new_dict();
  root->set("model", io::state_dict_to_object(state_dict(*model)));
  root->set("optimizer", optimizer.state_dict());
  root->set("lr_scheduler", scheduler.state_dict());
  root->set("config", json_to_pyobject(config.raw));
  root->set("epoch", io::PyObject::from_int(completed_epoch));
  auto extra = io::PyObject::new_dict();
  extra->set("epoch", io::PyObject::from_int(resume.position.epoch));
  extra->set("step", io::PyObject::from_int(resume.position.step));
  extra->set("rng_state", io::PyObject::from_tensor(resume.rng_state));
  extra->set("meters", meters_to_pyobject(resume.meters));
  extra->set("best_score", io::PyObject::from_float(resume.best_score));
  extra->set("best_epoch", io::PyObject::from_int(resume.best_epoch));
  if (resume.data) extra->set("data", resume.data);
  root->set("albef_resume", extra);
  io::write_torch_file(path, root);
}

ResumeState load_training_checkpoint(const std::string& path, AlbefModel& model, AdamW& optimizer,
                                     CosineLRScheduler& scheduler) {
  const io::PyObjectPtr root = io::read_torch_file(path);
  load_state_dict(model, io::state_dict_from(root, path), path, /*strict=*/true);
  const auto opt = root->get("optimizer");
  const auto sched = root->get("lr_scheduler");
  if (!opt || !sched) fail(path, ": not a training checkpoint (no 'optimizer' / 'lr_scheduler')");
  try {
    optimizer.load_state_dict(opt);
    scheduler.load_state_dict(sched);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  ResumeState state;
  const auto extra = root->get("albef_resume");
  if (!extra) {  // an official checkpoint: the next epoch, from its start
    state.position = {get_int(root, "epoch", path) + 1, 0};
    return state;
  }
  state.position = {get_int(extra, "epoch", path), get_int(extra, "step", path)};
  if (const auto rng = extra->get("rng_state"); rng && rng->kind == io::PyObject::Kind::Tensor)
    state.rng_state = rng->tensor;
  if (const auto meters = extra->get("meters"); meters && meters->is_dict())
    for (const auto& [key, value] : meters->entries)
      if (key->kind == io::PyObject::Kind::String && value->items.size() == 2)
        state.meters[key->text] = {value->items[0]->real, value->items[1]->integer};
  if (const auto best = extra->get("best_score"); best && best->kind == io::PyObject::Kind::Float)
    state.best_score = best->real;
  if (const auto best = extra->get("best_epoch"); best && best->kind == io::PyObject::Kind::Int)
    state.best_epoch = best->integer;
  state.data = extra->get("data");
  return state;
}

std::string checkpoint_name(const TrainPosition& position) {
  char name[64];
  if (position.step == 0)
    std::snprintf(name, sizeof(name), "checkpoint_%02lld.pth", static_cast<long long>(position.epoch - 1));
  else
    std::snprintf(name, sizeof(name), "checkpoint_%02lld_step%06lld.pth", static_cast<long long>(position.epoch),
                  static_cast<long long>(position.step));
  return name;
}

std::vector<std::string> training_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<std::pair<int64_t, int64_t>, std::string>> found;
  std::error_code error;
  if (!fs::is_directory(output_dir, error)) return {};
  const std::regex name(R"(checkpoint_(\d+)(_step(\d+))?\.pth)");
  const auto number = [](const std::string& digits) {  // a name past int64 is not one of ours
    int64_t value = -1;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
  };
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    std::smatch match;
    const std::string file = entry.path().filename().string();
    if (!std::regex_match(file, match, name)) continue;
    const int64_t epoch = number(match[1]);
    const int64_t step = match[3].matched ? number(match[3]) : 0;
    if (epoch < 0 || step < 0) continue;
    // checkpoint_NN.pth closes epoch NN: the position where epoch NN+1 starts.
    found.push_back({match[3].matched ? std::make_pair(epoch, step) : std::make_pair(epoch + 1, int64_t{0}),
                     entry.path().string()});
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [position, path] : found) paths.push_back(std::move(path));
  return paths;
}

std::vector<std::string> remove_partial_checkpoints(const std::string& output_dir) {
  std::vector<std::string> removed;
  std::error_code error;
  if (!fs::is_directory(output_dir, error)) return removed;
  const std::regex checkpoint(R"(checkpoint_(\d+(_step\d+)?|best)\.pth)");
  for (const auto& entry : fs::directory_iterator(output_dir, error)) {
    const auto temporary = atomic_temporary_target(entry.path().filename().string());
    if (!temporary || !std::regex_match(temporary->first, checkpoint)) continue;
    const auto writer = static_cast<pid_t>(temporary->second);
    const bool writer_gone = writer != ::getpid() && ::kill(writer, 0) != 0 && errno == ESRCH;
    if (writer_gone && fs::remove(entry.path(), error)) removed.push_back(entry.path().string());
  }
  return removed;
}

}  // namespace albef
