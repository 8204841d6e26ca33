// The vision science kernels as Loom kernels, registered into every loom-worker:
//
//   focus@1(image, ...options)     -> {score, in_focus, threshold, per_scale_counts, sigmas,
//                                      laplacian_variance, tenengrad, blobs?}
//   dog_blobs@1(image, ...options) -> {blobs: [n x 3] (x, y, radius), count, sigmas,
//                                      histogram: {edges, counts}}
//
// `image` is a 2-D tensor [height, width] (uint8, uint16, float32, float64) or the bytes of a
// PNG or TIFF file. Every option is an optional keyword argument; an option left out is taken from
// the function's configuration (`loom function register --config key=value`), then from the
// default. docs/VISION.md lists them. The kernel functions are stateless and thread-safe.
//
// OpenCV (and what its image codecs bring: GDAL and some hundred shared libraries) costs a
// process about 40 MiB and 0.2 s to load. So loom-worker does not link this code: it registers
// the descriptions (VisionKernelInfos, library loom_vision_info, no OpenCV) and loads the code
// from the plugin libloom_vision.so (library loom_vision_plugin) when a vision kernel is first
// called (worker/lazy_plugin.h). Tests and benchmarks link loom_kernels and register directly.
#pragma once

#include <vector>

#include "common/kernel_api.h"
#include "common/status.h"

namespace loom::kernels {

Status RegisterVisionKernels(KernelRegistry* registry);

// What RegisterVisionKernels registers, without the code: focus@1, dog_blobs@1.
v1::KernelInfo FocusKernelInfo();
v1::KernelInfo DogBlobsKernelInfo();
std::vector<v1::KernelInfo> VisionKernelInfos();

}  // namespace loom::kernels
