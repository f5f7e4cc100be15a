#include "pyobject_compare.h"

#include "test_util.h"

namespace albef::testing {
namespace {

using Kind = io::PyObject::Kind;

std::string describe_key(const io::PyObjectPtr& key) {
  if (key->kind == Kind::Int) return std::to_string(key->integer);
  if (key->kind == Kind::String) return "'" + key->text + "'";
  return key->kind_name();
}

}  // namespace

void expect_same_object(const io::PyObjectPtr& expected, const io::PyObjectPtr& actual, const std::string& path,
                        const TensorMatch& match) {
  ASSERT_TRUE(expected && actual) << path;
  ASSERT_EQ(expected->kind, actual->kind) << path << ": " << expected->kind_name() << " vs " << actual->kind_name();
  switch (expected->kind) {
    case Kind::None: break;
    case Kind::Bool: EXPECT_EQ(expected->boolean, actual->boolean) << path; break;
    case Kind::Int: EXPECT_EQ(expected->integer, actual->integer) << path; break;
    case Kind::Float: EXPECT_EQ(expected->real, actual->real) << path; break;
    case Kind::String:
    case Kind::Bytes: EXPECT_EQ(expected->text, actual->text) << path; break;
    case Kind::List:
    case Kind::Tuple:
      ASSERT_EQ(expected->items.size(), actual->items.size()) << path;
      for (size_t i = 0; i < expected->items.size(); ++i)
        expect_same_object(expected->items[i], actual->items[i], path + "[" + std::to_string(i) + "]", match);
      break;
    case Kind::Dict:
      EXPECT_EQ(expected->ordered_dict, actual->ordered_dict) << path;
      ASSERT_EQ(expected->entries.size(), actual->entries.size()) << path;
      for (size_t i = 0; i < expected->entries.size(); ++i) {
        const auto& [expected_key, expected_value] = expected->entries[i];
        const auto& [actual_key, actual_value] = actual->entries[i];
        expect_same_object(expected_key, actual_key, path + " key " + std::to_string(i), match);
        expect_same_object(expected_value, actual_value, path + "[" + describe_key(expected_key) + "]", match);
      }
      break;
    case Kind::Tensor:
      ASSERT_EQ(expected->tensor.scalar_type(), actual->tensor.scalar_type()) << path;
      ASSERT_EQ(expected->tensor.sizes(), actual->tensor.sizes()) << path;
      if (match.exact_layout) {
        EXPECT_EQ(expected->parameter, actual->parameter) << path;
        EXPECT_EQ(expected->tensor.strides(), actual->tensor.strides()) << path;
        EXPECT_EQ(expected->tensor.storage_offset(), actual->tensor.storage_offset()) << path;
      }
      if (match.atol == 0.0)
        EXPECT_TRUE(at::equal(expected->tensor, actual->tensor)) << path;
      else
        EXPECT_TENSOR_NEAR(actual->tensor, expected->tensor, match.atol);
      break;
  }
}

}  // namespace albef::testing
