#include "kernels/vision/tissue.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <opencv2/imgproc.hpp>

#include "common/status.h"

namespace loom::vision {
namespace {

// Sub-pixel drawing: OpenCV's drawing functions take fixed-point coordinates with this many
// fractional bits.
constexpr int kShift = 4;
constexpr double kOne = 1 << kShift;

cv::Point Fixed(double x, double y) {
  return {static_cast<int>(std::lround(x * kOne)), static_cast<int>(std::lround(y * kOne))};
}

int Scaled(int per_megapixel, int size) {
  return static_cast<int>(std::lround(per_megapixel * (static_cast<double>(size) * size) / (1024.0 * 1024.0)));
}

// Darkens `image` by `depth` where the 8-bit coverage `mask` is set: image *= 1 - depth * mask.
void Darken(cv::Mat& image, const cv::Mat& mask, double depth) {
  for (int r = 0; r < image.rows; ++r) {
    float* p = image.ptr<float>(r);
    const uint8_t* m = mask.ptr<uint8_t>(r);
    for (int c = 0; c < image.cols; ++c) {
      if (m[c] != 0) p[c] *= static_cast<float>(1.0 - depth * (m[c] / 255.0));
    }
  }
}

// Smooth Gaussian noise with standard deviation `amplitude` and correlation length `sigma` px.
cv::Mat SmoothNoise(cv::RNG& rng, int size, double sigma, double amplitude) {
  cv::Mat n(size, size, CV_32F);
  rng.fill(n, cv::RNG::NORMAL, 0.0, 1.0);
  cv::GaussianBlur(n, n, cv::Size(0, 0), sigma, sigma, cv::BORDER_REFLECT);
  cv::Scalar mean, stddev;
  cv::meanStdDev(n, mean, stddev);
  if (stddev[0] > 0) n.convertTo(n, CV_32F, amplitude / stddev[0], -mean[0] * amplitude / stddev[0]);
  return n;
}

}  // namespace

const std::vector<double>& TissueBlurSeries() {
  static const std::vector<double> kSeries = {0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8};
  return kSeries;
}

cv::Mat MakeTissueImage(uint64_t seed, const TissueOptions& options) {
  LOOM_CHECK(options.size >= 16 && options.size <= 8192);
  LOOM_CHECK(options.blur_sigma >= 0 && options.blur_sigma <= 64);
  LOOM_CHECK(options.noise_sigma >= 0 && std::isfinite(options.noise_sigma));
  LOOM_CHECK(options.vesicles >= 0 && options.membranes >= 0 && options.granules >= 0);
  const int n = options.size;
  // Two streams from one seed: the tissue, and the noise added after the blur. Both are the same
  // for every blur_sigma. The constant only decorrelates the streams.
  cv::RNG rng(seed * 2 + 1);
  cv::RNG noise_rng((seed * 2 + 1) ^ 0x9e3779b97f4a7c15ULL);

  // Cytoplasm: a mid-grey base with uneven staining (slow variation) and fine grain (texture).
  cv::Mat image(n, n, CV_32F, cv::Scalar(0.62));
  image += SmoothNoise(rng, n, std::max(4.0, n / 24.0), 0.06);
  image += SmoothNoise(rng, n, 1.0, 0.03);

  const auto uniform = [&rng](double lo, double hi) { return rng.uniform(lo, hi); };
  cv::Mat mask(n, n, CV_8U);

  // Membranes: smooth random walks (slowly turning direction), drawn as dark anti-aliased curves.
  for (int i = 0, count = Scaled(options.membranes, n); i < count; ++i) {
    mask.setTo(0);
    double x = uniform(0, n), y = uniform(0, n);
    double angle = uniform(0, 2 * std::numbers::pi);
    double turn = uniform(-0.03, 0.03);
    const int steps = static_cast<int>(uniform(50, 200));  // 2 px a step: 100..400 px
    std::vector<cv::Point> path;
    path.push_back(Fixed(x, y));
    for (int s = 0; s < steps; ++s) {
      turn = std::clamp(turn + uniform(-0.01, 0.01), -0.05, 0.05);
      angle += turn;
      x += 2 * std::cos(angle);
      y += 2 * std::sin(angle);
      path.push_back(Fixed(x, y));
    }
    const int thickness = static_cast<int>(uniform(2, 4));  // 2 or 3 px
    cv::polylines(mask, path, false, cv::Scalar(255), thickness, cv::LINE_AA, kShift);
    Darken(image, mask, uniform(0.35, 0.55));
  }

  // Vesicles: dark discs with a darker rim (the vesicle membrane).
  mask.setTo(0);
  cv::Mat rim(n, n, CV_8U, cv::Scalar(0));
  for (int i = 0, count = Scaled(options.vesicles, n); i < count; ++i) {
    const double x = uniform(0, n), y = uniform(0, n), radius = uniform(3, 7);
    cv::circle(mask, Fixed(x, y), static_cast<int>(std::lround(radius * kOne)), cv::Scalar(255), cv::FILLED,
               cv::LINE_AA, kShift);
    cv::circle(rim, Fixed(x, y), static_cast<int>(std::lround(radius * kOne)), cv::Scalar(255), 1, cv::LINE_AA, kShift);
  }
  Darken(image, mask, 0.25);
  Darken(image, rim, 0.35);

  // Granules: many small dark dots of varying strength.
  for (int i = 0, count = Scaled(options.granules, n); i < count; ++i) {
    const double x = uniform(0, n), y = uniform(0, n), radius = uniform(0.8, 1.8);
    const int depth = static_cast<int>(uniform(60, 200));
    const int x0 = std::max(0, static_cast<int>(x - radius) - 2), x1 = std::min(n, static_cast<int>(x + radius) + 3);
    const int y0 = std::max(0, static_cast<int>(y - radius) - 2), y1 = std::min(n, static_cast<int>(y + radius) + 3);
    if (x1 <= x0 || y1 <= y0) continue;
    // Drawn into a small patch of its own so each dot has its own strength.
    cv::Mat dot(y1 - y0, x1 - x0, CV_8U, cv::Scalar(0));
    cv::circle(dot, Fixed(x - x0, y - y0), static_cast<int>(std::lround(radius * kOne)), cv::Scalar(depth), cv::FILLED,
               cv::LINE_AA, kShift);
    cv::Mat patch = image(cv::Range(y0, y1), cv::Range(x0, x1));
    Darken(patch, dot, 1.0);
  }

  // Defocus, then detector noise, then the [0, 1] range of a float image.
  if (options.blur_sigma > 0) {
    cv::GaussianBlur(image, image, cv::Size(0, 0), options.blur_sigma, options.blur_sigma, cv::BORDER_REFLECT);
  }
  if (options.noise_sigma > 0) {
    cv::Mat noise(n, n, CV_32F);
    noise_rng.fill(noise, cv::RNG::NORMAL, 0.0, options.noise_sigma);
    image += noise;
  }
  cv::min(image, 1.0, image);
  cv::max(image, 0.0, image);
  return image;
}

}  // namespace loom::vision
