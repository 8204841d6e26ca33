#include "kernels/science/ptychonn_synth.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

namespace loom::science {
namespace {

constexpr double kPhotonsPerPixel = 244.0;
constexpr int kBlobs = 600;

std::vector<double> BlobField(std::mt19937_64& rng, int side, int n) {
  std::vector<double> field(static_cast<size_t>(side) * side, 0.0);
  std::uniform_real_distribution<double> weight(0.5, 1.0);
  std::uniform_real_distribution<double> sigma(n / 16.0, n / 5.0);
  std::uniform_real_distribution<double> centre(0.0, side);
  for (int b = 0; b < kBlobs; ++b) {
    const double w = weight(rng);
    const double s = sigma(rng);
    const double cy = centre(rng);
    const double cx = centre(rng);
    const int r = static_cast<int>(std::ceil(4 * s));
    const int y0 = std::max(0, static_cast<int>(cy) - r);
    const int y1 = std::min(side, static_cast<int>(cy) + r + 1);
    const int x0 = std::max(0, static_cast<int>(cx) - r);
    const int x1 = std::min(side, static_cast<int>(cx) + r + 1);
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x)
        field[static_cast<size_t>(y) * side + x] +=
            w * std::exp(-((y - cy) * (y - cy) + (x - cx) * (x - cx)) / (2 * s * s));
  }
  return field;
}

void Fft1(std::complex<double>* a, int n, int stride) {
  // Bit-reversal permutation, then iterative radix-2 butterflies.
  for (int i = 1, j = 0; i < n; ++i) {
    int bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) std::swap(a[i * stride], a[j * stride]);
  }
  for (int len = 2; len <= n; len <<= 1) {
    const double ang = -2 * std::numbers::pi / len;
    const std::complex<double> wl(std::cos(ang), std::sin(ang));
    for (int i = 0; i < n; i += len) {
      std::complex<double> w(1.0, 0.0);
      for (int k = 0; k < len / 2; ++k) {
        const std::complex<double> u = a[(i + k) * stride];
        const std::complex<double> v = a[(i + k + len / 2) * stride] * w;
        a[(i + k) * stride] = u + v;
        a[(i + k + len / 2) * stride] = u - v;
        w *= wl;
      }
    }
  }
}

}  // namespace

void Fft2(std::vector<std::complex<double>>& a, int n) {
  for (int r = 0; r < n; ++r) Fft1(a.data() + static_cast<size_t>(r) * n, n, 1);
  for (int c = 0; c < n; ++c) Fft1(a.data() + c, n, n);
}

PtychoObject MakePtychoObject(uint64_t seed, int n) {
  std::mt19937_64 rng(seed);
  PtychoObject o;
  o.side = 8 * n;
  o.amplitude = BlobField(rng, o.side, n);
  o.phase = BlobField(rng, o.side, n);
  for (double& a : o.amplitude) a = 1 - 0.5 * std::tanh(a);
  for (double& p : o.phase) p = 1.5 * std::tanh(p);
  return o;
}

std::vector<std::complex<double>> MakePtychoProbe(int n) {
  std::vector<std::complex<double>> p(static_cast<size_t>(n) * n);
  const double c = (n - 1) / 2.0;
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double r = std::hypot(y - c, x - c);
      p[static_cast<size_t>(y) * n + x] = std::exp(-std::pow(r / (0.375 * n), 6)) *
                                          std::polar(1.0, std::numbers::pi * (r / (n / 2.0)) * (r / (n / 2.0)));
    }
  return p;
}

PtychoSamples MakePtychoSamples(uint64_t seed, int n, int count) {
  const PtychoObject obj = MakePtychoObject(seed, n);
  const auto probe = MakePtychoProbe(n);
  std::mt19937_64 rng(seed + 1'000'000);
  std::uniform_int_distribution<int> pos(0, obj.side - n);
  PtychoSamples s;
  s.n = n;
  s.count = count;
  const size_t per = static_cast<size_t>(n) * n;
  s.input.resize(per * count);
  s.amplitude.resize(per * count);
  s.phase.resize(per * count);
  s.expected_counts.resize(per * count);
  std::vector<std::complex<double>> field(per);
  for (int i = 0; i < count; ++i) {
    const int y0 = pos(rng);
    const int x0 = pos(rng);
    for (int y = 0; y < n; ++y)
      for (int x = 0; x < n; ++x) {
        const size_t src = static_cast<size_t>(y0 + y) * obj.side + (x0 + x);
        const size_t dst = static_cast<size_t>(y) * n + x;
        s.amplitude[per * i + dst] = static_cast<float>(obj.amplitude[src]);
        s.phase[per * i + dst] = static_cast<float>(obj.phase[src]);
        field[dst] = probe[dst] * std::polar(obj.amplitude[src], obj.phase[src]);
      }
    Fft2(field, n);
    double total = 0;
    for (const auto& f : field) total += std::norm(f);
    const double scale = kPhotonsPerPixel * static_cast<double>(per) / total;
    for (int y = 0; y < n; ++y)
      for (int x = 0; x < n; ++x) {
        // fftshift: frequency (y, x) goes to ((y + n/2) mod n, (x + n/2) mod n).
        const double mean = std::norm(field[static_cast<size_t>(y) * n + x]) * scale;
        const size_t dst = per * i + static_cast<size_t>((y + n / 2) % n) * n + (x + n / 2) % n;
        const double counts = mean > 0 ? static_cast<double>(std::poisson_distribution<int64_t>(mean)(rng)) : 0.0;
        s.expected_counts[dst] = static_cast<float>(mean);
        s.input[dst] = static_cast<float>(std::log1p(counts));
      }
  }
  return s;
}

double Ssim(const float* x, const float* y, int rows, int cols, double data_range) {
  constexpr int kWin = 7;
  constexpr double kNp = kWin * kWin;
  const double cov = kNp / (kNp - 1);
  const double c1 = (0.01 * data_range) * (0.01 * data_range);
  const double c2 = (0.03 * data_range) * (0.03 * data_range);
  double sum = 0;
  int windows = 0;
  for (int r = 0; r + kWin <= rows; ++r)
    for (int c = 0; c + kWin <= cols; ++c) {
      double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
      for (int i = 0; i < kWin; ++i)
        for (int j = 0; j < kWin; ++j) {
          const double a = x[(r + i) * cols + c + j];
          const double b = y[(r + i) * cols + c + j];
          sx += a;
          sy += b;
          sxx += a * a;
          syy += b * b;
          sxy += a * b;
        }
      const double mx = sx / kNp, my = sy / kNp;
      const double vx = cov * (sxx / kNp - mx * mx);
      const double vy = cov * (syy / kNp - my * my);
      const double vxy = cov * (sxy / kNp - mx * my);
      sum += ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
      ++windows;
    }
  return windows ? sum / windows : 0.0;
}

}  // namespace loom::science
