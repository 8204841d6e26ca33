// The vision kernels' descriptions, apart from their code, so that a loom-worker can advertise
// them without loading OpenCV (see vision_kernels.h).
#include "kernels/vision/vision_kernels.h"

namespace loom::kernels {

v1::KernelInfo FocusKernelInfo() {
  using v1::VALUE_TYPE_BOOL;
  using v1::VALUE_TYPE_INT;
  using v1::VALUE_TYPE_NUMBER;
  return MakeKernelInfo(
      "focus", "1",
      "Ultrafast focus detection for serial-section electron microscopy (Levental et al. 2021): counts fine-scale "
      "difference-of-Gaussians blobs; many blobs mean the image is in focus. Also reports the variance of the "
      "Laplacian and Tenengrad.",
      {Param("image", v1::VALUE_TYPE_ANY, "2-D grayscale tensor (uint8, uint16, float32, float64) or PNG/TIFF bytes"),
       Param("threshold", VALUE_TYPE_NUMBER, "in focus when score >= threshold (default: the calibrated one)", true),
       Param("return_blobs", VALUE_TYPE_BOOL, "also return the blobs, [n x 3] (row, col, sigma)", true),
       Param("resize", VALUE_TYPE_INT, "resize to this square side first, 0 to keep the size (1024)", true),
       Param("saturated_percent", VALUE_TYPE_NUMBER, "contrast stretch saturation, percent (0.35)", true),
       Param("num_scales", VALUE_TYPE_INT, "number of DoG scales (30)", true),
       Param("sigma_min", VALUE_TYPE_NUMBER, "smallest Gaussian sigma (1)", true),
       Param("sigma_max", VALUE_TYPE_NUMBER, "largest Gaussian sigma (30)", true),
       Param("truncate", VALUE_TYPE_NUMBER, "Gaussian kernels truncated at this many sigmas (4)", true),
       Param("min_response", VALUE_TYPE_NUMBER, "DoG responses below this are dropped (1e-4)", true),
       Param("noise_floor", VALUE_TYPE_NUMBER,
             "drop DoG responses below this many times the image noise's response at their scale; 0: off (3)", true),
       Param("fine_sigma_max", VALUE_TYPE_NUMBER, "blobs up to this sigma count toward the score (3)", true)},
      v1::VALUE_TYPE_MAP,
      "{score, in_focus, threshold, per_scale_counts: int64[num_scales], sigmas: float64[num_scales], "
      "laplacian_variance, tenengrad, blobs?: float64[n x 3] (row, col, sigma)}");
}

v1::KernelInfo DogBlobsKernelInfo() {
  using v1::VALUE_TYPE_INT;
  using v1::VALUE_TYPE_NUMBER;
  using v1::VALUE_TYPE_STRING;
  return MakeKernelInfo(
      "dog_blobs", "1",
      "Difference-of-Gaussians blob characterisation (Levental et al. 2020, flame spray pyrolysis): blobs with their "
      "radii and the radius histogram (the droplet size distribution). mode 'skimage' matches "
      "skimage.feature.blob_dog.",
      {Param("image", v1::VALUE_TYPE_ANY, "2-D grayscale tensor (uint8, uint16, float32, float64) or PNG/TIFF bytes"),
       Param("mode", VALUE_TYPE_STRING, "'paper' (default) or 'skimage'", true),
       Param("min_sigma", VALUE_TYPE_NUMBER, "smallest sigma (1)", true),
       Param("max_sigma", VALUE_TYPE_NUMBER, "largest sigma (30)", true),
       Param("n_bin", VALUE_TYPE_INT, "paper mode: n_bin + 1 sigmas, spaced arithmetically (10)", true),
       Param("sigma_ratio", VALUE_TYPE_NUMBER, "skimage mode: ratio between successive sigmas (1.6)", true),
       Param("threshold", VALUE_TYPE_NUMBER, "minimum DoG response of a blob (0.1)", true),
       Param("overlap", VALUE_TYPE_NUMBER, "prune the smaller of two blobs overlapping more than this (0.5)", true),
       Param("truncate", VALUE_TYPE_NUMBER, "Gaussian kernels truncated at this many sigmas (4)", true),
       Param("conv", VALUE_TYPE_STRING, "convolution path: 'auto' (default), 'direct' or 'fft'", true),
       Param("histogram_bins", VALUE_TYPE_INT, "radius histogram bins (20)", true)},
      v1::VALUE_TYPE_MAP,
      "{blobs: float64[n x 3] (x, y, radius), count, sigmas: float64[n] (each blob's sigma), "
      "histogram: {edges: float64[bins + 1], counts: int64[bins]}}");
}

std::vector<v1::KernelInfo> VisionKernelInfos() { return {FocusKernelInfo(), DogBlobsKernelInfo()}; }

}  // namespace loom::kernels
