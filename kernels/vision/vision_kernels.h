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
#pragma once

#include "common/kernel_api.h"
#include "common/status.h"

namespace loom::kernels {

Status RegisterVisionKernels(KernelRegistry* registry);

}  // namespace loom::kernels
