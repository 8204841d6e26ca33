// The PtychoNN networks as Loom kernels:
//
//   ptychonn@1(frames, weights?)      -> {amplitude: float32[N,64,64], phase: float32[N,64,64]}
//   ptychonn-edge@1(frames, weights?) -> {phase: float32[N,128,128]}
//
// `frames` is a float32 tensor: [N,64,64] or [64,64] for ptychonn (log1p photon counts); for
// ptychonn-edge, network inputs [N,128,128] / [128,128], or raw detector frames [N,516,516] /
// [516,516] (any side >= 512), which are cropped to 512, 4x4 mean-binned and log1p'd
// (PreprocessEdgeFrame). A 2-D input gives 2-D outputs. `frames` may also be the bytes of a .npy
// file holding such an array (little-endian float32, C order), so `loom run --arg-file x.npy` works. `weights`
// (argument or function configuration) is a .safetensors or .onnx file on the worker; by default the trained weights
// installed beside the worker (<bin>/../share/loom/models/ptychonn{,_edge}.safetensors).
//
// Each weights file is loaded once per worker process and its network kept warm (oneDNN
// primitives built per batch size on first use); batches run in chunks of at most 16 frames so
// memory stays bounded whatever N is. Thread-safe.
//
// oneDNN costs a worker process tens of MiB, so loom-worker advertises these kernels from
// PtychoKernelInfos (library loom_ptychonn_info, no oneDNN) and loads libloom_ptychonn.so on the
// first call, as for the vision kernels.
#pragma once

#include <string>
#include <vector>

#include "common/kernel_api.h"
#include "common/status.h"

namespace loom::kernels {

Status RegisterPtychoKernels(KernelRegistry* registry);
std::vector<v1::KernelInfo> PtychoKernelInfos();

// Where the trained weights are looked for when no `weights` is given.
std::string DefaultPtychoWeightsPath(bool edge);

}  // namespace loom::kernels
