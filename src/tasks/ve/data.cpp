#include "tasks/ve/data.h"

#include "albef/core/error.h"
#include "albef/data/annotations.h"
#include "data/json_entries.h"

#include <algorithm>

namespace albef::ve {

const std::vector<std::string>& class_names() {
  static const std::vector<std::string> names = {"contradiction", "neutral", "entailment"};
  return names;
}

classification::LabeledSet load_pairs(const std::vector<std::string>& files, const std::string& image_root) {
  classification::LabeledSet set;
  set.images_per_item = 1;
  const std::vector<std::string>& names = class_names();
  for (const std::string& file : files) {
    const auto file_index = static_cast<uint32_t>(set.annotation_files.size());
    set.annotation_files.push_back(file);
    data::for_each_entry(file, [&](size_t index, const nlohmann::json& entry) {
      classification::LabeledItem item;
      item.file = file_index;
      // VE.py: os.path.join(image_root, '%s.jpg' % ann['image']).
      item.images.push_back(data::join_path(image_root, data::string_field(entry, "image", file, index) + ".jpg"));
      item.sentence = data::string_field(entry, "sentence", file, index);
      const std::string label = data::string_field(entry, "label", file, index);
      const auto found = std::find(names.begin(), names.end(), label);
      if (found == names.end())
        fail(file, ": entry ", index, ": \"label\" must be \"entailment\", \"neutral\" or \"contradiction\", found \"",
             label, "\"");
      item.label = found - names.begin();
      set.items.push_back(std::move(item));
    });
  }
  return set;
}

}  // namespace albef::ve
