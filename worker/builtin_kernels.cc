#include "worker/builtin_kernels.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/value.h"

namespace loom::worker {
namespace {

// "float32[2x3]": how errors name a tensor.
std::string TensorLabel(const Tensor& t) {
  std::string s = std::string(DTypeName(t.dtype())) + "[";
  for (int i = 0; i < t.shape_size(); ++i) s += (i ? "x" : "") + std::to_string(t.shape(i));
  return s + "]";
}

// Calls fn.template operator()<T>() with T the C++ element type of a numeric dtype.
template <typename Fn>
Result<Value> DispatchNumeric(v1::DType dtype, Fn&& fn) {
  switch (dtype) {
    case v1::DTYPE_FLOAT32: return fn.template operator()<float>();
    case v1::DTYPE_FLOAT64: return fn.template operator()<double>();
    case v1::DTYPE_INT8: return fn.template operator()<int8_t>();
    case v1::DTYPE_INT16: return fn.template operator()<int16_t>();
    case v1::DTYPE_INT32: return fn.template operator()<int32_t>();
    case v1::DTYPE_INT64: return fn.template operator()<int64_t>();
    case v1::DTYPE_UINT8: return fn.template operator()<uint8_t>();
    case v1::DTYPE_UINT16: return fn.template operator()<uint16_t>();
    case v1::DTYPE_UINT32: return fn.template operator()<uint32_t>();
    case v1::DTYPE_UINT64: return fn.template operator()<uint64_t>();
    default:
      return InvalidArgument(std::string("add: ") + DTypeName(dtype) +
                             " tensors are not supported; use a float or integer dtype");
  }
}

// The elements of a tensor whose dtype is T. The element count comes from the byte count, so a
// shape that disagrees with the data can never make us read past it.
template <typename T>
std::vector<T> Elements(const Tensor& t) {
  std::vector<T> out(t.data().size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), t.data().data(), out.size() * sizeof(T));
  return out;
}

// A tensor with `like`'s dtype and shape holding `elements`.
template <typename T>
Value TensorLike(const Tensor& like, const std::vector<T>& elements) {
  Value v;
  auto* t = v.mutable_tensor_value();
  t->set_dtype(like.dtype());
  *t->mutable_shape() = like.shape();
  t->set_data(reinterpret_cast<const char*>(elements.data()), elements.size() * sizeof(T));
  return v;
}

// a + b for one element; integer overflow is an error, as for scalars.
template <typename T>
Status AddElement(T a, T b, T* out, const Tensor& t) {
  if constexpr (std::is_floating_point_v<T>) {
    *out = a + b;
  } else if (__builtin_add_overflow(a, b, out)) {
    return InvalidArgument("add: " + std::to_string(a) + " + " + std::to_string(b) + " overflows the " +
                           DTypeName(t.dtype()) + " elements of the " + TensorLabel(t) + " tensor");
  }
  return Status::Ok();
}

// A scalar converted to the element type T of tensor `t` without changing its value: the
// result keeps the tensor's dtype, so a scalar T cannot hold exactly is an error.
template <typename T>
Result<T> ScalarAs(const Value& scalar, const Tensor& t) {
  if constexpr (std::is_floating_point_v<T>) {
    return scalar.has_int_value() ? static_cast<T>(scalar.int_value()) : static_cast<T>(scalar.double_value());
  } else {
    const std::string why = "add: cannot add " + DebugString(scalar) + " to the " + TensorLabel(t) +
                            " tensor: the result keeps the tensor's dtype, and " + DTypeName(t.dtype()) +
                            " cannot hold " + DebugString(scalar) + " exactly";
    if (scalar.has_int_value()) {
      if (!std::in_range<T>(scalar.int_value())) return InvalidArgument(why);
      return static_cast<T>(scalar.int_value());
    }
    const double d = scalar.double_value();
    if (!std::isfinite(d) || std::trunc(d) != d) return InvalidArgument(why + " (use a float tensor)");
    // 0x1p63 and 0x1p64 are exact doubles; the casts below are in range once these hold.
    if constexpr (std::is_signed_v<T>) {
      if (d < -0x1p63 || d >= 0x1p63 || !std::in_range<T>(static_cast<int64_t>(d))) return InvalidArgument(why);
      return static_cast<T>(static_cast<int64_t>(d));
    } else {
      if (d < 0 || d >= 0x1p64 || !std::in_range<T>(static_cast<uint64_t>(d))) return InvalidArgument(why);
      return static_cast<T>(static_cast<uint64_t>(d));
    }
  }
}

Result<Value> AddTensors(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape_size() != b.shape_size() ||
      !std::equal(a.shape().begin(), a.shape().end(), b.shape().begin())) {
    return InvalidArgument("add: tensors must have the same dtype and shape; got " + TensorLabel(a) + " and " +
                           TensorLabel(b));
  }
  return DispatchNumeric(a.dtype(), [&]<typename T>() -> Result<Value> {
    std::vector<T> x = Elements<T>(a);
    const std::vector<T> y = Elements<T>(b);
    for (size_t i = 0; i < x.size(); ++i) LOOM_RETURN_IF_ERROR(AddElement(x[i], y[i], &x[i], a));
    return TensorLike(a, x);
  });
}

