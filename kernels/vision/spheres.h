// Seeded synthetic frames with known blobs, like the flame-spray-pyrolysis benchmark images:
// rendered discs or Gaussian spheres of known centres and radii, with Poisson and Gaussian noise.
// Used by the DoG tests and benchmarks, which need ground truth.
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <vector>

#include "kernels/vision/dog.h"

namespace loom::vision {

struct Sphere {
  double x = 0;  // column
  double y = 0;  // row
  double radius = 0;
  double amplitude = 0;  // peak height above the background, before noise
};

struct SpheresOptions {
  int width = 1000;
  int height = 1000;
  int count = 100;
  double min_radius = 3.0;  // radii are uniform in [min_radius, max_radius]
  double max_radius = 20.0;
  double min_amplitude = 0.6;  // amplitudes are uniform in [min_amplitude, max_amplitude]
  double max_amplitude = 1.0;
  double background = 0.05;
  bool gaussian = true;      // Gaussian spheres (sigma = radius / sqrt(2)); false: flat discs
  double photons = 200.0;    // photons at intensity 1, for the Poisson noise (0: none)
  double read_noise = 0.02;  // additive Gaussian noise (standard deviation)
  // false: centres are at least 1.5 (r1 + r2) apart, so the blobs do not touch.
  bool overlap_allowed = false;
};

struct SpheresFrame {
  cv::Mat image;                // CV_32FC1, clipped to [0, 1]
  std::vector<Sphere> spheres;  // the truth; centres lie at least one radius inside the frame
};

// Deterministic for a given seed and options (std::mt19937_64 with libstdc++'s distributions).
// Places up to options.count spheres by rejection sampling; on a frame too crowded for the
// spacing rule it returns fewer (the truth lists exactly those rendered).
// REQUIRES: width, height >= 1; 0 < min_radius <= max_radius; count >= 0.
SpheresFrame MakeSpheresFrame(uint64_t seed, const SpheresOptions& options);

// How detected blobs match the truth. Greedy one-to-one matching: each detection (in the order
// given) matches the nearest unmatched true sphere whose centre lies within that sphere's radius.
struct TruthMatch {
  int truth = 0, found = 0, matched = 0;
  double mean_radius_err = 0, max_radius_err = 0;  // |radius - true radius| over matched pairs, px
  double precision() const { return found ? static_cast<double>(matched) / found : 0; }
  double recall() const { return truth ? static_cast<double>(matched) / truth : 0; }
};
TruthMatch MatchToTruth(const std::vector<Sphere>& truth, const std::vector<DogBlob>& found);

}  // namespace loom::vision
