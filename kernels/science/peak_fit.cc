#include "kernels/science/peak_fit.h"

#include <Eigen/Dense>
#include <algorithm>
#include <array>
#include <cmath>

#include "kernels/science/braggnn.h"

namespace loom::science {
namespace {

constexpr int kParams = 7;
using Vec = Eigen::Matrix<double, kParams, 1>;
using Mat = Eigen::Matrix<double, kParams, kParams>;

PeakParams FromVec(const Vec& v) {
  return {.cx = v[0], .cy = v[1], .fwhm_x = v[2], .fwhm_y = v[3], .eta = v[4], .amplitude = v[5], .background = v[6]};
}

void Clamp(Vec* v) {
  (*v)[0] = std::clamp((*v)[0], -0.5, kPatch - 0.5);
  (*v)[1] = std::clamp((*v)[1], -0.5, kPatch - 0.5);
  (*v)[2] = std::clamp((*v)[2], 0.3, double{kPatch});
  (*v)[3] = std::clamp((*v)[3], 0.3, double{kPatch});
  (*v)[4] = std::clamp((*v)[4], 0.0, 1.0);
}

double Chi2(const std::array<double, kPatchPixels>& model, const float* patch, const std::array<double, 121>& w) {
  double s = 0;
  for (int i = 0; i < kPatchPixels; ++i) {
    const double r = (model[i] - patch[i]) * w[i];
    s += r * r;
  }
  return s;
}

}  // namespace

Centre CentreOfMass(const float* patch) {
  const float lo = *std::min_element(patch, patch + kPatchPixels);
  double sum = 0, sx = 0, sy = 0;
  for (int r = 0; r < kPatch; ++r) {
    for (int c = 0; c < kPatch; ++c) {
      const double v = patch[r * kPatch + c] - lo;
      sum += v;
      sx += v * c;
      sy += v * r;
    }
  }
  if (sum <= 0) return {(kPatch - 1) / 2.0, (kPatch - 1) / 2.0};
  return {sx / sum, sy / sum};
}

FitResult FitPseudoVoigt(const float* patch, const FitOptions& options) {
  std::array<double, kPatchPixels> w;
  double total = 0;
  float lo = patch[0];
  for (int i = 0; i < kPatchPixels; ++i) {
    w[i] = 1.0 / std::sqrt(std::max<double>(patch[i], 1.0));
    total += patch[i];
    lo = std::min(lo, patch[i]);
  }
  const Centre com = CentreOfMass(patch);
  Vec v;
  v << com.x, com.y, 2.0, 2.0, 0.5, std::max(1.0, total - lo * kPatchPixels), lo;
  auto model = [](const Vec& p) { return PeakExpectation(FromVec(p)); };
  std::array<double, kPatchPixels> m = model(v);
  double chi2 = Chi2(m, patch, w);
  double lambda = 1e-3;
  FitResult result;
  Eigen::Matrix<double, kPatchPixels, kParams> jac;
  for (int it = 0; it < options.max_iterations; ++it) {
    result.iterations = it + 1;
    // Jacobian of the weighted residuals by central differences (the model is separable and
    // cheap: 44 erf/atan per evaluation).
    for (int k = 0; k < kParams; ++k) {
      const double h = k == 5 ? std::max(1e-6 * std::abs(v[k]), 1e-6) : 1e-6 * std::max(1.0, std::abs(v[k]));
      Vec vp = v, vm = v;
      vp[k] += h;
      vm[k] -= h;
      const auto mp = model(vp);
      const auto mm = model(vm);
      for (int i = 0; i < kPatchPixels; ++i) jac(i, k) = (mp[i] - mm[i]) / (2 * h) * w[i];
    }
    Eigen::Matrix<double, kPatchPixels, 1> r;
    for (int i = 0; i < kPatchPixels; ++i) r[i] = (patch[i] - m[i]) * w[i];
    const Mat jtj = jac.transpose() * jac;
    const Vec jtr = jac.transpose() * r;
    bool improved = false;
    for (int tries = 0; tries < 10 && !improved; ++tries) {
      Mat a = jtj;
      for (int k = 0; k < kParams; ++k) a(k, k) += lambda * std::max(jtj(k, k), 1e-12);
      Vec step = a.ldlt().solve(jtr);
      Vec trial = v + step;
      Clamp(&trial);
      const auto mt = model(trial);
      const double c = Chi2(mt, patch, w);
      if (std::isfinite(c) && c < chi2) {
        const double decrease = (chi2 - c) / std::max(chi2, 1e-300);
        v = trial;
        m = mt;
        chi2 = c;
        lambda = std::max(lambda / 10, 1e-12);
        improved = true;
        if (decrease < options.tolerance) {
          result.converged = true;
        }
      } else {
        lambda *= 10;
      }
    }
    if (!improved) {
      result.converged = true;  // no step decreases chi2: at a minimum to working precision
      break;
    }
    if (result.converged) break;
  }
  result.params = FromVec(v);
  result.chi2 = chi2;
  return result;
}

}  // namespace loom::science
