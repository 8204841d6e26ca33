// Gaussian filtering for the vision kernels, with two interchangeable paths: direct separable
// convolution (fast for small sigma) and FFT convolution (fast for large sigma), which agree to
// float rounding. Both use the same truncated, normalised kernel, as scipy.ndimage does.
//
// Thread-safety: all functions are pure (no shared state) and may be called concurrently.
#pragma once

#include <opencv2/core.hpp>
#include <vector>

namespace loom::vision {

// How the image is extended past its edges.
enum class Border {
  kReflect,   // d c b a | a b c d | d c b a  (scipy "reflect", OpenCV BORDER_REFLECT)
  kMirror,    // d c b | a b c d | c b a      (scipy "mirror", OpenCV BORDER_REFLECT_101)
  kNearest,   // a a a | a b c d | d d d      (scipy "nearest", OpenCV BORDER_REPLICATE)
  kConstant,  // 0 0 0 | a b c d | 0 0 0      (scipy "constant", cval 0)
};

enum class ConvPath {
  kAuto,  // direct below kFftSigmaThreshold, FFT at or above it
  kDirect,
  kFft,
};

// The sigma at which the FFT path starts to win for one filter on a 1000x1000 float32 image
// (measured with `loom-bench-dog --sweep`, docs/VISION-DOG.md). GaussianFilter's kAuto uses it.
inline constexpr double kFftSigmaThreshold = 12.0;

// The same crossover for GaussianFilterBank, where the image's forward transform is shared by
// every FFT-path sigma, so each FFT scale costs only a spectrum product and an inverse transform.
inline constexpr double kFftBankSigmaThreshold = 10.0;

// The 1-D kernel scipy.ndimage.gaussian_filter1d uses: radius = int(truncate * sigma + 0.5),
// weights exp(-x^2 / (2 sigma^2)) for x in [-radius, radius], normalised to sum 1.
// REQUIRES: sigma > 0, truncate > 0.
std::vector<double> GaussianKernel1D(double sigma, double truncate);

// cos(2 pi m / n) for m = 0..n-1: the table SymmetricKernelSpectrum reads.
std::vector<double> CosineTable(int n);

// The DFT of a symmetric 1-D kernel (odd length, centre tap in the middle) placed circularly
// around index 0 in a signal of length n = cosines.size(): real, K(u) = w0 + 2 sum_j w_j
// cos(2 pi u j / n), for u = 0..n-1. The 2-D spectrum of a separable kernel is the outer product
// of two of these. REQUIRES: taps.size() / 2 < n.
std::vector<double> SymmetricKernelSpectrum(const std::vector<double>& taps, const std::vector<double>& cosines);

// The OpenCV border type for `border` (BORDER_REFLECT, BORDER_REFLECT_101, BORDER_REPLICATE,
// BORDER_CONSTANT with value 0).
int OpenCvBorder(Border border);

// Filters a CV_32FC1 or CV_64FC1 image with the separable Gaussian of `sigma` (same in x and y),
// truncated at `truncate` sigmas, extending the borders as `border` says. The result has the
// input's size and type. REQUIRES: sigma > 0, truncate > 0, a non-empty CV_32FC1/CV_64FC1 image.
cv::Mat GaussianFilter(const cv::Mat& image, double sigma, double truncate, Border border,
                       ConvPath path = ConvPath::kAuto);

// Buffers GaussianFilterBank reuses from call to call (the frames of a stream share one size).
// Fresh multi-megabyte buffers page-fault on first touch, which on some virtual machines costs
// more than the filtering itself (docs/VISION-DOG.md). Not thread-safe: one per concurrent caller.
struct GaussianWorkspace {
  cv::Mat padded;                // the image with its border, at the DFT size
  cv::Mat ccs;                   // its forward transform (CCS packed)
  std::vector<cv::Mat> product;  // per worker: spectrum times kernel spectrum
  std::vector<cv::Mat> spatial;  // per worker: inverse transform
};

// GaussianFilter for several sigmas of one image, the sigmas filtered in parallel
// (cv::parallel_for_). The FFT-path sigmas share one forward transform of the image, padded by
// the largest of their kernel radii; kAuto picks FFT at or above kFftBankSigmaThreshold.
// Result i is GaussianFilter(image, sigmas[i], ...) up to float rounding.
// REQUIRES: as GaussianFilter, every sigma > 0.
std::vector<cv::Mat> GaussianFilterBank(const cv::Mat& image, const std::vector<double>& sigmas, double truncate,
                                        Border border, ConvPath path = ConvPath::kAuto);

// As above, writing into `out` (resized to sigmas.size(); Mats of the right size and type are
// reused, not reallocated) with buffers from `workspace`. REQUIRES: `out` does not share data
// with `image`.
void GaussianFilterBank(const cv::Mat& image, const std::vector<double>& sigmas, double truncate, Border border,
                        ConvPath path, std::vector<cv::Mat>& out, GaussianWorkspace& workspace);

}  // namespace loom::vision
