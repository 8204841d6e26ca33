// Synthetic Bragg peaks with known truth: an 11x11 patch of a pixel-integrated 2-D pseudo-Voigt
// peak plus a flat background, Poisson-sampled. The same model as tools/braggnn/synth.py (same
// ranges, same pixel integration; the random streams differ, so the same distribution, not the
// same numbers).
//
// Pixel (row r, column c) covers [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5], so pixel centres are
// the integers 0..10. Expected counts:
//   amplitude * [eta * L_x(c) L_y(r) + (1 - eta) * G_x(c) G_y(r)] + background
// with G and L the unit-area 1-D Gaussian and Lorentzian integrated over the pixel (erf and
// arctan, exact), both with the axis's FWHM (sigma = FWHM / 2.3548, gamma = FWHM / 2).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace loom::science {

struct PeakParams {
  double cx = 5;      // centre column, pixels
  double cy = 5;      // centre row, pixels
  double fwhm_x = 2;  // pixels
  double fwhm_y = 2;
  double eta = 0.5;         // Lorentzian fraction, 0..1
  double amplitude = 1000;  // integrated counts of the peak
  double background = 5;    // counts per pixel
};

// The ranges each parameter is drawn from, uniformly (keep in step with synth.py).
struct PeakRanges {
  double centre_min = 4.0, centre_max = 6.0;
  double fwhm_min = 1.2, fwhm_max = 3.5;
  double eta_min = 0.0, eta_max = 1.0;
  double amplitude_min = 300, amplitude_max = 3000;
  double background_min = 0, background_max = 10;
};

// Expected counts, row-major [11][11].
std::array<double, 121> PeakExpectation(const PeakParams& p);

struct SyntheticPeaks {
  std::vector<float> patches;     // [n, 11, 11] Poisson counts
  std::vector<PeakParams> truth;  // n
};

// n peaks from `seed` (the same seed gives the same peaks on every platform with the same libstdc++).
SyntheticPeaks GeneratePeaks(int64_t n, uint64_t seed, const PeakRanges& ranges = {});

}  // namespace loom::science
