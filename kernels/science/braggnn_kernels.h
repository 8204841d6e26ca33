// BraggNN as Loom kernels, registered into every loom-worker:
//
//   braggnn@1(patches, units?)                      -> float32 [N, 2] peak centres
//   braggnn-fpga@1(patches, number_format?, precision?, units?)
//                                                   -> {centres: float32 [N, 2], device: {...}}
//
// `patches` is a float32 tensor [N, 11, 11] (N >= 1) or [11, 11] (one patch, answered as
// [1, 2]) of detector counts, or nested lists of numbers of that shape (as the CLI sends JSON
// literals); each patch is min-max normalised by the kernel. Centres are
// (column, row), as a fraction of the patch side (units "fraction", the default: pixels / 11)
// or in pixels ("pixels"), pixel centres at 0..10.
//
// braggnn runs the trained network (kernels/science/data/braggnn_trained.safetensors, built into
// the library) in float32 on the CPU; the function's configuration `weights` names another
// safetensors file with the same tensor names (docs/KERNELS-BRAGGNN.md).
//
// braggnn-fpga runs the FPGA-class network on an `fpga` device (fpga_device.h). The device Loom
// ships is EmulatedFpgaDevice: the bitstream's network computed in the software model of its
// number format; the reply's device map says emulated: true. number_format picks the built-in
// bitstream ("e5m4", the default, or "e5m3"); the configuration `bitstream` names a bitstream
// file instead, refused if corrupt or if its format is not the number_format asked for.
// precision "float32" runs the same network in float32 on the CPU instead of the device.
//
// Weights and bitstreams are loaded on first use and kept (warm) for the process's lifetime.
// Thread-safe.
#pragma once

#include <vector>

#include "common/kernel_api.h"
#include "common/status.h"

namespace loom::kernels {

Status RegisterBraggKernels(KernelRegistry* registry);

// What RegisterBraggKernels registers, without the code: braggnn@1, braggnn-fpga@1.
std::vector<v1::KernelInfo> BraggKernelInfos();

// The most patches one call may carry (the configuration `max_patches` lowers or raises it).
inline constexpr int64_t kDefaultMaxPatches = int64_t{1} << 20;

}  // namespace loom::kernels
