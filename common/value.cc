#include "common/value.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

namespace loom {

Value NullValue() {
  Value v;
  v.set_null_value(true);
  return v;
}
Value BoolValue(bool b) {
  Value v;
  v.set_bool_value(b);
  return v;
}
Value IntValue(int64_t i) {
  Value v;
  v.set_int_value(i);
  return v;
}
Value DoubleValue(double d) {
  Value v;
  v.set_double_value(d);
  return v;
}
Value StringValue(std::string s) {
  Value v;
  v.set_string_value(std::move(s));
  return v;
}
Value BytesValue(std::string b) {
  Value v;
  v.set_bytes_value(std::move(b));
  return v;
}
Value ListValue(std::vector<Value> items) {
  Value v;
  auto* l = v.mutable_list_value();
  for (auto& i : items) *l->add_items() = std::move(i);
  return v;
}
Value MapValue(std::vector<std::pair<std::string, Value>> entries) {
  Value v;
  auto* m = v.mutable_map_value()->mutable_entries();
  for (auto& [k, e] : entries) (*m)[k] = std::move(e);
  return v;
}

namespace {
template <typename T>
Value MakeTensor(v1::DType dtype, const std::vector<int64_t>& shape, std::span<const T> data) {
  Value v;
  auto* t = v.mutable_tensor_value();
  t->set_dtype(dtype);
  for (int64_t d : shape) t->add_shape(d);
  // Loom runs on little-endian hosts only (x86-64, aarch64), so the bytes are already in wire order.
  t->set_data(reinterpret_cast<const char*>(data.data()), data.size_bytes());
  return v;
}
}  // namespace

Value TensorValue(const std::vector<int64_t>& shape, std::span<const float> data) {
  return MakeTensor(v1::DTYPE_FLOAT32, shape, data);
}
Value TensorValue(const std::vector<int64_t>& shape, std::span<const double> data) {
  return MakeTensor(v1::DTYPE_FLOAT64, shape, data);
}
Value TensorValue(const std::vector<int64_t>& shape, std::span<const int64_t> data) {
  return MakeTensor(v1::DTYPE_INT64, shape, data);
}

bool IsNull(const Value& v) { return v.kind_case() == Value::KIND_NOT_SET || v.kind_case() == Value::kNullValue; }

const char* KindName(const Value& v) {
  switch (v.kind_case()) {
    case Value::kNullValue:
    case Value::KIND_NOT_SET: return "null";
    case Value::kBoolValue: return "bool";
    case Value::kIntValue: return "int";
    case Value::kDoubleValue: return "double";
    case Value::kStringValue: return "string";
    case Value::kBytesValue: return "bytes";
    case Value::kTensorValue: return "tensor";
    case Value::kListValue: return "list";
    case Value::kMapValue: return "map";
  }
  return "unknown";
}

const char* ValueTypeName(v1::ValueType t) {
  switch (t) {
    case v1::VALUE_TYPE_ANY: return "any";
    case v1::VALUE_TYPE_NULL: return "null";
    case v1::VALUE_TYPE_BOOL: return "bool";
    case v1::VALUE_TYPE_INT: return "int";
    case v1::VALUE_TYPE_DOUBLE: return "double";
    case v1::VALUE_TYPE_NUMBER: return "number";
    case v1::VALUE_TYPE_STRING: return "string";
    case v1::VALUE_TYPE_BYTES: return "bytes";
    case v1::VALUE_TYPE_TENSOR: return "tensor";
    case v1::VALUE_TYPE_LIST: return "list";
    case v1::VALUE_TYPE_MAP: return "map";
    case v1::VALUE_TYPE_NUMBER_OR_TENSOR: return "number or tensor";
    default: return "unknown";
  }
}

const char* DTypeName(v1::DType d) {
  switch (d) {
    case v1::DTYPE_FLOAT32: return "float32";
    case v1::DTYPE_FLOAT64: return "float64";
    case v1::DTYPE_INT8: return "int8";
    case v1::DTYPE_INT16: return "int16";
    case v1::DTYPE_INT32: return "int32";
    case v1::DTYPE_INT64: return "int64";
    case v1::DTYPE_UINT8: return "uint8";
    case v1::DTYPE_UINT16: return "uint16";
    case v1::DTYPE_UINT32: return "uint32";
    case v1::DTYPE_UINT64: return "uint64";
    case v1::DTYPE_BOOL: return "bool";
    default: return "unspecified";
  }
}

size_t DTypeSize(v1::DType d) {
  switch (d) {
    case v1::DTYPE_INT8:
    case v1::DTYPE_UINT8:
    case v1::DTYPE_BOOL: return 1;
    case v1::DTYPE_INT16:
    case v1::DTYPE_UINT16: return 2;
    case v1::DTYPE_FLOAT32:
    case v1::DTYPE_INT32:
    case v1::DTYPE_UINT32: return 4;
    case v1::DTYPE_FLOAT64:
    case v1::DTYPE_INT64:
    case v1::DTYPE_UINT64: return 8;
    default: return 0;
  }
}

bool IsFloatDType(v1::DType d) { return d == v1::DTYPE_FLOAT32 || d == v1::DTYPE_FLOAT64; }

bool Matches(const Value& v, v1::ValueType t) {
  switch (t) {
    case v1::VALUE_TYPE_ANY: return true;
    case v1::VALUE_TYPE_NULL: return IsNull(v);
    case v1::VALUE_TYPE_BOOL: return v.has_bool_value();
    case v1::VALUE_TYPE_INT: return v.has_int_value();
    case v1::VALUE_TYPE_DOUBLE: return v.has_double_value();
    case v1::VALUE_TYPE_NUMBER: return v.has_int_value() || v.has_double_value();
    case v1::VALUE_TYPE_STRING: return v.has_string_value();
    case v1::VALUE_TYPE_BYTES: return v.has_bytes_value();
    case v1::VALUE_TYPE_TENSOR: return v.has_tensor_value();
    case v1::VALUE_TYPE_LIST: return v.has_list_value();
    case v1::VALUE_TYPE_MAP: return v.has_map_value();
    case v1::VALUE_TYPE_NUMBER_OR_TENSOR:
      return v.has_int_value() || v.has_double_value() || v.has_tensor_value();
    default: return false;
  }
}

int64_t ElementCount(const Tensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape()) n *= d;
  return n;
}

