#pragma once
// What Grounding.py's evaluation reads besides the model: the referring
// expressions (its test json files), REFER's ground truth (refs(unc).p and
// instances.json), the detector boxes (dets.json), and dataset/utils.py's
// grounding_eval that ranks the boxes with a Grad-CAM map.

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace albef::grounding {

/// One entry of a grounding json file ({"image", "text", "ref_id"}).
struct Expression {
  std::string image;  ///< join_path(image_root, image), resolved
  std::string text;   ///< as written (pre_caption'd when tokenized)
  int64_t ref_id = -1;
  std::string file;   ///< the json file it came from, for errors
  size_t index = 0;   ///< its position there
};

/// Every entry of `files`, in order. `with_ref_id`: the test files' ref_id
/// is required (the training files' is not read).
std::vector<Expression> load_expressions(const std::vector<std::string>& files, const std::string& image_root,
                                         bool with_ref_id);

/// [x, y, w, h] in pixels, as COCO and the detector write boxes.
using Box = std::array<double, 4>;

/// REFER's view of one referring expression.
struct Ref {
  int64_t image_id = 0;
  std::string split;  ///< "train", "val", "testA", "testB"
  Box box{};          ///< its annotation's bbox: the ground truth
};

/// The REFER API's Refs, refToAnn bboxes and Imgs sizes (refer_python3.py).
struct Refer {
  std::string refs_file, instances_file;
  std::unordered_map<int64_t, Ref> refs;
  std::unordered_map<int64_t, std::array<int64_t, 2>> image_sizes;  ///< id -> {height, width}
};

/// REFER(data_root, dataset, split_by): reads
/// `<data_root>/<dataset>/refs(<split_by>).p` (a Python 2 pickle, through
/// the safe unpickler) and `<data_root>/<dataset>/instances.json`. Errors
/// name the file and the entry.
Refer load_refer(const std::string& data_root, const std::string& dataset = "refcoco+",
                 const std::string& split_by = "unc");

/// dets.json: image id -> detections [x, y, w, h, score]. A key that is not
/// an image of `refer`, or a detection that is not 4+ numbers, is an error
/// naming the file and the key.
using Detections = std::unordered_map<int64_t, std::vector<std::array<double, 4>>>;
Detections load_detections(const std::string& path, const Refer& refer);

/// computeIoU: inclusive pixel coordinates (x2 = x + w - 1, intersection
/// counted + 1 when x1 < x2 and y1 < y2 strictly), union from w * h.
double compute_iou(const Box& a, const Box& b);

/// F.interpolate(map.view(1, 1, g, g), size=(height, width), mode='bicubic')
/// (align_corners false, so values may dip below 0) -> [height, width].
at::Tensor upsample_map(const at::Tensor& map, int64_t height, int64_t width);

/// The box scores of grounding_eval for one map upsampled to its image:
/// sum(mask[int(y):int(y+h), int(x):int(x+w)]) / sqrt(w * h) in float32,
/// slices read as Python reads them.
std::vector<float> score_boxes(const at::Tensor& upsampled, const std::vector<Box>& boxes);

/// One expression's outcome.
struct RefResult {
  int64_t ref_id = 0;
  std::string split;
  std::vector<float> box_scores;
  /// The chosen box. grounding_eval keeps the first strictly highest score
  /// above a running maximum that starts at 0; when no score is above 0 it
  /// reuses the previous expression's box (`reused_previous`), and for the
  /// first expression there is none (the official script stops there with
  /// a NameError; here it is a miss).
  std::optional<Box> box;
  bool reused_previous = false;
  double iou = 0.0;
  bool hit = false;  ///< iou >= 0.5
};

struct GroundingEvaluation {
  /// "val_d", "testA_d", "testB_d": hits / expressions of each split (only
  /// the splits present; the official script divides by zero otherwise).
  nlohmann::json accuracies;
  std::vector<RefResult> results;  ///< in expression order
  int64_t reused_boxes = 0;        ///< expressions whose box was reused (no score above 0)
};

/// grounding_eval over `maps` [N, g, g] of `expressions` (same order).
/// An expression whose ref_id REFER lacks, or whose image has no
/// detections, is an error naming its file and entry.
GroundingEvaluation grounding_eval(const std::vector<Expression>& expressions, const at::Tensor& maps,
                                   const Refer& refer, const Detections& detections, const std::string& det_file);

}  // namespace albef::grounding
