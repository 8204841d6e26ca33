// The BraggNN kernels' descriptions apart from their code, so a loom-worker advertises them
// without loading the plugin (see braggnn_kernels.h).
#include "kernels/science/braggnn_kernels.h"

namespace loom::kernels {

std::vector<v1::KernelInfo> BraggKernelInfos() {
  using v1::VALUE_TYPE_STRING;
  const char* patches =
      "float32 tensor [N, 11, 11] or [11, 11] of detector counts, or nested lists of numbers of that shape (each "
      "patch is min-max normalised)";
  const char* units = "'fraction' (default: (column, row) / 11) or 'pixels'";
  return {
      MakeKernelInfo("braggnn", "1",
                     "BraggNN (Liu et al., IUCrJ 2022): Bragg peak centres in 11x11 patches, the trained 33,172-"
                     "parameter network in float32 on the CPU, batched.",
                     {Param("patches", v1::VALUE_TYPE_ANY, patches), Param("units", VALUE_TYPE_STRING, units, true)},
                     v1::VALUE_TYPE_TENSOR, "float32 [N, 2]: (column, row) per patch"),
      MakeKernelInfo(
          "braggnn-fpga", "1",
          "FPGA-class BraggNN (OpenHLS, Levental et al. 2023; 3,016 parameters) on an fpga device. The device is "
          "EMULATED: the bitstream's network computed exactly in its low-precision float format (e5m4 or e5m3) in "
          "software; no FPGA hardware is used.",
          {Param("patches", v1::VALUE_TYPE_ANY, patches),
           Param("number_format", VALUE_TYPE_STRING, "'e5m4' (default) or 'e5m3': which bitstream", true),
           Param("precision", VALUE_TYPE_STRING, "'device' (default) or 'float32' (the same network on the CPU)", true),
           Param("units", VALUE_TYPE_STRING, units, true)},
          v1::VALUE_TYPE_MAP,
          "{centres: float32 [N, 2] (column, row), device: {class: 'fpga', name, emulated: true, network, "
          "number_format, checksum, precision}}"),
  };
}

}  // namespace loom::kernels
