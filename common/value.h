// Helpers for loom::v1::Value, the typed argument/result of every task: construction,
// type names, type checks against a kernel's parameter specs, and tensor element access.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"

namespace loom {

using Value = v1::Value;
using Tensor = v1::Tensor;

Value NullValue();
Value BoolValue(bool b);
Value IntValue(int64_t i);
Value DoubleValue(double d);
Value StringValue(std::string s);
Value BytesValue(std::string b);
Value ListValue(std::vector<Value> items);
Value MapValue(std::vector<std::pair<std::string, Value>> entries);
// REQUIRES: data.size() equals the product of `shape`.
Value TensorValue(const std::vector<int64_t>& shape, std::span<const float> data);
Value TensorValue(const std::vector<int64_t>& shape, std::span<const double> data);
Value TensorValue(const std::vector<int64_t>& shape, std::span<const int64_t> data);
// A tensor of any element type. REQUIRES: sizeof(T) == DTypeSize(dtype); data.size() equals
// the product of `shape` (tests break this on purpose to check validation).
template <typename T>
Value TensorValueOf(v1::DType dtype, const std::vector<int64_t>& shape, const std::vector<T>& data) {
  Value v;
  auto* t = v.mutable_tensor_value();
  t->set_dtype(dtype);
  for (int64_t d : shape) t->add_shape(d);
  t->set_data(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(T));
  return v;
}

bool IsNull(const Value& v);
// "null", "bool", "int", "double", "string", "bytes", "tensor", "list", "map".
const char* KindName(const Value& v);
const char* ValueTypeName(v1::ValueType t);
const char* DTypeName(v1::DType d);
// Bytes per element; 0 for DTYPE_UNSPECIFIED.
size_t DTypeSize(v1::DType d);

bool Matches(const Value& v, v1::ValueType t);

// Checks a tensor's shape against its byte count and dtype.
Status ValidateTensor(const Tensor& t);
int64_t ElementCount(const Tensor& t);
// Element i of a numeric tensor as double / int64. REQUIRES: ValidateTensor(t).ok().
double TensorElementAsDouble(const Tensor& t, int64_t i);
int64_t TensorElementAsInt(const Tensor& t, int64_t i);
bool IsFloatDType(v1::DType d);

// Checks positional and keyword arguments against a kernel's inputs. Messages name the
// parameter, the expected and the given type.
Status ValidateArgs(const v1::KernelInfo& kernel,
                    const google::protobuf::RepeatedPtrField<Value>& args,
                    const google::protobuf::Map<std::string, Value>& kwargs);

// Compact human form: 3, 2.5, "text", [1, 2], {a: 1}, tensor<float32>[2x3].
std::string DebugString(const Value& v);

// Parses a command-line literal: null, true, false, integers, doubles, JSON-style
// "quoted strings", [lists] and {"maps": ...}; anything else is a bare string. Inside lists and
// maps, JSON numbers without a fraction become ints ([1.0] is [1]): JSON does not keep the
// difference.
Result<Value> ParseValueLiteral(const std::string& text);

}  // namespace loom
