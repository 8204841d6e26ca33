// Synthetic ptychography with known truth, for PtychoNN's tests and benchmarks: the C++ twin of
// tools/ptychonn/synth.py (same distribution, its own random generator, so its samples are
// held-out data for networks trained by the Python tool).
//
// A complex object a * exp(i phi) of side 8n: a = 1 - 0.5 tanh(A), phi = 1.5 tanh(P), A and P each
// a sum of 600 Gaussian blobs (weights U(0.5, 1), sigmas U(n/16, n/5), uniform centres, truncated
// at 4 sigma). A probe of side n: exp(-(r / 0.375n)^6) exp(i pi (r / (n/2))^2). One pattern:
// |fftshift(fft2(probe * patch))|^2 scaled to 244 n^2 expected photons, Poisson noise; the network
// input is log1p(counts). Deterministic for a seed.
#pragma once

#include <complex>
#include <cstdint>
#include <vector>

namespace loom::science {

struct PtychoObject {
  int side = 0;
  std::vector<double> amplitude;  // side x side
  std::vector<double> phase;
};

struct PtychoSamples {
  int n = 0;
  int count = 0;
  std::vector<float> input;      // count x n x n, log1p(photon counts)
  std::vector<float> amplitude;  // count x n x n, the truth
  std::vector<float> phase;
  std::vector<float> expected_counts;  // count x n x n, the noise-free intensity (photons)
};

PtychoObject MakePtychoObject(uint64_t seed, int n);
std::vector<std::complex<double>> MakePtychoProbe(int n);
// In-place 2-D FFT of an n x n row-major array. REQUIRES: n a power of two.
void Fft2(std::vector<std::complex<double>>& a, int n);
// `count` patterns of side n (64 or 128; any power of two works) from the object of `seed`.
PtychoSamples MakePtychoSamples(uint64_t seed, int n, int count);

// Mean SSIM of two rows x cols images with a 7x7 uniform window over the valid region, K1 = 0.01,
// K2 = 0.03, sample covariance: scikit-image's structural_similarity defaults (the Python twin
// is synth.ssim).
double Ssim(const float* x, const float* y, int rows, int cols, double data_range);

}  // namespace loom::science
