// Difference-of-Gaussians blob characterisation (Levental et al., flame spray pyrolysis steering,
// 2020), with a scikit-image-compatible mode (skimage.feature.blob_dog, scikit-image 0.19.3).
// Method, options and measurements: docs/VISION-DOG.md.
//
// Thread-safety: DetectDogBlobs is pure and may be called concurrently; it parallelises its
// per-scale work with cv::parallel_for_.
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <vector>

#include "common/status.h"
#include "kernels/vision/gaussian.h"

namespace loom::vision {

enum class DogMode {
  // Gaussian smoothing (presmooth_sigma) and a min-max stretch to [0, 1]; n_bin + 1 sigmas spaced
  // arithmetically from min_sigma to max_sigma; DoG_i = sigma_i (L_i - L_i+1); float32.
  kPaper,
  // As skimage.feature.blob_dog: no pre-smoothing or stretch; geometric sigmas
  // min_sigma * sigma_ratio^i, i = 0..k, k = int(log(max/min) / log(sigma_ratio) + 1);
  // DoG_i = (L_i - L_i+1) / (sigma_ratio - 1); reflect borders; computed in the input's depth
  // (give CV_64F, as img_as_float gives, to agree with scikit-image).
  kSkimage,
};

// The most Gaussian scales one call may use (n_bin + 1 in kPaper, k + 1 in kSkimage).
inline constexpr int kMaxDogScales = 201;
// The most DoG cube elements (pixels times DoG scales) one call may hold: 1 GiB in float32.
inline constexpr int64_t kMaxDogCubeElements = int64_t{1} << 28;
// The most scale-space maxima above threshold one call may prune (a threshold near 0 on a noisy
// image finds a maximum every few pixels, and pruning compares every pair within 2 sqrt(2) sigma).
inline constexpr int64_t kMaxDogPeaks = 50000;
// The largest sigma accepted: its kernel is 2 * int(truncate * sigma + 0.5) + 1 taps.
inline constexpr double kMaxDogSigma = 1000.0;

struct DogOptions {
  DogMode mode = DogMode::kPaper;
  double min_sigma = 1.0;    // > 0
  double max_sigma = 30.0;   // > min_sigma, <= kMaxDogSigma
  int n_bin = 10;            // kPaper: n_bin + 1 sigmas between min_sigma and max_sigma; 1..200
  double sigma_ratio = 1.6;  // kSkimage: ratio of successive sigmas; > 1
  double threshold = 0.1;    // a blob's DoG response must exceed this (skimage threshold_abs); >= 0
  double overlap = 0.5;      // prune the smaller of two blobs overlapping more than this; [0, 1]
  double truncate = 4.0;     // kernel radius in sigmas (4 or 5 in the paper; skimage uses 4); (0, 10]
  ConvPath path = ConvPath::kAuto;
  int histogram_bins = 20;           // radius histogram bins between 0 and sqrt(2) * the largest sigma; 1..1000
  double presmooth_sigma = 1.0;      // kPaper only: the Gaussian smoothing before the stretch; > 0
  Border border = Border::kReflect;  // kPaper only (kSkimage always reflects, as blob_dog does)
};

struct DogBlob {
  double x = 0;  // column
  double y = 0;  // row
  double sigma = 0;
  double radius = 0;    // sqrt(2) * sigma
  double response = 0;  // the DoG value at the blob's scale-space maximum
};

struct DogResult {
  // Strongest response first (the order peak_local_max gives), after pruning.
  std::vector<DogBlob> blobs;
  std::vector<double> sigmas;             // the Gaussian scales used, ascending
  std::vector<double> histogram_edges;    // histogram_bins + 1 radius edges, 0 .. sqrt(2) * sigmas.back()
  std::vector<int64_t> histogram_counts;  // histogram_bins counts; the last bin includes its right edge
};

// InvalidArgument naming the field and its allowed range for any option out of range.
Status ValidateDogOptions(const DogOptions& options);

// The Gaussian scales DetectDogBlobs uses for `options`, or InvalidArgument (as
// ValidateDogOptions, plus more than kMaxDogScales scales in kSkimage mode).
Result<std::vector<double>> DogSigmas(const DogOptions& options);

// Buffers DetectDogBlobs reuses from call to call when the caller passes one (a stream of frames
// of one size): the scale-space cube is (scales x pixels) and page-faulting it in afresh for
// every frame can cost more than the filtering (docs/VISION-DOG.md). Not thread-safe: one per
// concurrent caller.
struct DogWorkspace {
  GaussianWorkspace gaussian;
  cv::Mat converted;              // kPaper: the input as float32, when it is not already
  std::vector<cv::Mat> smoothed;  // kPaper: the pre-smoothed, stretched image
  std::vector<cv::Mat> cube;      // the Gaussian images L_i, then DoG_i in place
};

// Finds blobs in a single-channel CV_32F or CV_64F image (ImageFromValue's output). kPaper works
// in float32 whatever the input; kSkimage in the input's depth. InvalidArgument for bad options,
// an empty or multi-channel image, a DoG cube over kMaxDogCubeElements, or more than
// kMaxDogPeaks maxima above the threshold.
// `workspace` may be null (buffers are then allocated for this call only).
Result<DogResult> DetectDogBlobs(const cv::Mat& image, const DogOptions& options, DogWorkspace* workspace = nullptr);

}  // namespace loom::vision
