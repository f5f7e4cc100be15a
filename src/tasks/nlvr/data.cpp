#include "tasks/nlvr/data.h"

#include "albef/core/error.h"
#include "albef/data/annotations.h"
#include "data/json_entries.h"

namespace albef::nlvr {

classification::LabeledSet load_pairs(const std::vector<std::string>& files, const std::string& image_root) {
  classification::LabeledSet set;
  set.images_per_item = 2;
  for (const std::string& file : files) {
    const auto file_index = static_cast<uint32_t>(set.annotation_files.size());
    set.annotation_files.push_back(file);
    data::for_each_entry(file, [&](size_t index, const nlohmann::json& entry) {
      classification::LabeledItem item;
      item.file = file_index;
      const auto images = entry.find("images");
      if (images == entry.end()) fail(file, ": entry ", index, ": missing \"images\"");
      if (!images->is_array() || images->size() != 2 || !(*images)[0].is_string() || !(*images)[1].is_string())
        fail(file, ": entry ", index, ": \"images\" must be a list of two image paths, found ", images->dump());
      for (const auto& image : *images) item.images.push_back(data::join_path(image_root, image.get<std::string>()));
      item.sentence = data::string_field(entry, "sentence", file, index);
      const std::string label = data::string_field(entry, "label", file, index);
      if (label != "True" && label != "False")
        fail(file, ": entry ", index, ": \"label\" must be \"True\" or \"False\", found \"", label, "\"");
      item.label = label == "True" ? 1 : 0;
      set.items.push_back(std::move(item));
    });
  }
  return set;
}

}  // namespace albef::nlvr
