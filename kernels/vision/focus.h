// Focus detection for serial-section electron microscopy (Levental et al., "Ultrafast Focus
// Detection for Automated Microscopy", 2021), and the two standard focus measures it is compared
// with. An in-focus section shows many small features; defocus removes them. DetectFocus counts
// fine-scale difference-of-Gaussian (DoG) blobs and compares the count with a threshold.
// docs/VISION-FOCUS.md describes the method as implemented, the options, how the default
// threshold was calibrated and how to calibrate one on your own images (`loom-focus-calibrate`).
//
// Everything here is a pure function of its arguments and thread-safe. DetectFocus itself runs
// its scales in parallel on OpenCV's thread pool (cv::setNumThreads bounds it).
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <vector>

#include "common/status.h"

namespace loom::vision {

struct FocusOptions {
  int resize = 1024;                // bilinear resize to resize x resize first; 0 keeps the size. 0 or 16..8192
  double saturated_percent = 0.35;  // contrast stretch, % of pixels clipped (see StretchSaturated). 0..50
  int num_scales = 30;              // DoG scales; sigmas linearly spaced from sigma_min to sigma_max,
                                    // num_scales + 1 Gaussian blurs. 1..100
  double sigma_min = 1.0;           // > 0
  double sigma_max = 30.0;          // sigma_min < sigma_max <= 256
  double truncate = 4.0;            // Gaussian kernels truncated at truncate * sigma. 1..10
  double min_response = 1e-4;       // per-pixel maxima over scale below this are dropped. >= 0
  double noise_floor = 3.0;         // DoG responses below noise_floor x the image noise's response at
                                    // their scale are dropped before the max; 0 turns this off (the
                                    // prototype). 0..100. Not in the paper: docs/VISION-FOCUS.md says why
  double fine_sigma_max = 3.0;      // blobs with sigma <= this are "fine-scale features". > 0
  double threshold = 0.0;           // in focus when score >= threshold (0: kDefaultFocusThreshold). >= 0
  bool return_blobs = false;        // fill FocusResult::blobs
};

// The in-focus threshold on the score with the default options (1024 x 1024 analysis size),
// calibrated on the synthetic tissue series; focus.cc says how (the command to rerun), and
// docs/VISION-FOCUS.md how to calibrate a threshold on your own images.
extern const double kDefaultFocusThreshold;

struct FocusBlob {
  int row = 0;  // in the analysed (resized) image
  int col = 0;
  double sigma = 0;     // the scale where the pixel's DoG response is largest
  double response = 0;  // that response, sigma_i * (L_i - L_(i+1))
};

struct FocusResult {
  std::vector<FocusBlob> blobs;           // only when FocusOptions::return_blobs; row-major order
  std::vector<int64_t> per_scale_counts;  // blobs per DoG scale, num_scales entries
  double score = 0;                       // the number of blobs with sigma <= fine_sigma_max
  double threshold = 0;                   // the threshold used
  bool in_focus = false;                  // score >= threshold
};

// Checks the options' ranges; an InvalidArgument naming the field and its allowed range otherwise.
Status ValidateFocusOptions(const FocusOptions& options);

// Runs focus detection on a single-channel float image (CV_32FC1 or CV_64FC1) in [0, 1]
// (ImageFromValue's output). Errors: invalid options; an empty, multi-channel or non-float image;
// an image smaller than 16 x 16 when resize is 0.
Result<FocusResult> DetectFocus(const cv::Mat& image, const FocusOptions& options);

// --- The stages of DetectFocus, exposed for tests and the benchmark's breakdown. ---
// REQUIRES for all three: ValidateFocusOptions(options).ok().

// The sigmas of the Gaussian blurs: num_scales + 1 values, linearly spaced from sigma_min to
// sigma_max. DoG scale i has sigma sigmas[i].
std::vector<double> FocusSigmas(const FocusOptions& options);

// Stage 1: float conversion, bilinear resize, contrast stretch. The CV_32FC1 image analysed.
Result<cv::Mat> PrepareFocusImage(const cv::Mat& image, const FocusOptions& options);

// Stage 2: the per-pixel maximum over scale of DoG_i = sigma_i * (L_i - L_(i+1)), where L_i is the
// image filtered with the truncated Gaussian of sigmas[i] (reflect borders, as scipy.ndimage),
// computed by FFT. `response` is CV_32FC1, `scale` CV_8UC1 holds the argmax (ties go to the
// smaller scale). With a noise floor, responses below it are left out of the max; a pixel where
// every scale is below its floor has response -inf. REQUIRES: `prepared` is CV_32FC1 and not empty.
struct ScaleSpaceMax {
  cv::Mat response;
  cv::Mat scale;
  std::vector<double> sigmas;
  double noise_sigma = 0;  // the noise estimate behind the noise floor (0 when noise_floor is 0)
};
ScaleSpaceMax DogMaxOverScale(const cv::Mat& prepared, const FocusOptions& options);

// Stage 3: blobs are the pixels whose response is >= min_response and >= each of its 3x3
// neighbours inside the image; counts, score, threshold and decision as in FocusResult.
FocusResult FindFocusBlobs(const ScaleSpaceMax& space, const FocusOptions& options);

// --- Standard focus measures, on the image as given (higher = sharper). ---
// Variance of the Laplacian (3x3 aperture [0 1 0; 1 -4 1; 0 1 0], reflect-101 borders).
double VarianceOfLaplacian(const cv::Mat& image);
// Tenengrad: the mean over pixels of Gx^2 + Gy^2, with 3x3 Sobel gradients.
double Tenengrad(const cv::Mat& image);

// --- Calibration helpers (loom-focus-calibrate, the tests and the benchmark). ---
struct ThresholdFit {
  double threshold = 0;          // classify in focus when score >= threshold
  double balanced_accuracy = 0;  // mean of the in-focus and the out-of-focus recall, on the fit data
  double accuracy = 0;           // fraction of all images classified right, on the fit data
};
// The threshold that maximises balanced accuracy on labelled scores: candidates are the midpoints
// between neighbouring distinct scores (and one below the lowest, one above the highest); ties go
// to the candidate with the widest gap to its neighbours. REQUIRES: both lists non-empty.
ThresholdFit FitFocusThreshold(const std::vector<double>& in_focus, const std::vector<double>& out_of_focus);

// Spearman's rank correlation (ties get their average rank). 0 when either side is constant.
// REQUIRES: x.size() == y.size() >= 2.
double SpearmanRho(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace loom::vision
