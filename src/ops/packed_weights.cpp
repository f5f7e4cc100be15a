#include "ops/packed_weights.h"

#ifdef ALBEF_WITH_DNNL
#include "ops/linear_int8.h"

#include <ATen/ATen.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

namespace albef::ops {
namespace {

std::string describe(const dnnl::memory::desc& desc) {
  const dnnl_memory_desc_t& c = desc.data;
  return std::string(reinterpret_cast<const char*>(&c), sizeof(c));
}

class PackedWeights {
 public:
  dnnl::memory get(const at::Tensor& weights, const dnnl::memory::desc& packed, const dnnl::engine& engine) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const Key key{weights.data_ptr(), std::hash<std::string>{}(describe(packed))};
    const int64_t version = weights._version();
    auto found = cache_.find(key);
    if (found != cache_.end() && !found->second.owner.expired() && found->second.version == version)
      return found->second.packed;
    for (auto it = cache_.begin(); it != cache_.end();)  // layers freed since: their address may be reused
      it = it->second.owner.expired() ? cache_.erase(it) : std::next(it);
    Entry entry{c10::weak_intrusive_ptr<c10::StorageImpl>(weights.storage().getWeakStorageImpl()), version,
                at::empty({static_cast<int64_t>(packed.get_size())}, at::kByte), {}};
    entry.packed = dnnl::memory(packed, engine, entry.storage.data_ptr());
    dnnl::memory source(stored_weights_desc(weights.size(0), weights.size(1), packed.data_type()), engine,
                        weights.data_ptr());
    dnnl::stream stream(engine);
    dnnl::reorder(source, entry.packed).execute(stream, source, entry.packed);
    stream.wait();
    return cache_.insert_or_assign(key, std::move(entry)).first->second.packed;
  }

 private:
  using Key = std::pair<void*, size_t>;
  struct Entry {
    c10::weak_intrusive_ptr<c10::StorageImpl> owner;
    int64_t version;  // the weights' version counter: weights written in place since are packed again
    at::Tensor storage;
    dnnl::memory packed;
  };
  struct KeyHash {
    size_t operator()(const Key& key) const {
      return std::hash<void*>{}(key.first) ^ (key.second * 0x9e3779b97f4a7c15ULL);
    }
  };
  std::mutex mutex_;
  std::unordered_map<Key, Entry, KeyHash> cache_;
};

}  // namespace

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::memory packed_weights(const at::Tensor& weights, const dnnl::memory::desc& packed, const dnnl::engine& engine) {
  static PackedWeights cache;
  return cache.get(weights, packed, engine);
}

dnnl::memory::desc chosen_weights_layout(const dnnl::memory::desc& src_md, const dnnl::memory::desc& dst_md,
                                         const dnnl::memory::desc& as_stored, const dnnl::engine& engine) {
  using dnnl::memory;
  static std::mutex mutex;
  static std::map<std::string, memory::desc> chosen;
  const std::string key = describe(src_md) + describe(dst_md) + describe(as_stored);
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (auto found = chosen.find(key); found != chosen.end()) return found->second;
  }
  const memory::desc any(as_stored.dims(), as_stored.data_type(), memory::format_tag::any);
  memory::desc layout = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, any, dst_md), engine).weights_desc();
  if (layout.data.format_kind == dnnl_blocked && layout.data.format_desc.blocking.inner_nblks == 0) try {
      (void)dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, as_stored, dst_md), engine);
      layout = as_stored;
    } catch (const dnnl::error&) {  // no kernel reads them transposed: reorder once, as for blocked layouts
    }
  const std::lock_guard<std::mutex> lock(mutex);
  return chosen.emplace(key, layout).first->second;
}

dnnl::memory::data_type int8_input_type() {
  return int8_gemm_sums_pairs_in_int16() ? dnnl::memory::data_type::u8 : dnnl::memory::data_type::s8;
}

dnnl::memory::desc stored_weights_desc(int64_t n, int64_t k, dnnl::memory::data_type operands) {
  return dnnl::memory::desc({k, n}, operands, dnnl::memory::dims{1, k});
}

dnnl::memory::desc inference_weights_layout(int64_t n, int64_t k, dnnl::memory::data_type operands,
                                            const dnnl::engine& engine) {
  constexpr int64_t kRows = 1024;  // the rows of an inference slice (the layout does not depend on them)
  const auto inputs = operands == dnnl::memory::data_type::s8 ? int8_input_type() : operands;
  const dnnl::memory::desc src_md({kRows, k}, inputs, dnnl::memory::dims{k, 1});
  const dnnl::memory::desc dst_md({kRows, n}, dnnl::memory::data_type::f32, dnnl::memory::dims{n, 1});
  return chosen_weights_layout(src_md, dst_md, stored_weights_desc(n, k, operands), engine);
}

at::Tensor pack_into(const at::Tensor& weights, const dnnl::memory::desc& layout, const dnnl::engine& engine) {
  const at::Tensor plain = weights.contiguous();
  // Zeros: the reorder may leave a block's padding unwritten, and equal weights should pack to equal bytes.
  at::Tensor bytes = at::zeros({static_cast<int64_t>(layout.get_size())}, weights.options().dtype(at::kByte));
  dnnl::memory source(stored_weights_desc(plain.size(0), plain.size(1), layout.data_type()), engine, plain.data_ptr());
  dnnl::memory packed(layout, engine, bytes.data_ptr());
  dnnl::stream stream(engine);
  dnnl::reorder(source, packed).execute(stream, source, packed);
  stream.wait();
  return bytes;
}

at::Tensor unpack_from(const at::Tensor& bytes, const dnnl::memory::desc& layout, at::ScalarType type,
                       const dnnl::engine& engine) {
  const int64_t k = layout.dims()[0], n = layout.dims()[1];
  at::Tensor plain = at::empty({n, k}, bytes.options().dtype(type));
  dnnl::memory packed(layout, engine, bytes.data_ptr());
  dnnl::memory target(stored_weights_desc(n, k, layout.data_type()), engine, plain.data_ptr());
  dnnl::stream stream(engine);
  dnnl::reorder(packed, target).execute(stream, packed, target);
  stream.wait();
  return plain;
}

}  // namespace albef::ops
#endif
