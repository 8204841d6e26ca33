// Image input for the vision kernels: a loom Value (a 2-D grayscale tensor, or the bytes of a PNG
// or TIFF file) to a single-channel float image, and the contrast stretches both kernels use.
#pragma once

#include <opencv2/core.hpp>
#include <string_view>

#include "common/status.h"
#include "common/value.h"

namespace loom::vision {

// The largest image a kernel accepts, per side and in pixels: far above any detector frame, low
// enough that a hostile header cannot make the worker allocate gigabytes.
inline constexpr int kMaxImageSide = 16384;
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 26;  // 64 Mpixel

// A grayscale image as CV_32FC1 (or CV_64FC1 when `depth` is CV_64F). Accepted inputs:
//  - a tensor of shape [H, W] with dtype uint8, uint16, float32 or float64. Integers are scaled
//    to [0, 1] by their type's maximum (255, 65535), as scikit-image's img_as_float does; floats
//    are taken as they are (they must be finite).
//  - bytes holding a PNG or TIFF file, 8 or 16 bits, grayscale (colour files are converted to
//    gray with OpenCV's weights), scaled as above.
// Errors (InvalidArgument) name the kernel and parameter and say what was wrong: an empty image,
// a tensor that is not 2-D, an unsupported dtype, bytes that are not a readable PNG/TIFF, a
// non-finite float, an image over the size limits.
Result<cv::Mat> ImageFromValue(const Value& v, std::string_view who, int depth = CV_32F);

// Rescales `image` linearly so that its minimum maps to 0 and its maximum to 1 (scikit-image's
// rescale_intensity with out_range (0, 1)). A constant image becomes all zeros.
cv::Mat StretchMinMax(const cv::Mat& image);

// Percentile contrast stretch, as ImageJ's "Enhance Contrast" with `saturated_percent` (the focus
// prototype uses 0.35): the darkest and the brightest saturated_percent/2 % of the pixels are
// clipped, and the range between is mapped linearly to [0, 1]. The cut points come from the
// image's histogram CDF (`bins` equal bins between the image's min and max).
cv::Mat StretchSaturated(const cv::Mat& image, double saturated_percent, int bins = 65536);

}  // namespace loom::vision
