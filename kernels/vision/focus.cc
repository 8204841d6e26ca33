#include "kernels/vision/focus.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <numeric>
#include <opencv2/imgproc.hpp>
#include <string>

#include "kernels/vision/gaussian.h"
#include "kernels/vision/image.h"

namespace loom::vision {

// Calibrated on the synthetic tissue series (MakeTissueImage, TissueBlurSeries; in focus: blur
// sigma <= 1 px, out of focus: >= 2 px) with the default options, on seeds 1..16, which the tests'
// held-out seeds (1001 and up) do not overlap:
//   loom-focus-calibrate --synthetic --seeds 16
// In-focus scores ranged 8924..16305, out-of-focus 802..4179 (the 1.5 px transition level
// 5695..6489); the threshold is the midpoint of the gap, (4179 + 8924) / 2, with 100% balanced
// accuracy on those 176 images. Recalibrate for other options or other images (docs/VISION-FOCUS.md).
const double kDefaultFocusThreshold = 6551.5;

namespace {

constexpr int kMaxScales = 100;  // the scale index is stored in 8 bits
constexpr double kMaxSigma = 256;
constexpr int kMinSide = 16;
constexpr int kMaxResize = 8192;
constexpr double kFlatRange = 1e-6;

std::string Num(double x) {
  std::string s = std::to_string(x);
  // Trim std::to_string's fixed six decimals: 0.350000 -> 0.35.
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

Status Bad(const std::string& field, const std::string& allowed, double got) {
  return InvalidArgument("focus: option " + field + " must be " + allowed + "; got " + Num(got));
}

// The smallest even size >= n that OpenCV's DFT handles fast (2^a 3^b 5^c). Even sizes keep the
// CCS spectrum layout uniform (see ApplyDogSpectrum).
int EvenDftSize(int n) {
  int m = cv::getOptimalDFTSize(n);
  while (m % 2 != 0) m = cv::getOptimalDFTSize(m + 1);
  return m;
}

struct Spectra {
  std::vector<std::vector<double>> x;  // per sigma, the kernel spectrum along columns (0..N/2 used)
  std::vector<std::vector<double>> y;  // per sigma, frequencies 0..M/2 along rows
};

// dst = src * sigma * (H_a - H_b), elementwise in OpenCV's CCS layout for even M x N, where
// H(v, u) = hy(v) hx(u) are real and even. In the CCS layout, columns 1..N-2 hold (Re, Im) pairs of
// column frequency (c + 1) / 2 for every row frequency r (= -(M - r)); columns 0 and N - 1 hold the
// column frequencies 0 and N/2, packed down the rows: row 0 is row frequency 0, rows 2k - 1 and 2k
// are Re and Im of row frequency k, and row M - 1 is row frequency M/2. A real factor scales Re and
// Im alike, so every float in the layout is multiplied by the factor of its frequency.
void ApplyDogSpectrum(const cv::Mat& src, cv::Mat& dst, const std::vector<double>& hxa, const std::vector<double>& hxb,
                      const std::vector<double>& hya, const std::vector<double>& hyb, double sigma,
                      std::vector<float>& gxa, std::vector<float>& gxb) {
  const int rows = src.rows, cols = src.cols;
  // Factors below kNegligible are set to 0: they change the output by less than 1e-12, and it keeps
  // the Gaussian tails from putting subnormal floats (slow on x86) into the spectrum.
  constexpr double kNegligible = 1e-12;
  const auto flush = [](double x) { return std::abs(x) < kNegligible ? 0.0 : x; };
  for (int c = 1; c < cols - 1; ++c) {
    gxa[c] = static_cast<float>(flush(hxa[(c + 1) / 2]));
    gxb[c] = static_cast<float>(flush(hxb[(c + 1) / 2]));
  }
  for (int r = 0; r < rows; ++r) {
    const float* s = src.ptr<float>(r);
    float* d = dst.ptr<float>(r);
    const int v = std::min(r, rows - r);
    const auto ya = static_cast<float>(flush(sigma * hya[v])), yb = static_cast<float>(flush(sigma * hyb[v]));
    for (int c = 1; c < cols - 1; ++c) {
      const float f = ya * gxa[c] - yb * gxb[c];
      d[c] = std::abs(f) < static_cast<float>(kNegligible) ? 0.0f : s[c] * f;
    }
    const int v0 = (r + 1) / 2;
    d[0] = static_cast<float>(s[0] * flush(sigma * (hya[v0] * hxa[0] - hyb[v0] * hxb[0])));
    d[cols - 1] = static_cast<float>(s[cols - 1] * flush(sigma * (hya[v0] * hxa[cols / 2] - hyb[v0] * hxb[cols / 2])));
  }
}

// The standard deviation of the image's white noise, by Immerkaer's estimator ("Fast noise variance
// estimation", 1996): the mean absolute response to a 3x3 mask that cancels smooth structure.
double EstimateNoiseSigma(const cv::Mat& image) {
  if (image.rows < 3 || image.cols < 3) return 0;
  const cv::Mat mask = (cv::Mat_<float>(3, 3) << 1, -2, 1, -2, 4, -2, 1, -2, 1);
  cv::Mat response;
  cv::filter2D(image(cv::Rect(0, 0, image.cols, image.rows)), response, CV_32F, mask, cv::Point(-1, -1), 0,
               cv::BORDER_REFLECT);
  const cv::Mat inner = response(cv::Rect(1, 1, image.cols - 2, image.rows - 2));
  return std::sqrt(std::numbers::pi / 2) / 6 * cv::mean(cv::abs(inner))[0];
}

// The L2 norm of the 2-D kernel sigma * (g_a(x) g_a(y) - g_b(x) g_b(y)): white noise of unit
// variance filtered with it has this standard deviation. `a` is the narrower kernel.
double DogKernelNorm(const std::vector<double>& a, const std::vector<double>& b, double sigma) {
  const size_t offset = (b.size() - a.size()) / 2;
  double aa = 0, ab = 0, bb = 0;
  for (double x : b) bb += x * x;
  for (size_t i = 0; i < a.size(); ++i) {
    aa += a[i] * a[i];
    ab += a[i] * b[i + offset];
  }
  return sigma * std::sqrt(std::max(0.0, aa * aa - 2 * ab * ab + bb * bb));
}

}  // namespace

Status ValidateFocusOptions(const FocusOptions& o) {
  if (o.resize != 0 && (o.resize < kMinSide || o.resize > kMaxResize)) {
    return Bad("resize", "0 (keep the image's size) or 16..8192", o.resize);
  }
  if (!(o.saturated_percent >= 0 && o.saturated_percent <= 50)) {
    return Bad("saturated_percent", "in 0..50 (percent of pixels clipped by the contrast stretch)",
               o.saturated_percent);
  }
  if (o.num_scales < 1 || o.num_scales > kMaxScales) return Bad("num_scales", "in 1..100", o.num_scales);
  if (!(o.sigma_min > 0 && std::isfinite(o.sigma_min))) return Bad("sigma_min", "> 0", o.sigma_min);
  if (!(o.sigma_max > o.sigma_min && o.sigma_max <= kMaxSigma)) {
    return Bad("sigma_max", "greater than sigma_min (" + Num(o.sigma_min) + ") and at most 256", o.sigma_max);
  }
  if (!(o.truncate >= 1 && o.truncate <= 10)) return Bad("truncate", "in 1..10 (sigmas)", o.truncate);
  if (!(o.min_response >= 0 && std::isfinite(o.min_response))) {
    return Bad("min_response", ">= 0 and finite", o.min_response);
  }
  if (!(o.noise_floor >= 0 && o.noise_floor <= 100)) {
    return Bad("noise_floor", "in 0..100 (0 turns the noise floor off)", o.noise_floor);
  }
  if (!(o.fine_sigma_max > 0 && std::isfinite(o.fine_sigma_max))) {
    return Bad("fine_sigma_max", "> 0 and finite", o.fine_sigma_max);
  }
  if (!(o.threshold >= 0 && std::isfinite(o.threshold))) {
    return Bad("threshold", ">= 0 and finite (0 uses the calibrated default)", o.threshold);
  }
  return Status::Ok();
}

std::vector<double> FocusSigmas(const FocusOptions& o) {
  std::vector<double> s(static_cast<size_t>(o.num_scales + 1));
  for (int i = 0; i <= o.num_scales; ++i) s[i] = o.sigma_min + (o.sigma_max - o.sigma_min) * i / o.num_scales;
  return s;
}

Result<cv::Mat> PrepareFocusImage(const cv::Mat& image, const FocusOptions& options) {
  if (image.empty()) return InvalidArgument("focus: the image is empty; give a 2-D grayscale image");
  if (image.channels() != 1 || (image.depth() != CV_32F && image.depth() != CV_64F)) {
    return InvalidArgument("focus: the image must be single-channel float (CV_32FC1 or CV_64FC1) in [0, 1]; got " +
                           std::to_string(image.channels()) + " channel(s) of OpenCV depth " +
                           std::to_string(image.depth()) + " (ImageFromValue converts tensors and PNG/TIFF)");
  }
  if (options.resize == 0 && (image.rows < kMinSide || image.cols < kMinSide)) {
    return InvalidArgument("focus: the image is " + std::to_string(image.rows) + "x" + std::to_string(image.cols) +
                           "; with resize 0 it must be at least 16x16 (or set resize to 16..8192)");
  }
  cv::Mat f;
  image.convertTo(f, CV_32F);
  if (!cv::checkRange(f)) return InvalidArgument("focus: the image holds NaN or infinite values");
  if (options.resize > 0 && (f.rows != options.resize || f.cols != options.resize)) {
    cv::Mat r;
    cv::resize(f, r, cv::Size(options.resize, options.resize), 0, 0, cv::INTER_LINEAR);
    f = r;
  }
  // A flat image (range below a millionth, far below one 16-bit grey level) holds no features, only
  // interpolation rounding that the stretch would blow up to the full range.
  double lo = 0, hi = 0;
  cv::minMaxLoc(f, &lo, &hi);
  if (hi - lo < kFlatRange) return cv::Mat(cv::Mat::zeros(f.size(), CV_32F));
  return StretchSaturated(f, options.saturated_percent);
}

ScaleSpaceMax DogMaxOverScale(const cv::Mat& prepared, const FocusOptions& options) {
  LOOM_CHECK(prepared.type() == CV_32FC1 && !prepared.empty());
  ScaleSpaceMax out;
  out.sigmas = FocusSigmas(options);
  const int num_sigmas = static_cast<int>(out.sigmas.size());
  const int h = prepared.rows, w = prepared.cols;

  std::vector<std::vector<double>> kernels;
  int pad = 0;
  for (double s : out.sigmas) {
    kernels.push_back(GaussianKernel1D(s, options.truncate));
    pad = std::max(pad, static_cast<int>(kernels.back().size() - 1) / 2);
  }
  // Reflect-pad by the largest kernel radius, so that no kernel reaches across the circular wrap
  // of the DFT, then up to a fast DFT size.
  const int rows = EvenDftSize(h + 2 * pad), cols = EvenDftSize(w + 2 * pad);
  cv::Mat padded;
  cv::copyMakeBorder(prepared, padded, pad, rows - h - pad, pad, cols - w - pad, cv::BORDER_REFLECT);
  // Roll by (-pad, -pad) so the image sits at the origin: the circular convolution's output is
  // rolled alike, and the inverse DFTs then only compute the first h rows (nonzeroRows).
  cv::Mat rolled(rows, cols, CV_32F);
  {
    const cv::Range r0(0, pad), r1(pad, rows), c0(0, pad), c1(pad, cols);
    padded(r1, c1).copyTo(rolled(cv::Range(0, rows - pad), cv::Range(0, cols - pad)));
    if (pad > 0) {
      padded(r1, c0).copyTo(rolled(cv::Range(0, rows - pad), cv::Range(cols - pad, cols)));
      padded(r0, c1).copyTo(rolled(cv::Range(rows - pad, rows), cv::Range(0, cols - pad)));
      padded(r0, c0).copyTo(rolled(cv::Range(rows - pad, rows), cv::Range(cols - pad, cols)));
    }
  }
  cv::Mat spectrum;
  cv::dft(rolled, spectrum);  // real input: CCS-packed output, same size

  // 1-D kernel spectra along x and y (the 2-D spectrum is their outer product).
  Spectra sp;
  {
    const std::vector<double> cos_x = CosineTable(cols), cos_y = CosineTable(rows);
    sp.x.resize(static_cast<size_t>(num_sigmas));
    sp.y.resize(static_cast<size_t>(num_sigmas));
    cv::parallel_for_(cv::Range(0, num_sigmas), [&](const cv::Range& range) {
      for (int j = range.start; j < range.end; ++j) {
        sp.x[j] = SymmetricKernelSpectrum(kernels[j], cos_x);
        sp.y[j] = rows == cols ? sp.x[j] : SymmetricKernelSpectrum(kernels[j], cos_y);
      }
    });
  }

  // Per-scale noise floors: the white noise's standard deviation after each DoG, times noise_floor.
  std::vector<float> floors(static_cast<size_t>(options.num_scales), -std::numeric_limits<float>::infinity());
  if (options.noise_floor > 0) {
    out.noise_sigma = EstimateNoiseSigma(prepared);
    for (int i = 0; i < options.num_scales; ++i) {
      floors[i] = static_cast<float>(options.noise_floor * out.noise_sigma *
                                     DogKernelNorm(kernels[i], kernels[i + 1], out.sigmas[i]));
    }
  }

  // Scales are split into contiguous chunks, one per thread; each chunk keeps its own running
  // max and argmax (two h x w images, never the whole stack), merged in scale order below.
  const int num_scales = options.num_scales;
  const int chunks = std::clamp(cv::getNumThreads(), 1, num_scales);
  std::vector<cv::Mat> best(static_cast<size_t>(chunks)), arg(static_cast<size_t>(chunks));
  cv::parallel_for_(cv::Range(0, chunks), [&](const cv::Range& range) {
    cv::Mat product(rows, cols, CV_32F), dog;
    std::vector<float> gxa(static_cast<size_t>(cols)), gxb(static_cast<size_t>(cols));
    for (int k = range.start; k < range.end; ++k) {
      cv::Mat m(h, w, CV_32F, cv::Scalar(-std::numeric_limits<float>::infinity()));
      cv::Mat a(h, w, CV_8U, cv::Scalar(0));
      for (int i = k * num_scales / chunks; i < (k + 1) * num_scales / chunks; ++i) {
        ApplyDogSpectrum(spectrum, product, sp.x[i], sp.x[i + 1], sp.y[i], sp.y[i + 1], out.sigmas[i], gxa, gxb);
        cv::dft(product, dog, cv::DFT_INVERSE | cv::DFT_REAL_OUTPUT | cv::DFT_SCALE, h);
        const float floor = floors[i];
        for (int r = 0; r < h; ++r) {
          const float* d = dog.ptr<float>(r);
          float* mr = m.ptr<float>(r);
          uint8_t* ar = a.ptr<uint8_t>(r);
          // Branch-free: on noisy images the comparison is a coin toss, and mispredicted branches
          // cost more than the selects.
          const auto scale = static_cast<uint8_t>(i);
          for (int c = 0; c < w; ++c) {
            const bool take = (d[c] > mr[c]) & (d[c] >= floor);
            mr[c] = take ? d[c] : mr[c];
            ar[c] = take ? scale : ar[c];
          }
        }
      }
      best[k] = m;
      arg[k] = a;
    }
  });
  out.response = best[0];
  out.scale = arg[0];
  for (int k = 1; k < chunks; ++k) {
    for (int r = 0; r < h; ++r) {
      const float* d = best[k].ptr<float>(r);
      const uint8_t* s = arg[k].ptr<uint8_t>(r);
      float* mr = out.response.ptr<float>(r);
      uint8_t* ar = out.scale.ptr<uint8_t>(r);
      for (int c = 0; c < w; ++c) {
        if (d[c] > mr[c]) {  // strict: ties keep the smaller scale
          mr[c] = d[c];
          ar[c] = s[c];
        }
      }
    }
  }
  return out;
}

FocusResult FindFocusBlobs(const ScaleSpaceMax& space, const FocusOptions& options) {
  FocusResult result;
  result.per_scale_counts.assign(static_cast<size_t>(options.num_scales), 0);
  // 3x3 maximum; dilate's default border ignores pixels outside the image.
  cv::Mat neighbourhood_max;
  cv::dilate(space.response, neighbourhood_max, cv::Mat());
  const auto min_response = static_cast<float>(options.min_response);
  int64_t fine = 0;
  for (int r = 0; r < space.response.rows; ++r) {
    const float* v = space.response.ptr<float>(r);
    const float* n = neighbourhood_max.ptr<float>(r);
    const uint8_t* s = space.scale.ptr<uint8_t>(r);
    for (int c = 0; c < space.response.cols; ++c) {
      if (v[c] < min_response || v[c] < n[c]) continue;
      ++result.per_scale_counts[s[c]];
      const double sigma = space.sigmas[s[c]];
      if (sigma <= options.fine_sigma_max + 1e-9) ++fine;
      if (options.return_blobs) result.blobs.push_back({r, c, sigma, v[c]});
    }
  }
  result.score = static_cast<double>(fine);
  result.threshold = options.threshold > 0 ? options.threshold : kDefaultFocusThreshold;
  result.in_focus = result.score >= result.threshold;
  return result;
}

Result<FocusResult> DetectFocus(const cv::Mat& image, const FocusOptions& options) {
  LOOM_RETURN_IF_ERROR(ValidateFocusOptions(options));
  LOOM_ASSIGN_OR_RETURN(cv::Mat prepared, PrepareFocusImage(image, options));
  return FindFocusBlobs(DogMaxOverScale(prepared, options), options);
}

double VarianceOfLaplacian(const cv::Mat& image) {
  // Float output (OpenCV has no float -> double Laplacian); the statistics accumulate in double.
  cv::Mat f, lap;
  image.convertTo(f, CV_32F);
  cv::Laplacian(f, lap, CV_32F, 1, 1.0, 0.0, cv::BORDER_REFLECT_101);
  cv::Scalar mean, stddev;
  cv::meanStdDev(lap, mean, stddev);
  return stddev[0] * stddev[0];
}

double Tenengrad(const cv::Mat& image) {
  cv::Mat f, gx, gy;
  image.convertTo(f, CV_32F);
  cv::Sobel(f, gx, CV_32F, 1, 0, 3, 1.0, 0.0, cv::BORDER_REFLECT_101);
  cv::Sobel(f, gy, CV_32F, 0, 1, 3, 1.0, 0.0, cv::BORDER_REFLECT_101);
  double sum = 0;
  for (int r = 0; r < f.rows; ++r) {
    const float* x = gx.ptr<float>(r);
    const float* y = gy.ptr<float>(r);
    for (int c = 0; c < f.cols; ++c) sum += static_cast<double>(x[c]) * x[c] + static_cast<double>(y[c]) * y[c];
  }
  return sum / static_cast<double>(f.total());
}

ThresholdFit FitFocusThreshold(const std::vector<double>& in_focus, const std::vector<double>& out_of_focus) {
  LOOM_CHECK(!in_focus.empty() && !out_of_focus.empty());
  std::vector<double> all(in_focus);
  all.insert(all.end(), out_of_focus.begin(), out_of_focus.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  // Candidates with the gap around them (ties in accuracy go to the widest gap).
  std::vector<std::pair<double, double>> candidates;
  candidates.emplace_back(all.front() - std::max(1.0, std::abs(all.front())), 0.0);
  for (size_t i = 0; i + 1 < all.size(); ++i) candidates.emplace_back((all[i] + all[i + 1]) / 2, all[i + 1] - all[i]);
  candidates.emplace_back(all.back() + std::max(1.0, std::abs(all.back())), 0.0);
  ThresholdFit best;
  double best_gap = -1;
  best.balanced_accuracy = -1;
  for (const auto& [t, gap] : candidates) {
    const auto in_right = std::count_if(in_focus.begin(), in_focus.end(), [t](double s) { return s >= t; });
    const auto out_right = std::count_if(out_of_focus.begin(), out_of_focus.end(), [t](double s) { return s < t; });
    const double balanced = 0.5 * (static_cast<double>(in_right) / static_cast<double>(in_focus.size()) +
                                   static_cast<double>(out_right) / static_cast<double>(out_of_focus.size()));
    if (balanced > best.balanced_accuracy + 1e-12 || (balanced > best.balanced_accuracy - 1e-12 && gap > best_gap)) {
      best.threshold = t;
      best.balanced_accuracy = balanced;
      best.accuracy =
          static_cast<double>(in_right + out_right) / static_cast<double>(in_focus.size() + out_of_focus.size());
      best_gap = gap;
    }
  }
  return best;
}

double SpearmanRho(const std::vector<double>& x, const std::vector<double>& y) {
  LOOM_CHECK(x.size() == y.size() && x.size() >= 2);
  const auto ranks = [](const std::vector<double>& v) {
    std::vector<size_t> order(v.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&v](size_t a, size_t b) { return v[a] < v[b]; });
    std::vector<double> rank(v.size());
    for (size_t i = 0; i < order.size();) {
      size_t j = i;
      while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
      const double average = 0.5 * static_cast<double>(i + j);
      for (size_t k = i; k <= j; ++k) rank[order[k]] = average;
      i = j + 1;
    }
    return rank;
  };
  const std::vector<double> rx = ranks(x), ry = ranks(y);
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / n, my = std::accumulate(ry.begin(), ry.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  if (sxx == 0 || syy == 0) return 0;
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace loom::vision
