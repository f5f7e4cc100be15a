#include "pickle_checks.h"

#include "albef/core/error.h"

#include <algorithm>
#include <unordered_map>

namespace albef::io {

const char* tensor_view_error(int64_t offset, int64_t storage_numel, const std::vector<int64_t>& sizes,
                              const std::vector<int64_t>& strides) {
  if (offset < 0 || offset > storage_numel) return "tensor offset outside its storage";
  int64_t numel = 1, last = offset;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) return "negative tensor size or stride";
    if (__builtin_mul_overflow(numel, sizes[d], &numel)) return "tensor too large";
  }
  if (numel == 0) return nullptr;
  for (size_t d = 0; d < sizes.size(); ++d) {
    int64_t step;
    if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &step) || __builtin_add_overflow(last, step, &last))
      return "tensor extends past its storage";
  }
  return last >= storage_numel ? "tensor extends past its storage" : nullptr;
}

std::unordered_set<const PyObject*> checked_graph(const PyObjectPtr& root, const std::string& source) {
  const auto child = [](const PyObject& node, size_t i) -> const PyObject* {
    if (i < node.items.size()) return node.items[i].get();
    const auto& entry = node.entries[(i - node.items.size()) / 2];
    return ((i - node.items.size()) % 2 ? entry.second : entry.first).get();
  };
  std::unordered_map<const PyObject*, size_t> height;  // of finished nodes
  std::unordered_set<const PyObject*> on_path{root.get()};
  struct Frame {
    const PyObject* node;
    size_t next;
  };
  std::vector<Frame> path{{root.get(), 0}};
  while (!path.empty()) {
    const PyObject& node = *path.back().node;
    const size_t children = node.items.size() + 2 * node.entries.size();
    if (path.back().next < children) {
      const PyObject* next = child(node, path.back().next++);
      if (height.count(next)) continue;
      if (on_path.count(next)) fail(source, ": the checkpoint data contains itself (recursive data is not supported)");
      on_path.insert(next);
      path.push_back({next, 0});
      continue;
    }
    size_t h = 0;
    for (size_t i = 0; i < children; ++i) h = std::max(h, height.at(child(node, i)) + 1);
    if (h > kMaxPickleDepth) fail(source, ": the checkpoint data is nested deeper than ", kMaxPickleDepth, " levels");
    height.emplace(&node, h);
    on_path.erase(&node);
    path.pop_back();
  }
  std::unordered_set<const PyObject*> reached;
  for (const auto& entry : height) reached.insert(entry.first);
  return reached;
}

}  // namespace albef::io
