#include "tasks/grounding/refer.h"

#include "albef/core/error.h"
#include "albef/data/annotations.h"
#include "albef/io/pyobject.h"
#include "data/json_entries.h"
#include "core/paths.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

namespace albef::grounding {
namespace {
using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

int64_t int_of(const io::PyObjectPtr& entry, const char* key, const std::string& file, size_t index) {
  const io::PyObjectPtr value = entry->get(key);
  if (!value || value->kind != io::PyObject::Kind::Int)
    fail(file, ": ref ", index, ": '", key, "' is missing or not an integer");
  return value->integer;
}

// Python's seq[start:stop] bounds for a sequence of `length`.
std::pair<int64_t, int64_t> python_slice(int64_t start, int64_t stop, int64_t length) {
  const auto clamp = [length](int64_t i) { return std::clamp(i < 0 ? i + length : i, int64_t{0}, length); };
  start = clamp(start);
  stop = clamp(stop);
  return {start, std::max(start, stop)};
}

// Python's int() of a float: toward zero.
int64_t truncate(double value) { return static_cast<int64_t>(std::trunc(value)); }

}  // namespace

std::vector<Expression> load_expressions(const std::vector<std::string>& files, const std::string& image_root,
                                         bool with_ref_id) {
  std::vector<Expression> out;
  for (const std::string& file : files) {
    data::for_each_entry(file, [&](size_t index, const json& entry) {
      Expression e;
      e.image = data::resolve_image_path(data::join_path(image_root, data::string_field(entry, "image", file, index)),
                                         file);
      e.text = data::string_field(entry, "text", file, index);
      if (with_ref_id) {
        const auto found = entry.find("ref_id");
        if (found == entry.end() || !found->is_number_integer())
          fail(file, ": entry ", index, ": \"ref_id\" is missing or not an integer");
        e.ref_id = found->get<int64_t>();
      }
      e.file = file;
      e.index = index;
      out.push_back(std::move(e));
    });
  }
  return out;
}

Refer load_refer(const std::string& data_root, const std::string& dataset, const std::string& split_by) {
  Refer refer;
  const std::string folder = data::join_path(data_root, dataset);
  refer.refs_file = folder + "/refs(" + split_by + ").p";
  refer.instances_file = folder + "/instances.json";
  if (!paths::exists(refer.refs_file))
    fail(refer.refs_file, ": not found (refcoco_data names REFER's data folder, which holds ", dataset, "/refs(",
         split_by, ").p and ", dataset, "/instances.json)");

  const json instances = read_json(refer.instances_file);
  if (!instances.is_object() || !instances.contains("images") || !instances.contains("annotations"))
    fail(refer.instances_file, ": expected a COCO instances file with \"images\" and \"annotations\"");
  std::unordered_map<int64_t, Box> ann_boxes;
  size_t index = 0;
  for (const json& ann : instances["annotations"]) {
    const auto bbox = ann.find("bbox");
    if (!ann.contains("id") || !ann["id"].is_number_integer() || bbox == ann.end() || !bbox->is_array() ||
        bbox->size() != 4)
      fail(refer.instances_file, ": annotation ", index, ": needs an integer \"id\" and a \"bbox\" [x, y, w, h]");
    ann_boxes[ann["id"].get<int64_t>()] = {(*bbox)[0].get<double>(), (*bbox)[1].get<double>(),
                                           (*bbox)[2].get<double>(), (*bbox)[3].get<double>()};
    ++index;
  }
  index = 0;
  for (const json& image : instances["images"]) {
    if (!image.contains("id") || !image.contains("height") || !image.contains("width") ||
        !image["height"].is_number_integer() || !image["width"].is_number_integer())
      fail(refer.instances_file, ": image ", index, ": needs integer \"id\", \"height\" and \"width\"");
    refer.image_sizes[image["id"].get<int64_t>()] = {image["height"].get<int64_t>(), image["width"].get<int64_t>()};
    ++index;
  }

  const io::PyObjectPtr refs = io::read_pickle_file(refer.refs_file);
  if (refs->kind != io::PyObject::Kind::List) fail(refer.refs_file, ": expected a list of refs, found a ", refs->kind_name());
  for (size_t i = 0; i < refs->items.size(); ++i) {
    const io::PyObjectPtr& entry = refs->items[i];
    if (!entry->is_dict()) fail(refer.refs_file, ": ref ", i, " is a ", entry->kind_name(), ", not a dict");
    Ref ref;
    const int64_t ref_id = int_of(entry, "ref_id", refer.refs_file, i);
    const int64_t ann_id = int_of(entry, "ann_id", refer.refs_file, i);
    ref.image_id = int_of(entry, "image_id", refer.refs_file, i);
    const io::PyObjectPtr split = entry->get("split");
    if (!split || split->kind != io::PyObject::Kind::String)
      fail(refer.refs_file, ": ref ", i, ": 'split' is missing or not a string");
    ref.split = split->text;
    const auto box = ann_boxes.find(ann_id);
    if (box == ann_boxes.end())
      fail(refer.refs_file, ": ref ", i, " (ref_id ", ref_id, ") names annotation ", ann_id, ", which ",
           refer.instances_file, " lacks");
    ref.box = box->second;
    if (!refer.image_sizes.count(ref.image_id))
      fail(refer.refs_file, ": ref ", i, " (ref_id ", ref_id, ") names image ", ref.image_id, ", which ",
           refer.instances_file, " lacks");
    refer.refs[ref_id] = std::move(ref);
  }
  return refer;
}

Detections load_detections(const std::string& path, const Refer& refer) {
  const json dets = read_json(path);
  if (!dets.is_object()) fail(path, ": expected an object of image id -> detections");
  Detections out;
  for (const auto& [key, boxes] : dets.items()) {
    int64_t image_id = 0;
    try {
      size_t used = 0;
      image_id = std::stoll(key, &used);
      if (used != key.size()) throw std::invalid_argument(key);
    } catch (const std::exception&) {
      fail(path, ": key \"", key, "\" is not an image id");
    }
    if (!refer.image_sizes.count(image_id))
      fail(path, ": key \"", key, "\" names an image that ", refer.instances_file, " does not have");
    if (!boxes.is_array()) fail(path, ": \"", key, "\" must be a list of [x, y, w, h, score]");
    std::vector<Box>& list = out[image_id];
    for (size_t i = 0; i < boxes.size(); ++i) {
      const json& det = boxes[i];
      if (!det.is_array() || det.size() < 4 ||
          !std::all_of(det.begin(), det.begin() + 4, [](const json& v) { return v.is_number(); }))
        fail(path, ": \"", key, "\" detection ", i, " is not [x, y, w, h, score]");
      list.push_back({det[0].get<double>(), det[1].get<double>(), det[2].get<double>(), det[3].get<double>()});
    }
  }
  return out;
}

double compute_iou(const Box& a, const Box& b) {
  const double x1 = std::max(a[0], b[0]), y1 = std::max(a[1], b[1]);
  const double x2 = std::min(a[0] + a[2] - 1, b[0] + b[2] - 1), y2 = std::min(a[1] + a[3] - 1, b[1] + b[3] - 1);
  const double inter = x1 < x2 && y1 < y2 ? (x2 - x1 + 1) * (y2 - y1 + 1) : 0.0;
  return inter / (a[2] * a[3] + b[2] * b[3] - inter);
}

at::Tensor upsample_map(const at::Tensor& map, int64_t height, int64_t width) {
  ALBEF_CHECK(map.dim() == 2, "a Grad-CAM map is [g, g], got ", map.sizes());
  return at::upsample_bicubic2d(map.to(at::kFloat).unsqueeze(0).unsqueeze(0), {height, width}, false)
      .squeeze(0)
      .squeeze(0);
}

std::vector<float> score_boxes(const at::Tensor& upsampled, const std::vector<Box>& boxes) {
  std::vector<float> scores;
  const int64_t height = upsampled.size(0), width = upsampled.size(1);
  for (const Box& box : boxes) {
    const auto [top, bottom] = python_slice(truncate(box[1]), truncate(box[1] + box[3]), height);
    const auto [left, right] = python_slice(truncate(box[0]), truncate(box[0] + box[2]), width);
    const at::Tensor region = upsampled.slice(0, top, bottom).slice(1, left, right);
    // A float32 sum over a double sqrt(area), as the tensor / Python float of the official code.
    scores.push_back((region.sum() / std::pow(box[2] * box[3], 0.5)).item<float>());
  }
  return scores;
}

GroundingEvaluation grounding_eval(const std::vector<Expression>& expressions, const at::Tensor& maps,
                                   const Refer& refer, const Detections& detections, const std::string& det_file) {
  ALBEF_CHECK(maps.dim() == 3 && maps.size(0) == static_cast<int64_t>(expressions.size()), "one map per expression: ",
              maps.sizes(), " for ", expressions.size());
  GroundingEvaluation out;
  std::map<std::string, std::pair<int64_t, int64_t>> per_split;  // hits, count
  std::optional<Box> previous;
  const at::Tensor cpu_maps = maps.to(at::kCPU, at::kFloat);
  for (size_t i = 0; i < expressions.size(); ++i) {
    const Expression& e = expressions[i];
    const auto found = refer.refs.find(e.ref_id);
    if (found == refer.refs.end())
      fail(e.file, ": entry ", e.index, ": ref_id ", e.ref_id, " is not in ", refer.refs_file);
    const Ref& ref = found->second;
    const auto boxes = detections.find(ref.image_id);
    if (boxes == detections.end() || boxes->second.empty())
      fail(e.file, ": entry ", e.index, " (ref_id ", e.ref_id, "): ", det_file, " has no boxes for image ",
           ref.image_id);
    const auto& size = refer.image_sizes.at(ref.image_id);
    RefResult result;
    result.ref_id = e.ref_id;
    result.split = ref.split;
    result.box_scores = score_boxes(upsample_map(cpu_maps[static_cast<int64_t>(i)], size[0], size[1]), boxes->second);
    float best = 0.0f;
    for (size_t b = 0; b < boxes->second.size(); ++b) {
      if (result.box_scores[b] > best) {
        best = result.box_scores[b];
        result.box = boxes->second[b];
      }
    }
    if (!result.box) {  // the official quirk: the previous expression's box stands
      result.box = previous;
      result.reused_previous = true;
      ++out.reused_boxes;
    }
    previous = result.box;
    result.iou = result.box ? compute_iou(ref.box, *result.box) : 0.0;
    result.hit = result.iou >= 0.5;
    if (ref.split == "val" || ref.split == "testA" || ref.split == "testB") {
      auto& [hits, count] = per_split[ref.split];
      hits += result.hit;
      ++count;
    }
    out.results.push_back(std::move(result));
  }
  out.accuracies = json::object();
  for (const char* split : {"val", "testA", "testB"}) {
    const auto it = per_split.find(split);
    if (it != per_split.end())
      out.accuracies[std::string(split) + "_d"] =
          static_cast<double>(it->second.first) / static_cast<double>(it->second.second);
  }
  return out;
}

}  // namespace albef::grounding