Result<Value> AddScalarToTensor(const Tensor& t, const Value& scalar) {
  return DispatchNumeric(t.dtype(), [&]<typename T>() -> Result<Value> {
    LOOM_ASSIGN_OR_RETURN(const T s, ScalarAs<T>(scalar, t));
    std::vector<T> x = Elements<T>(t);
    for (auto& e : x) LOOM_RETURN_IF_ERROR(AddElement(e, s, &e, t));
    return TensorLike(t, x);
  });
}

Result<Value> Add(const KernelCall& call) {
  const Value& a = *call.param(0);
  const Value& b = *call.param(1);
  if (a.has_tensor_value() && b.has_tensor_value()) return AddTensors(a.tensor_value(), b.tensor_value());
  if (a.has_tensor_value()) return AddScalarToTensor(a.tensor_value(), b);
  if (b.has_tensor_value()) return AddScalarToTensor(b.tensor_value(), a);
  if (a.has_int_value() && b.has_int_value()) {
    int64_t sum = 0;
    if (__builtin_add_overflow(a.int_value(), b.int_value(), &sum)) {
      return InvalidArgument("add: " + std::to_string(a.int_value()) + " + " + std::to_string(b.int_value()) +
                             " overflows int64; pass doubles to add them approximately");
    }
    return IntValue(sum);
  }
  auto as_double = [](const Value& v) { return v.has_int_value() ? static_cast<double>(v.int_value()) : v.double_value(); };
  return DoubleValue(as_double(a) + as_double(b));
}

Result<Value> Sleep(const KernelCall& call) {
  const Value& arg = *call.param(0);
  const double seconds = arg.has_int_value() ? static_cast<double>(arg.int_value()) : arg.double_value();
  // Written so that NaN fails too.
  if (!(seconds >= 0 && seconds <= kMaxSleepSeconds)) {
    return InvalidArgument("sleep: seconds must be between 0 and " + std::to_string(static_cast<int>(kMaxSleepSeconds)) +
                           ", got " + DebugString(arg));
  }
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return DoubleValue(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

Result<Value> Fail(const KernelCall& call) {
  const Value* message = call.param(0);
  return Status(StatusCode::kUnknown, message != nullptr ? message->string_value() : kDefaultFailMessage);
}

Result<Value> Crash(const KernelCall&) {
  // SIGKILL, not abort(): no handler, no core dump, no flush; exactly what a dying machine looks like.
  ::kill(::getpid(), SIGKILL);
  return Internal("crash: SIGKILL did not end the process");
}

}  // namespace

Status RegisterBuiltinKernels(KernelRegistry* registry) {
  LOOM_RETURN_IF_ERROR(registry->Register(
      {MakeKernelInfo("echo", "1", "Returns its argument unchanged.",
                      {Param("value", v1::VALUE_TYPE_ANY, "any value")}, v1::VALUE_TYPE_ANY, "the same value"),
       [](const KernelCall& call) -> Result<Value> { return *call.param(0); }}));
  LOOM_RETURN_IF_ERROR(registry->Register(
      {MakeKernelInfo("add", "1",
                      "Adds two numbers or tensors. int + int is an int (overflow is an error); any double makes a "
                      "double. Tensors add elementwise and need the same dtype and shape; a number added to a tensor "
                      "is broadcast, and the result keeps the tensor's dtype.",
                      {Param("a", v1::VALUE_TYPE_NUMBER_OR_TENSOR, "first addend"),
                       Param("b", v1::VALUE_TYPE_NUMBER_OR_TENSOR, "second addend")},
                      v1::VALUE_TYPE_NUMBER_OR_TENSOR, "a + b"),
       Add}));
  LOOM_RETURN_IF_ERROR(registry->Register(
      {MakeKernelInfo("sleep", "1", "Sleeps, then returns how long it slept.",
                      {Param("seconds", v1::VALUE_TYPE_NUMBER, "how long to sleep, 0 to 86400")},
                      v1::VALUE_TYPE_DOUBLE, "seconds actually slept"),
       Sleep}));
  LOOM_RETURN_IF_ERROR(registry->Register(
      {MakeKernelInfo("fail", "1", "Always fails, with the given message as the task's error.",
                      {Param("message", v1::VALUE_TYPE_STRING,
                             std::string("the error to report; default \"") + kDefaultFailMessage + "\"",
                             /*optional=*/true)},
                      v1::VALUE_TYPE_NULL, "never returns a value"),
       Fail}));
  LOOM_RETURN_IF_ERROR(registry->Register(
      {MakeKernelInfo("crash", "1",
                      "Kills the worker process with SIGKILL, to test how the fabric handles a lost worker.", {},
                      v1::VALUE_TYPE_NULL, "never returns"),
       Crash}));
  return Status::Ok();
}

}  // namespace loom::worker
