// The classical Bragg-peak localisers BraggNN is measured against: centre of mass, and a 2-D
// pseudo-Voigt least-squares fit (Levenberg-Marquardt), the method BraggNN replaced at the APS.
// Both take an 11x11 patch of counts (row-major) and return the centre in pixels (pixel centres
// at 0..10, as bragg_synth.h). Stateless and thread-safe.
#pragma once

#include "kernels/science/bragg_synth.h"

namespace loom::science {

struct Centre {
  double x = 0;  // column, pixels
  double y = 0;  // row, pixels
};

// Intensity-weighted mean position after subtracting the patch's minimum (the background
// estimate); the patch centre for a flat patch.
Centre CentreOfMass(const float* patch);

struct FitResult {
  PeakParams params;  // the fitted model (bragg_synth.h's parameters)
  int iterations = 0;
  double chi2 = 0;  // weighted sum of squared residuals at the end
  bool converged = false;
};

struct FitOptions {
  int max_iterations = 100;
  double tolerance = 1e-8;  // stop when the relative decrease of chi2 is below this
};

// Fits PeakExpectation's model (7 parameters: centre, FWHMs, eta, amplitude, background) to the
// patch by Levenberg-Marquardt, weighting each pixel by 1 / sqrt(max(counts, 1)) (Poisson),
// started from the centre of mass. FWHM is kept in [0.3, 11], eta in [0, 1], the centre in the
// patch.
FitResult FitPseudoVoigt(const float* patch, const FitOptions& options = {});

}  // namespace loom::science
