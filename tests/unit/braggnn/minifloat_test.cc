// The low-precision float model: rounding checked against a brute-force nearest-value search
// over every value of the format, and the emulated network against the float32 one.
#include "kernels/science/minifloat.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/science/braggnn.h"
#include "kernels/science/braggnn_emulated.h"
#include "tests/unit/braggnn/braggnn_test_util.h"

namespace loom::science {
namespace {

// Every finite non-negative value of the format, ascending (no subnormals).
std::vector<double> AllValues(const FloatFormat& f) {
  std::vector<double> v{0.0};
  for (int e = 1 - f.Bias(); e <= f.Bias(); ++e) {
    for (int m = 0; m < (1 << f.mantissa_bits); ++m) v.push_back(std::ldexp(1.0 + std::ldexp(m, -f.mantissa_bits), e));
  }
  return v;
}

// Nearest value, ties to the one with an even mantissa; above the largest finite value (after
// rounding): infinity. Below the smallest normal N the documented rule is "round at the
// precision of the binade below N, then flush what is not N": everything from N's lower
// rounding midpoint N (1 - 2^-(m + 2)) (a tie, which goes to N's even mantissa) rounds up to N,
// everything below it is zero. Independent of RoundToFormat's bit tricks.
double BruteForceRound(double x, const FloatFormat& f, const std::vector<double>& values) {
  const double a = std::fabs(x);
  // The next value above MaxFinite would be 2^(bias+1); halfway is the overflow threshold.
  const double top = f.MaxFinite(), next = std::ldexp(1.0, f.Bias() + 1);
  double r;
  if (a >= (top + next) / 2) {
    r = std::numeric_limits<double>::infinity();
  } else {
    if (a < f.MinNormal())
      return std::copysign(a >= f.MinNormal() * (1 - std::ldexp(1.0, -(f.mantissa_bits + 2))) ? f.MinNormal() : 0.0, x);
    auto it = std::lower_bound(values.begin(), values.end(), a);
    if (it == values.end()) {
      r = top;
    } else if (*it == a || it == values.begin()) {
      r = *it;
    } else {
      const double hi = *it, lo = *(it - 1);
      if (a - lo < hi - a) {
        r = lo;
      } else if (hi - a < a - lo) {
        r = hi;
      } else {  // tie: the even mantissa (index parity within the binade grid)
        const size_t idx = static_cast<size_t>(it - values.begin());
        r = ((idx - 1) % 2 == 1) ? lo : hi;  // values[k], k >= 1, has mantissa (k - 1) mod 2^m
      }
    }
  }
  return std::copysign(r, x);
}

class MiniFloatTest : public ::testing::TestWithParam<FloatFormat> {};

TEST_P(MiniFloatTest, EveryValueRoundTripsAndRoundingMatchesBruteForce) {
  const FloatFormat f = GetParam();
  const std::vector<double> values = AllValues(f);
  for (double v : values) {
    EXPECT_EQ(RoundToFormat(v, f), v);
    EXPECT_EQ(RoundToFormat(-v, f), -v);
  }
  // Midpoints (the ties) and random reals across the whole range.
  std::mt19937_64 rng(11);
  std::vector<double> xs;
  for (size_t i = 1; i < values.size(); ++i) xs.push_back((values[i - 1] + values[i]) / 2);
  std::uniform_real_distribution<double> e(-20, 17);
  for (int i = 0; i < 20000; ++i) xs.push_back(std::exp2(e(rng)) * (rng() % 2 ? 1 : -1));
  for (double x : xs) EXPECT_EQ(RoundToFormat(x, f), BruteForceRound(x, f, values)) << x;
}

TEST_P(MiniFloatTest, AddAndMultiplyAreCorrectlyRounded) {
  const FloatFormat f = GetParam();
  const std::vector<double> values = AllValues(f);
  const MiniFloatArith arith(f);
  std::mt19937_64 rng(12);
  for (int i = 0; i < 20000; ++i) {
    const double a = values[rng() % values.size()] * (rng() % 2 ? 1 : -1);
    const double b = values[rng() % values.size()] * (rng() % 2 ? 1 : -1);
    EXPECT_EQ(arith.Mul(a, b), BruteForceRound(a * b, f, values)) << a << " * " << b;
    EXPECT_EQ(arith.Add(a, b), BruteForceRound(a + b, f, values)) << a << " + " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, MiniFloatTest, ::testing::Values(kE5M4, kE5M3));

TEST(MiniFloatTest, DocumentedEdgeCases) {
  EXPECT_EQ(kE5M4.MaxFinite(), 63488.0);
  EXPECT_EQ(kE5M3.MaxFinite(), 61440.0);
  EXPECT_EQ(kE5M4.MinNormal(), std::ldexp(1.0, -14));
  EXPECT_TRUE(std::isinf(RoundToFormat(70000.0, kE5M4)));
  EXPECT_EQ(RoundToFormat(63500.0, kE5M4), 63488.0);           // rounds down to the largest finite value
  EXPECT_EQ(RoundToFormat(std::ldexp(1.0, -15), kE5M4), 0.0);  // no subnormals: flushed
  EXPECT_TRUE(std::signbit(RoundToFormat(-std::ldexp(1.0, -16), kE5M4)));
  EXPECT_EQ(RoundToFormat(1.0 + 1.0 / 32, kE5M4), 1.0);    // tie -> even (1.0000)
  EXPECT_EQ(RoundToFormat(1.0 + 3.0 / 32, kE5M4), 1.125);  // tie -> even (1.0010)
  EXPECT_TRUE(std::isnan(RoundToFormat(std::nan(""), kE5M4)));
  EXPECT_EQ(ParseFloatFormat("e5m3")->mantissa_bits, 3);
  EXPECT_FALSE(ParseFloatFormat("fp8").ok());
  EXPECT_FALSE(ParseFloatFormat("e5m4x").ok());
}

TEST(EmulatedBraggNetTest, WideFormatMatchesFloat32AndNarrowFormatsStayClose) {
  const auto golden = testing::GoldenFile::Load("golden_braggnn_fpga_trained");
  auto f32 = BraggNet::Create(BraggNNFpgaArchitecture(), golden.weights);
  ASSERT_TRUE(f32.ok()) << f32.status().message();
  std::vector<float> want(golden.n * 2);
  f32->Forward(golden.input, golden.n, want);
  // e8m23 is float32 without subnormals: the emulation's structure must give float32's answers.
  auto wide = EmulatedBraggNet::Create(BraggNNFpgaArchitecture(), golden.weights, FloatFormat{8, 23});
  ASSERT_TRUE(wide.ok());
  std::vector<float> got(golden.n * 2);
  wide->Forward(golden.input, golden.n, got);
  EXPECT_LE(testing::MaxAbsDiff(got, want), 1e-5f);
  // e5m4 / e5m3: every output is a value of the format and within a few ulps at 0.5 (1/32).
  for (FloatFormat f : {kE5M4, kE5M3}) {
    auto narrow = EmulatedBraggNet::Create(BraggNNFpgaArchitecture(), golden.weights, f);
    ASSERT_TRUE(narrow.ok());
    narrow->Forward(golden.input, golden.n, got);
    for (float v : got) EXPECT_EQ(RoundToFormat(v, f), v);
    EXPECT_LE(testing::MaxAbsDiff(got, want), 0.1f) << f.Name();
  }
}

}  // namespace
}  // namespace loom::science
