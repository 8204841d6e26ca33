#include "kernels/vision/gaussian.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numbers>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include "common/status.h"

namespace loom::vision {

std::vector<double> GaussianKernel1D(double sigma, double truncate) {
  const int radius = static_cast<int>(truncate * sigma + 0.5);
  std::vector<double> k(2 * radius + 1);
  double sum = 0;
  for (int x = -radius; x <= radius; ++x) {
    k[x + radius] = std::exp(-0.5 * (x * x) / (sigma * sigma));
    sum += k[x + radius];
  }
  for (double& w : k) w /= sum;
  return k;
}

int OpenCvBorder(Border border) {
  switch (border) {
    case Border::kReflect:
      return cv::BORDER_REFLECT;
    case Border::kMirror:
      return cv::BORDER_REFLECT_101;
    case Border::kNearest:
      return cv::BORDER_REPLICATE;
    case Border::kConstant:
      return cv::BORDER_CONSTANT;
  }
  return cv::BORDER_REFLECT;
}

namespace {

int KernelRadius(double sigma, double truncate) { return static_cast<int>(truncate * sigma + 0.5); }

void CheckImage(const cv::Mat& image) {
  LOOM_CHECK(!image.empty());
  LOOM_CHECK(image.type() == CV_32FC1 || image.type() == CV_64FC1);
}

void DirectFilter(const cv::Mat& image, double sigma, double truncate, Border border, cv::Mat& out) {
  const std::vector<double> taps = GaussianKernel1D(sigma, truncate);
  cv::Mat k(static_cast<int>(taps.size()), 1, CV_64F, const_cast<double*>(taps.data()));
  cv::Mat kernel;
  k.convertTo(kernel, image.depth());
  cv::sepFilter2D(image, out, -1, kernel, kernel, cv::Point(-1, -1), 0, OpenCvBorder(border));
}

}  // namespace

std::vector<double> CosineTable(int n) {
  std::vector<double> cosines(static_cast<size_t>(n));
  for (int m = 0; m < n; ++m) cosines[m] = std::cos(2.0 * std::numbers::pi * m / n);
  return cosines;
}

std::vector<double> SymmetricKernelSpectrum(const std::vector<double>& taps, const std::vector<double>& cosines) {
  const int n = static_cast<int>(cosines.size());
  const int radius = static_cast<int>(taps.size() / 2);
  std::vector<double> spectrum(static_cast<size_t>(n));
  for (int u = 0; u < n; ++u) {
    double s = taps[radius];
    int phase = 0;  // (u * j) mod n
    for (int j = 1; j <= radius; ++j) {
      phase += u;
      if (phase >= n) phase -= n;
      s += 2.0 * taps[radius + j] * cosines[phase];
    }
    spectrum[u] = s;
  }
  return spectrum;
}

namespace {

// getOptimalDFTSize, but a multiple of 8: OpenCV's transform of sizes such as 1125 or 1134 is
// ~1.5x slower than of a nearby 1152 (measured on 1000x1000 frames, docs/VISION-DOG.md).
int FastDftSize(int n) {
  int m = cv::getOptimalDFTSize(n);
  while (m % 8 != 0) m = cv::getOptimalDFTSize(m + 1);
  return m;
}

// The image's forward transform, padded by `pad` with the requested border (and on to a fast DFT
// size), shared by the FFT-path sigmas. The spectrum is in OpenCV's packed CCS layout.
struct PaddedSpectrum {
  int pad = 0;
  int rows = 0;  // image rows and cols
  int cols = 0;
  const cv::Mat* ccs = nullptr;  // dft_rows x dft_cols, the image's depth
};

PaddedSpectrum ForwardSpectrum(const cv::Mat& image, int pad, Border border, GaussianWorkspace& ws) {
  PaddedSpectrum s;
  s.pad = pad;
  s.rows = image.rows;
  s.cols = image.cols;
  const int dft_rows = FastDftSize(image.rows + 2 * pad);
  const int dft_cols = FastDftSize(image.cols + 2 * pad);
  // The extra rows and columns up to the DFT size continue the same border; the crop reads at
  // most `pad` pixels past the image, so nothing wraps around.
  cv::copyMakeBorder(image, ws.padded, pad, dft_rows - image.rows - pad, pad, dft_cols - image.cols - pad,
                     OpenCvBorder(border), cv::Scalar(0));
  cv::dft(ws.padded, ws.ccs, 0);
  s.ccs = &ws.ccs;
  return s;
}

template <typename T>
void MultiplyCcs(const cv::Mat& ccs, const std::vector<double>& ky, const std::vector<double>& kx, cv::Mat& out) {
  out.create(ccs.size(), ccs.type());
  const int rows = ccs.rows;
  const int cols = ccs.cols;
  const bool even_cols = cols % 2 == 0;
  for (int r = 0; r < rows; ++r) {
    const T* src = ccs.ptr<T>(r);
    T* dst = out.ptr<T>(r);
    // CCS: column 0 (and the last column when cols is even) holds the real transforms of
    // frequency u = 0 (u = cols / 2), packed down the rows (row r is frequency (r + 1) / 2);
    // elsewhere column c is frequency (c + 1) / 2 and row r is frequency r.
    const double ky_packed = ky[(r + 1) / 2];
    const double ky_row = ky[r];
    dst[0] = static_cast<T>(src[0] * kx[0] * ky_packed);
    const int last_full = even_cols ? cols - 1 : cols;
    for (int c = 1; c < last_full; ++c) dst[c] = static_cast<T>(src[c] * (kx[(c + 1) / 2] * ky_row));
    if (even_cols) dst[cols - 1] = static_cast<T>(src[cols - 1] * kx[cols / 2] * ky_packed);
  }
}

// Writes the filtered image into `out`, using `product` and `spatial` as scratch.
void FilterFromSpectrum(const PaddedSpectrum& s, double sigma, double truncate, cv::Mat& product, cv::Mat& spatial,
                        cv::Mat& out) {
  const std::vector<double> taps = GaussianKernel1D(sigma, truncate);
  LOOM_CHECK(static_cast<int>(taps.size() / 2) <= s.pad);
  const cv::Mat& ccs = *s.ccs;
  const std::vector<double> ky = SymmetricKernelSpectrum(taps, CosineTable(ccs.rows));
  const std::vector<double> kx = SymmetricKernelSpectrum(taps, CosineTable(ccs.cols));
  if (ccs.depth() == CV_32F) {
    MultiplyCcs<float>(ccs, ky, kx, product);
  } else {
    MultiplyCcs<double>(ccs, ky, kx, product);
  }
  // Only the first pad + rows output rows are read, so the transform may skip the others.
  cv::dft(product, spatial, cv::DFT_INVERSE | cv::DFT_REAL_OUTPUT | cv::DFT_SCALE, s.pad + s.rows);
  spatial(cv::Rect(s.pad, s.pad, s.cols, s.rows)).copyTo(out);
}

bool UseFft(ConvPath path, double sigma, double threshold) {
  switch (path) {
    case ConvPath::kDirect:
      return false;
    case ConvPath::kFft:
      return true;
    case ConvPath::kAuto:
      return sigma >= threshold;
  }
  return false;
}

}  // namespace

cv::Mat GaussianFilter(const cv::Mat& image, double sigma, double truncate, Border border, ConvPath path) {
  CheckImage(image);
  LOOM_CHECK(sigma > 0 && truncate > 0);
  cv::Mat out;
  if (!UseFft(path, sigma, kFftSigmaThreshold)) {
    DirectFilter(image, sigma, truncate, border, out);
    return out;
  }
  GaussianWorkspace ws;
  const PaddedSpectrum s = ForwardSpectrum(image, KernelRadius(sigma, truncate), border, ws);
  cv::Mat product, spatial;
  FilterFromSpectrum(s, sigma, truncate, product, spatial, out);
  return out;
}

std::vector<cv::Mat> GaussianFilterBank(const cv::Mat& image, const std::vector<double>& sigmas, double truncate,
                                        Border border, ConvPath path) {
  std::vector<cv::Mat> out;
  GaussianWorkspace ws;
  GaussianFilterBank(image, sigmas, truncate, border, path, out, ws);
  return out;
}

void GaussianFilterBank(const cv::Mat& image, const std::vector<double>& sigmas, double truncate, Border border,
                        ConvPath path, std::vector<cv::Mat>& out, GaussianWorkspace& ws) {
  CheckImage(image);
  LOOM_CHECK(truncate > 0);
  int pad = -1;
  for (double sigma : sigmas) {
    LOOM_CHECK(sigma > 0);
    if (UseFft(path, sigma, kFftBankSigmaThreshold)) pad = std::max(pad, KernelRadius(sigma, truncate));
  }
  PaddedSpectrum spectrum;
  if (pad >= 0) spectrum = ForwardSpectrum(image, pad, border, ws);
  out.resize(sigmas.size());
  // Each worker pulls the next scale from a shared counter (direct and FFT scales cost very
  // different amounts, so a static split would idle a core) and keeps its FFT buffers throughout.
  const int n = static_cast<int>(sigmas.size());
  const int workers = std::max(1, std::min(n, cv::getNumThreads()));
  if (static_cast<int>(ws.product.size()) < workers) {
    ws.product.resize(workers);
    ws.spatial.resize(workers);
  }
  std::atomic<int> next{0};
  cv::parallel_for_(
      cv::Range(0, workers),
      [&](const cv::Range& range) {
        for (int w = range.start; w < range.end; ++w) {
          for (int i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
            if (UseFft(path, sigmas[i], kFftBankSigmaThreshold)) {
              FilterFromSpectrum(spectrum, sigmas[i], truncate, ws.product[w], ws.spatial[w], out[i]);
            } else {
              DirectFilter(image, sigmas[i], truncate, border, out[i]);
            }
          }
        }
      },
      workers);
}

}  // namespace loom::vision
