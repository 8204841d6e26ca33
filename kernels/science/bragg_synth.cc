#include "kernels/science/bragg_synth.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

#include "kernels/science/braggnn.h"

namespace loom::science {
namespace {

// Unit-area Gaussian and Lorentzian of one axis integrated over each pixel.
void PixelProfile(double centre, double fwhm, std::array<double, kPatch>* gauss, std::array<double, kPatch>* lorentz) {
  const double sigma = fwhm / (2.0 * std::sqrt(2.0 * std::numbers::ln2));
  const double gamma = fwhm / 2.0;
  for (int i = 0; i < kPatch; ++i) {
    const double lo = i - 0.5 - centre;
    const double hi = lo + 1.0;
    (*gauss)[i] = 0.5 * (std::erf(hi / (std::numbers::sqrt2 * sigma)) - std::erf(lo / (std::numbers::sqrt2 * sigma)));
    (*lorentz)[i] = (std::atan(hi / gamma) - std::atan(lo / gamma)) / std::numbers::pi;
  }
}

}  // namespace

std::array<double, 121> PeakExpectation(const PeakParams& p) {
  std::array<double, kPatch> gx, lx, gy, ly;
  PixelProfile(p.cx, p.fwhm_x, &gx, &lx);
  PixelProfile(p.cy, p.fwhm_y, &gy, &ly);
  std::array<double, 121> out;
  for (int r = 0; r < kPatch; ++r) {
    for (int c = 0; c < kPatch; ++c) {
      out[r * kPatch + c] = p.amplitude * (p.eta * ly[r] * lx[c] + (1 - p.eta) * gy[r] * gx[c]) + p.background;
    }
  }
  return out;
}

SyntheticPeaks GeneratePeaks(int64_t n, uint64_t seed, const PeakRanges& ranges) {
  std::mt19937_64 rng(seed);
  // Uniform from the raw 53 bits, not std::uniform_real_distribution, whose algorithm the
  // standard leaves to the library.
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1p-53; };
  SyntheticPeaks out;
  out.patches.resize(static_cast<size_t>(n) * kPatchPixels);
  out.truth.resize(n);
  for (int64_t s = 0; s < n; ++s) {
    PeakParams& p = out.truth[s];
    p.cx = uniform(ranges.centre_min, ranges.centre_max);
    p.cy = uniform(ranges.centre_min, ranges.centre_max);
    p.fwhm_x = uniform(ranges.fwhm_min, ranges.fwhm_max);
    p.fwhm_y = uniform(ranges.fwhm_min, ranges.fwhm_max);
    p.eta = uniform(ranges.eta_min, ranges.eta_max);
    p.amplitude = uniform(ranges.amplitude_min, ranges.amplitude_max);
    p.background = uniform(ranges.background_min, ranges.background_max);
    const auto lambda = PeakExpectation(p);
    for (int i = 0; i < kPatchPixels; ++i) {
      // Poisson by inversion, the mean split into equal parts below 30 (a sum of independent
      // Poisson draws is Poisson with the summed mean) so exp(-part) stays far from underflow;
      // std::poisson_distribution's algorithm is the library's choice, so it is avoided.
      const double lam = lambda[i];
      const int parts = static_cast<int>(std::ceil(lam / 30.0));
      const double part = lam / std::max(parts, 1);
      double k = 0;
      for (int j = 0; j < parts; ++j) {
        const double u = uniform(0, 1);
        double prob = std::exp(-part);
        double cdf = prob;
        int kk = 0;
        while (u > cdf && kk < 1000) {
          ++kk;
          prob *= part / kk;
          cdf += prob;
        }
        k += kk;
      }
      out.patches[static_cast<size_t>(s) * kPatchPixels + i] = static_cast<float>(k);
    }
  }
  return out;
}

}  // namespace loom::science
