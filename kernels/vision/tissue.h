// Seeded synthetic serial-section EM images with known focus: tissue-like content (small dark
// discs as vesicles, membrane-like curves, granular texture) blurred by a Gaussian of known
// sigma, with noise. Used by the focus tests, benchmark and calibration tool as data with known
// truth (docs/VISION-FOCUS.md describes the model and why it looks the way it does).
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <vector>

namespace loom::vision {

struct TissueOptions {
  int size = 1024;            // square image side, in pixels (16..8192)
  double blur_sigma = 0.0;    // defocus: Gaussian blur sigma in pixels (0 = in focus), 0..64
  double noise_sigma = 0.02;  // additive Gaussian noise after the blur (image range [0, 1]), >= 0
  // Feature counts per 1024 x 1024 pixels; scaled by area for other sizes so that the density and
  // the feature sizes in pixels are the same at every size.
  int vesicles = 400;   // dark discs, radius 3..7 px, with a darker rim
  int membranes = 40;   // dark curves, 2..3 px thick, 100..400 px long
  int granules = 4000;  // small dark dots, radius 0.8..1.8 px (ribosome-like grain)
};

// A CV_32FC1 image in [0, 1]. The same seed gives the same tissue and the same noise field for
// every blur, so a blur series varies defocus only. Deterministic across platforms (cv::RNG).
// REQUIRES: options within the ranges above (a broken precondition is a crash, LOOM_CHECK).
cv::Mat MakeTissueImage(uint64_t seed, const TissueOptions& options);

// The defocus levels of the synthetic blur series used by the tests, the benchmark and
// `loom-focus-calibrate --synthetic`: 0 to 8 px.
const std::vector<double>& TissueBlurSeries();

// The ground truth the focus tests and tools use on the series: in focus when the blur sigma is at
// most kInFocusMaxBlur, out of focus when it is at least kOutOfFocusMinBlur. Levels strictly
// between (1.5 px) are the transition band: they are kept in every rank-correlation figure but
// carry no in/out label, so they are not scored as classifications (docs/VISION-FOCUS.md: why).
inline constexpr double kInFocusMaxBlur = 1.0;
inline constexpr double kOutOfFocusMinBlur = 2.0;

}  // namespace loom::vision
