#pragma once
// NLVR2's annotation files (dataset/nlvr_dataset.py).

#include "tasks/classification/data.h"

namespace albef::nlvr {

/// Every item of `files`, in order: {"images": [first, second] (under
/// image_root), "sentence", "label": "True" | "False"} (1 | 0; other keys,
/// such as "identifier", are ignored). NLVR.py reads any label other than
/// 'True' as False; here it is an error naming the file and the item, as is a
/// missing key or an "images" that is not a list of two strings.
classification::LabeledSet load_pairs(const std::vector<std::string>& files, const std::string& image_root);

}  // namespace albef::nlvr
