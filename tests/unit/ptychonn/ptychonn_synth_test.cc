// The synthetic ptychography generator (kernels/science/ptychonn_synth.h).
#include "kernels/science/ptychonn_synth.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>

namespace loom::science {
namespace {

TEST(PtychoSynthTest, FftEqualsTheDirectDft) {
  constexpr int n = 8;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> g;
  std::vector<std::complex<double>> a(n * n);
  for (auto& v : a) v = {g(rng), g(rng)};
  auto f = a;
  Fft2(f, n);
  for (int u = 0; u < n; ++u)
    for (int v = 0; v < n; ++v) {
      std::complex<double> sum;
      for (int y = 0; y < n; ++y)
        for (int x = 0; x < n; ++x) sum += a[y * n + x] * std::polar(1.0, -2 * std::numbers::pi * (u * y + v * x) / n);
      EXPECT_LT(std::abs(f[u * n + v] - sum), 1e-9) << u << "," << v;
    }
}

TEST(PtychoSynthTest, PatternsHoldTheExpectedPhotonsAndTheTruthIsInRange) {
  const PtychoSamples s = MakePtychoSamples(9, 64, 3);
  ASSERT_EQ(s.input.size(), 3u * 64 * 64);
  const size_t per = 64 * 64;
  for (int i = 0; i < 3; ++i) {
    double expected = 0;
    double counted = 0;
    for (size_t k = per * i; k < per * (i + 1); ++k) {
      expected += s.expected_counts[k];
      counted += std::expm1(static_cast<double>(s.input[k]));
    }
    EXPECT_NEAR(expected, 244.0 * per, 1e-3 * 244.0 * per);
    // Poisson noise: the total is within a few sigmas of the expectation.
    EXPECT_NEAR(counted, expected, 5 * std::sqrt(expected) + 0.01 * expected);
  }
  for (float a : s.amplitude) ASSERT_TRUE(a > 0.49f && a <= 1.f);
  for (float p : s.phase) ASSERT_TRUE(p >= 0.f && p < 1.5f);
  // The far field of a mostly flat patch peaks at the centre (zero frequency after fftshift).
  const auto peak =
      std::max_element(s.expected_counts.begin(), s.expected_counts.begin() + per) - s.expected_counts.begin();
  EXPECT_NEAR(peak / 64, 32, 3);
  EXPECT_NEAR(peak % 64, 32, 3);
}

TEST(PtychoSynthTest, SameSeedSameSamplesOtherSeedOtherSamples) {
  const PtychoSamples a = MakePtychoSamples(4, 32, 2);
  const PtychoSamples b = MakePtychoSamples(4, 32, 2);
  const PtychoSamples c = MakePtychoSamples(5, 32, 2);
  EXPECT_EQ(a.input, b.input);
  EXPECT_EQ(a.phase, b.phase);
  EXPECT_NE(a.phase, c.phase);
}

TEST(PtychoSynthTest, SsimIsOneForEqualImagesAndFallsWithNoise) {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(32 * 32), noisy(32 * 32), other(32 * 32);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = std::sin(0.2f * static_cast<float>(i % 32)) + std::cos(0.3f * static_cast<float>(i / 32));
    noisy[i] = x[i] + 0.3f * (u(rng) - 0.5f);
    other[i] = u(rng);
  }
  EXPECT_NEAR(Ssim(x.data(), x.data(), 32, 32, 2.0), 1.0, 1e-12);
  const double s_noisy = Ssim(x.data(), noisy.data(), 32, 32, 2.0);
  const double s_other = Ssim(x.data(), other.data(), 32, 32, 2.0);
  EXPECT_LT(s_noisy, 0.99);
  EXPECT_GT(s_noisy, s_other);
}

}  // namespace
}  // namespace loom::science
