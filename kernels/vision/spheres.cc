#include "kernels/vision/spheres.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "common/status.h"

namespace loom::vision {

SpheresFrame MakeSpheresFrame(uint64_t seed, const SpheresOptions& o) {
  LOOM_CHECK(o.width >= 1 && o.height >= 1);
  LOOM_CHECK(o.min_radius > 0 && o.min_radius <= o.max_radius && o.count >= 0);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  SpheresFrame frame;

  constexpr int kTriesPerSphere = 1000;
  for (int n = 0; n < o.count; ++n) {
    for (int attempt = 0; attempt < kTriesPerSphere; ++attempt) {
      Sphere s;
      s.radius = o.min_radius + (o.max_radius - o.min_radius) * unit(rng);
      s.amplitude = o.min_amplitude + (o.max_amplitude - o.min_amplitude) * unit(rng);
      if (2 * s.radius >= o.width || 2 * s.radius >= o.height) continue;
      s.x = s.radius + (o.width - 1 - 2 * s.radius) * unit(rng);
      s.y = s.radius + (o.height - 1 - 2 * s.radius) * unit(rng);
      bool ok = true;
      if (!o.overlap_allowed) {
        for (const Sphere& t : frame.spheres) {
          const double d = std::hypot(s.x - t.x, s.y - t.y);
          if (d < 1.5 * (s.radius + t.radius)) {
            ok = false;
            break;
          }
        }
      }
      if (ok) {
        frame.spheres.push_back(s);
        break;
      }
    }
  }

  cv::Mat clean(o.height, o.width, CV_64F, cv::Scalar(o.background));
  for (const Sphere& s : frame.spheres) {
    if (o.gaussian) {
      const double sigma = s.radius / std::sqrt(2.0);
      const int reach = static_cast<int>(std::ceil(5 * sigma));
      const int y0 = std::max(0, static_cast<int>(s.y) - reach),
                y1 = std::min(o.height - 1, static_cast<int>(s.y) + reach);
      const int x0 = std::max(0, static_cast<int>(s.x) - reach),
                x1 = std::min(o.width - 1, static_cast<int>(s.x) + reach);
      for (int y = y0; y <= y1; ++y) {
        double* row = clean.ptr<double>(y);
        for (int x = x0; x <= x1; ++x) {
          const double d2 = (x - s.x) * (x - s.x) + (y - s.y) * (y - s.y);
          row[x] += s.amplitude * std::exp(-d2 / (2 * sigma * sigma));
        }
      }
    } else {
      // Flat disc, anti-aliased with 4x4 samples per pixel.
      const int reach = static_cast<int>(std::ceil(s.radius)) + 1;
      const int y0 = std::max(0, static_cast<int>(s.y) - reach),
                y1 = std::min(o.height - 1, static_cast<int>(s.y) + reach);
      const int x0 = std::max(0, static_cast<int>(s.x) - reach),
                x1 = std::min(o.width - 1, static_cast<int>(s.x) + reach);
      const double r2 = s.radius * s.radius;
      for (int y = y0; y <= y1; ++y) {
        double* row = clean.ptr<double>(y);
        for (int x = x0; x <= x1; ++x) {
          int inside = 0;
          for (int sy = 0; sy < 4; ++sy) {
            for (int sx = 0; sx < 4; ++sx) {
              const double px = x - 0.375 + 0.25 * sx - s.x;
              const double py = y - 0.375 + 0.25 * sy - s.y;
              inside += (px * px + py * py <= r2) ? 1 : 0;
            }
          }
          row[x] += s.amplitude * inside / 16.0;
        }
      }
    }
  }

  frame.image.create(o.height, o.width, CV_32F);
  std::normal_distribution<double> read(0.0, 1.0);
  for (int y = 0; y < o.height; ++y) {
    const double* c = clean.ptr<double>(y);
    float* out = frame.image.ptr<float>(y);
    for (int x = 0; x < o.width; ++x) {
      double v = std::min(c[x], 1.0);
      if (o.photons > 0) {
        std::poisson_distribution<int64_t> poisson(v * o.photons);
        v = static_cast<double>(poisson(rng)) / o.photons;
      }
      if (o.read_noise > 0) v += o.read_noise * read(rng);
      out[x] = static_cast<float>(std::clamp(v, 0.0, 1.0));
    }
  }
  return frame;
}

TruthMatch MatchToTruth(const std::vector<Sphere>& truth, const std::vector<DogBlob>& found) {
  TruthMatch s;
  s.truth = static_cast<int>(truth.size());
  s.found = static_cast<int>(found.size());
  std::vector<bool> used(truth.size(), false);
  double sum = 0;
  for (const DogBlob& b : found) {
    int best = -1;
    double best_d = 0;
    for (size_t t = 0; t < truth.size(); ++t) {
      const double d = std::hypot(b.x - truth[t].x, b.y - truth[t].y);
      if (!used[t] && d <= truth[t].radius && (best < 0 || d < best_d)) {
        best = static_cast<int>(t);
        best_d = d;
      }
    }
    if (best < 0) continue;
    used[best] = true;
    ++s.matched;
    const double err = std::abs(b.radius - truth[best].radius);
    sum += err;
    s.max_radius_err = std::max(s.max_radius_err, err);
  }
  s.mean_radius_err = s.matched ? sum / s.matched : 0;
  return s;
}

}  // namespace loom::vision
