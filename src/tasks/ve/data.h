#pragma once
// SNLI-VE's annotation files (dataset/ve_dataset.py).

#include "tasks/classification/data.h"

namespace albef::ve {

/// The classes in the dataset's numbering: contradiction 0, neutral 1, entailment 2.
const std::vector<std::string>& class_names();

/// Every item of `files`, in order: {"image": a Flickr30k id, opened as
/// image_root/<id>.jpg, "sentence", "label": "entailment" | "neutral" |
/// "contradiction"}. A missing key or another label is an error naming the
/// file and the item.
classification::LabeledSet load_pairs(const std::vector<std::string>& files, const std::string& image_root);

}  // namespace albef::ve
