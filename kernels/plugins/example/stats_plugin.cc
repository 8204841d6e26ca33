// Example Loom kernel plugin: stats@1(values: tensor) -> {count, mean, min, max, std}.
// See README.md next to this file for how to write and load a plugin.
#include <cmath>
#include <limits>

#include "common/kernel_api.h"
#include "common/value.h"

namespace {

using loom::KernelCall;
using loom::Result;
using loom::Value;

// Summary statistics over every element of a numeric tensor, whatever its shape. `std` is the
// population standard deviation, computed in two passes so it stays accurate for data far from 0.
Result<Value> Stats(const KernelCall& call) {
  const loom::Tensor& t = call.param(0)->tensor_value();  // ValidateArgs checked type and byte count
  if (t.dtype() == loom::v1::DTYPE_BOOL) {
    return loom::InvalidArgument("stats: 'values' must be a numeric tensor, got bool");
  }
  // The count comes from the bytes, not the shape, so a shape that disagrees can never make us
  // read past the data.
  const int64_t n = static_cast<int64_t>(t.data().size() / loom::DTypeSize(t.dtype()));
  if (n == 0) return loom::InvalidArgument("stats: 'values' is an empty tensor; statistics need at least one element");
  double sum = 0;
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    const double x = loom::TensorElementAsDouble(t, i);
    sum += x;
    lo = std::fmin(lo, x);
    hi = std::fmax(hi, x);
  }
  const double mean = sum / static_cast<double>(n);
  double squares = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = loom::TensorElementAsDouble(t, i) - mean;
    squares += d * d;
  }
  return loom::MapValue({{"count", loom::IntValue(n)},
                         {"mean", loom::DoubleValue(mean)},
                         {"min", loom::DoubleValue(lo)},
                         {"max", loom::DoubleValue(hi)},
                         {"std", loom::DoubleValue(std::sqrt(squares / static_cast<double>(n)))}});
}

}  // namespace

extern "C" int loom_register_kernels(loom::KernelRegistry* registry) {
  loom::Status s = registry->Register(
      {loom::MakeKernelInfo("stats", "1",
                            "Count, mean, min, max and population standard deviation of all elements of a numeric "
                            "tensor of any shape.",
                            {loom::Param("values", loom::v1::VALUE_TYPE_TENSOR, "a non-empty numeric tensor")},
                            loom::v1::VALUE_TYPE_MAP,
                            "{count: int, mean: double, min: double, max: double, std: double}"),
       Stats});
  return s.ok() ? 0 : 1;
}
