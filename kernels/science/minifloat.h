// An arithmetic-exact software model of the small floating-point formats FPGA designs of BraggNN
// compute in (OpenHLS, Levental et al. 2023: 5-bit exponent with a 4-bit, then a 3-bit mantissa).
//
// A format has 1 sign bit, `exponent_bits` and `mantissa_bits` (the stored fraction; a hidden
// leading 1 makes the precision mantissa_bits + 1). Values are held in a double, which holds
// every value of every format here exactly; each operation computes the exact result in double
// (a product of two such values has at most 2 * 5 significant bits, and a sum of two spans at
// most 2^(bias + 1) / 2^-(bias - 1), about 2^31, so both are exact in double's 53 bits) and rounds
// it once to the format. So every multiply and add is correctly rounded, as an IEEE-style
// hardware operator computes it:
//
//  - rounding: to nearest, ties to even;
//  - exponent bias 2^(e-1) - 1 (15 for 5 bits); the top exponent code is reserved for infinity
//    and NaN as in IEEE 754, so the largest finite value is (2 - 2^-m) * 2^bias (61440 for e5m3,
//    63488 for e5m4);
//  - subnormals: none. A result whose magnitude, after rounding, is below the smallest normal
//    2^(1 - bias) (2^-14) is flushed to a zero of the same sign (FloPoCo-style operators, which
//    OpenHLS generates, have no subnormals);
//  - overflow: a result whose rounded magnitude exceeds the largest finite value becomes
//    infinity of the same sign (IEEE and FloPoCo both do this); NaN stays NaN.
//
// No fused multiply-add: a dot product is a chain of rounded products added one at a time into a
// rounded accumulator, in the order documented where it is used (braggnn_fpga.h).
#pragma once

#include <string>

#include "common/status.h"

namespace loom::science {

struct FloatFormat {
  int exponent_bits = 5;
  int mantissa_bits = 4;

  int Bias() const { return (1 << (exponent_bits - 1)) - 1; }
  double MaxFinite() const;
  double MinNormal() const;
  // "e5m4"
  std::string Name() const;
  bool operator==(const FloatFormat&) const = default;
};

inline constexpr FloatFormat kE5M4{5, 4};
inline constexpr FloatFormat kE5M3{5, 3};

// "e5m4" or "e5m3" (any eXmY with 2 <= X <= 8, 1 <= Y <= 23), or an error naming the accepted form.
Result<FloatFormat> ParseFloatFormat(const std::string& name);

// Rounds x to the nearest value of `format` (ties to even, no subnormals, overflow to infinity).
double RoundToFormat(double x, const FloatFormat& format);

// Arithmetic in one format: every operation's result is rounded. Operands must already be values
// of the format (REQUIRES: RoundToFormat(a) == a), as they are when they come from these.
class MiniFloatArith {
 public:
  explicit MiniFloatArith(FloatFormat format) : format_(format) {}
  const FloatFormat& format() const { return format_; }

  double Round(double x) const { return RoundToFormat(x, format_); }
  double Add(double a, double b) const { return Round(a + b); }
  double Sub(double a, double b) const { return Round(a - b); }
  double Mul(double a, double b) const { return Round(a * b); }
  double Div(double a, double b) const { return Round(a / b); }
  // exp(x) correctly rounded from double's exp (an FPGA exp unit is a table or a polynomial;
  // this models one whose error is below the format's half-ulp).
  double Exp(double x) const;
  double Max(double a, double b) const { return a > b ? a : b; }

 private:
  FloatFormat format_;
};

}  // namespace loom::science
