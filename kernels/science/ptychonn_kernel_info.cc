// The PtychoNN kernels' descriptions, apart from their code, so that a loom-worker can advertise
// them without loading oneDNN (see ptychonn_kernels.h).
#include "common/util.h"
#include "kernels/science/ptychonn_kernels.h"

namespace loom::kernels {

std::vector<v1::KernelInfo> PtychoKernelInfos() {
  const auto weights = Param("weights", v1::VALUE_TYPE_STRING,
                             "a .safetensors or .onnx weights file on the worker (default: the trained weights)", true);
  return {
      MakeKernelInfo(
          "ptychonn", "1",
          "PtychoNN (Cherukara et al. 2020): amplitude and phase of the object patch from one far-field "
          "diffraction pattern, by a convolutional encoder and two decoders (oneDNN, CPU).",
          {Param("frames", v1::VALUE_TYPE_ANY,
                 "float32 [N,64,64] or [64,64]: log1p photon counts (a tensor, or the bytes of a .npy file)"),
           weights},
          v1::VALUE_TYPE_MAP, "{amplitude: float32[N,64,64], phase: float32[N,64,64]} (radians)"),
      MakeKernelInfo("ptychonn-edge", "1",
                     "PtychoNN edge (Babu et al. 2023): phase of the object patch from one diffraction pattern. "
                     "Raw 516x516 detector frames are cropped to 512, 4x4 mean-binned and log1p'd first.",
                     {Param("frames", v1::VALUE_TYPE_TENSOR,
                            "float32 [N,128,128] or [128,128] (log1p counts), or raw frames [N,516,516] or [516,516]"),
                      weights},
                     v1::VALUE_TYPE_MAP, "{phase: float32[N,128,128]} (radians)"),
  };
}

std::string DefaultPtychoWeightsPath(bool edge) {
  return ExecutableDir() + "/../share/loom/models/" + (edge ? "ptychonn_edge" : "ptychonn") + ".safetensors";
}

}  // namespace loom::kernels