Status ValidateTensor(const Tensor& t) {
  size_t width = DTypeSize(t.dtype());
  if (width == 0) return InvalidArgument("tensor has no dtype");
  int64_t n = 1;
  for (int64_t d : t.shape()) {
    if (d < 0) return InvalidArgument("tensor shape has a negative dimension");
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      return InvalidArgument("tensor shape overflows");
    }
    n *= d;
  }
  if (n > std::numeric_limits<int64_t>::max() / static_cast<int64_t>(width)) {
    return InvalidArgument("tensor shape and dtype " + std::string(DTypeName(t.dtype())) + " overflow a byte count");
  }
  if (static_cast<uint64_t>(n) * width != t.data().size()) {
    return InvalidArgument("tensor data holds " + std::to_string(t.data().size()) + " bytes but shape and dtype " +
                           DTypeName(t.dtype()) + " need " + std::to_string(n * static_cast<int64_t>(width)));
  }
  return Status::Ok();
}

namespace {
template <typename T>
T Load(const Tensor& t, int64_t i) {
  T x;
  std::memcpy(&x, t.data().data() + i * sizeof(T), sizeof(T));
  return x;
}
}  // namespace

double TensorElementAsDouble(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case v1::DTYPE_FLOAT32: return Load<float>(t, i);
    case v1::DTYPE_FLOAT64: return Load<double>(t, i);
    case v1::DTYPE_INT8: return Load<int8_t>(t, i);
    case v1::DTYPE_INT16: return Load<int16_t>(t, i);
    case v1::DTYPE_INT32: return Load<int32_t>(t, i);
    case v1::DTYPE_INT64: return static_cast<double>(Load<int64_t>(t, i));
    case v1::DTYPE_UINT8: return Load<uint8_t>(t, i);
    case v1::DTYPE_UINT16: return Load<uint16_t>(t, i);
    case v1::DTYPE_UINT32: return Load<uint32_t>(t, i);
    case v1::DTYPE_UINT64: return static_cast<double>(Load<uint64_t>(t, i));
    case v1::DTYPE_BOOL: return Load<uint8_t>(t, i) != 0;
    default: return 0;
  }
}

int64_t TensorElementAsInt(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case v1::DTYPE_INT8: return Load<int8_t>(t, i);
    case v1::DTYPE_INT16: return Load<int16_t>(t, i);
    case v1::DTYPE_INT32: return Load<int32_t>(t, i);
    case v1::DTYPE_INT64: return Load<int64_t>(t, i);
    case v1::DTYPE_UINT8: return Load<uint8_t>(t, i);
    case v1::DTYPE_UINT16: return Load<uint16_t>(t, i);
    case v1::DTYPE_UINT32: return Load<uint32_t>(t, i);
    case v1::DTYPE_UINT64: return static_cast<int64_t>(Load<uint64_t>(t, i));
    case v1::DTYPE_BOOL: return Load<uint8_t>(t, i) != 0;
    default: return static_cast<int64_t>(TensorElementAsDouble(t, i));
  }
}

