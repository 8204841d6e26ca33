#include "kernels/science/minifloat.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>

namespace loom::science {

// Built from the double's bits: both are on the hot path of every rounding.
double FloatFormat::MaxFinite() const {
  const uint64_t mantissa = ((uint64_t{1} << mantissa_bits) - 1) << (52 - mantissa_bits);
  const uint64_t u = (static_cast<uint64_t>(1023 + Bias()) << 52) | mantissa;
  double d = 0;
  std::memcpy(&d, &u, sizeof(d));
  return d;
}
double FloatFormat::MinNormal() const {
  const uint64_t u = static_cast<uint64_t>(1023 + 1 - Bias()) << 52;
  double d = 0;
  std::memcpy(&d, &u, sizeof(d));
  return d;
}
std::string FloatFormat::Name() const {
  return "e" + std::to_string(exponent_bits) + "m" + std::to_string(mantissa_bits);
}

Result<FloatFormat> ParseFloatFormat(const std::string& name) {
  int e = 0;
  int m = 0;
  char tail = 0;
  if (std::sscanf(name.c_str(), "e%dm%d%c", &e, &m, &tail) != 2 || e < 2 || e > 8 || m < 1 || m > 23) {
    return InvalidArgument("unknown number format '" + name +
                           "': expected eXmY with X exponent bits (2..8) and Y mantissa bits (1..23), e.g. e5m4");
  }
  return FloatFormat{e, m};
}

double RoundToFormat(double x, const FloatFormat& format) {
  if (std::isnan(x) || x == 0.0) return x;
  if (std::isinf(x)) return x;
  // Round the double's 52-bit fraction to mantissa_bits, ties to even, on the bits: a carry out
  // of the fraction bumps the exponent, which is exactly the rounding to the next binade.
  uint64_t u = 0;
  std::memcpy(&u, &x, sizeof(u));
  const int drop = 52 - format.mantissa_bits;
  const uint64_t half = (uint64_t{1} << (drop - 1)) - 1;
  u += half + ((u >> drop) & 1);
  u &= ~((uint64_t{1} << drop) - 1);
  double r = 0;
  std::memcpy(&r, &u, sizeof(r));
  const double a = std::fabs(r);
  // Double's own subnormals (|x| < 2^-1022) are far below every format's range and flush here.
  if (a > format.MaxFinite()) return std::copysign(std::numeric_limits<double>::infinity(), x);
  if (a < format.MinNormal()) return std::copysign(0.0, x);
  return r;
}

double MiniFloatArith::Exp(double x) const { return Round(std::exp(x)); }

}  // namespace loom::science