Status ValidateArgs(const v1::KernelInfo& kernel, const google::protobuf::RepeatedPtrField<Value>& args,
                    const google::protobuf::Map<std::string, Value>& kwargs) {
  const std::string who = "kernel '" + kernel.name() + "@" + kernel.version() + "'";
  const int n = kernel.inputs_size();
  if (args.size() > n) {
    return InvalidArgument(who + " takes at most " + std::to_string(n) + " argument(s), " +
                           std::to_string(args.size()) + " given");
  }
  for (const auto& [name, unused] : kwargs) {
    bool known = false;
    for (int i = 0; i < n; ++i) known = known || kernel.inputs(i).name() == name;
    if (!known) return InvalidArgument(who + " has no parameter named '" + name + "'");
  }
  for (int i = 0; i < n; ++i) {
    const auto& p = kernel.inputs(i);
    const Value* v = nullptr;
    if (i < args.size()) {
      v = &args.Get(i);
      if (kwargs.contains(p.name())) {
        return InvalidArgument(who + ": parameter '" + p.name() + "' given both by position and by name");
      }
    } else if (auto it = kwargs.find(p.name()); it != kwargs.end()) {
      v = &it->second;
    }
    if (v == nullptr) {
      if (!p.optional()) return InvalidArgument(who + ": missing required parameter '" + p.name() + "'");
      continue;
    }
    if (!Matches(*v, p.type())) {
      return InvalidArgument(who + ": parameter '" + p.name() + "' must be " + ValueTypeName(p.type()) + ", got " +
                             KindName(*v));
    }
    if (v->has_tensor_value()) {
      Status s = ValidateTensor(v->tensor_value());
      if (!s.ok()) return InvalidArgument(who + ": parameter '" + p.name() + "': " + s.message());
    }
  }
  return Status::Ok();
}

std::string DebugString(const Value& v) {
  std::ostringstream o;
  switch (v.kind_case()) {
    case Value::kNullValue:
    case Value::KIND_NOT_SET: o << "null"; break;
    case Value::kBoolValue: o << (v.bool_value() ? "true" : "false"); break;
    case Value::kIntValue: o << v.int_value(); break;
    case Value::kDoubleValue: o << v.double_value(); break;
    case Value::kStringValue: o << '"' << v.string_value() << '"'; break;
    case Value::kBytesValue: o << "bytes[" << v.bytes_value().size() << "]"; break;
    case Value::kTensorValue: {
      const auto& t = v.tensor_value();
      o << "tensor<" << DTypeName(t.dtype()) << ">[";
      for (int i = 0; i < t.shape_size(); ++i) o << (i ? "x" : "") << t.shape(i);
      o << "]";
      if (ValidateTensor(t).ok() && ElementCount(t) <= 8) {
        o << "{";
        for (int64_t i = 0; i < ElementCount(t); ++i) {
          o << (i ? ", " : "") << TensorElementAsDouble(t, i);
        }
        o << "}";
      }
      break;
    }
    case Value::kListValue: {
      o << "[";
      for (int i = 0; i < v.list_value().items_size(); ++i) {
        o << (i ? ", " : "") << DebugString(v.list_value().items(i));
      }
      o << "]";
      break;
    }
    case Value::kMapValue: {
      std::vector<std::string> keys;
      for (const auto& [k, unused] : v.map_value().entries()) keys.push_back(k);
      std::sort(keys.begin(), keys.end());
      o << "{";
      for (size_t i = 0; i < keys.size(); ++i) {
        o << (i ? ", " : "") << keys[i] << ": " << DebugString(v.map_value().entries().at(keys[i]));
      }
      o << "}";
      break;
    }
  }
  return o.str();
}

namespace {
Value FromJson(const google::protobuf::Value& j) {
  switch (j.kind_case()) {
    case google::protobuf::Value::kBoolValue: return BoolValue(j.bool_value());
    case google::protobuf::Value::kNumberValue: {
      double d = j.number_value();
      if (std::nearbyint(d) == d && std::fabs(d) < 9.0e15) return IntValue(static_cast<int64_t>(d));
      return DoubleValue(d);
    }
    case google::protobuf::Value::kStringValue: return StringValue(j.string_value());
    case google::protobuf::Value::kListValue: {
      std::vector<Value> items;
      for (const auto& e : j.list_value().values()) items.push_back(FromJson(e));
      return ListValue(std::move(items));
    }
    case google::protobuf::Value::kStructValue: {
      std::vector<std::pair<std::string, Value>> entries;
      for (const auto& [k, e] : j.struct_value().fields()) entries.emplace_back(k, FromJson(e));
      return MapValue(std::move(entries));
    }
    default: return NullValue();
  }
}
}  // namespace

Result<Value> ParseValueLiteral(const std::string& text) {
  if (text.empty()) return StringValue("");
  // Integers are parsed exactly here; JSON numbers are doubles.
  char* end = nullptr;
  errno = 0;
  long long i = std::strtoll(text.c_str(), &end, 10);
  if (errno == 0 && end != nullptr && *end == '\0' && (std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '-')) {
    return IntValue(i);
  }
  google::protobuf::Value j;
  if (google::protobuf::util::JsonStringToMessage(text, &j).ok()) {
    if (j.kind_case() == google::protobuf::Value::kNumberValue && text.find_first_of(".eE") != std::string::npos) {
      return DoubleValue(j.number_value());
    }
    return FromJson(j);
  }
  const char c = text[0];
  if (c == '[' || c == '{' || c == '"') return InvalidArgument("cannot parse '" + text + "' as JSON");
  return StringValue(text);
}

}  // namespace loom
