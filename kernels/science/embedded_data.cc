#include "kernels/science/embedded_data.h"

// LOOM_SCIENCE_DATA_DIR and LOOM_SCIENCE_DATA_HASH come from CMake; the hash of the data files
// is in the preprocessed source so that ccache rebuilds this file when they change.
#define LOOM_STR2(x) #x
#define LOOM_STR(x) LOOM_STR2(x)
#define LOOM_INCBIN(sym, file)                                                                                  \
  __asm__(".section .rodata\n.balign 16\n.globl " #sym "\n.hidden " #sym "\n" #sym                              \
          ":\n.incbin \"" LOOM_SCIENCE_DATA_DIR "/" file "\"\n.globl " #sym "_end\n.hidden " #sym "_end\n" #sym \
          "_end:\n.byte 0\n.previous\n");                                                                       \
  extern "C" __attribute__((visibility("hidden"))) const char sym[];                                            \
  extern "C" __attribute__((visibility("hidden"))) const char sym##_end[];

static_assert(sizeof(LOOM_STR(LOOM_SCIENCE_DATA_HASH)) > 1);

LOOM_INCBIN(loom_braggnn_weights, "braggnn_trained.safetensors")
LOOM_INCBIN(loom_braggnn_fpga_e5m4, "braggnn_fpga_e5m4.bitstream")
LOOM_INCBIN(loom_braggnn_fpga_e5m3, "braggnn_fpga_e5m3.bitstream")

namespace loom::science {

std::string_view EmbeddedBraggNNWeights() {
  return {loom_braggnn_weights, static_cast<size_t>(loom_braggnn_weights_end - loom_braggnn_weights)};
}

std::string_view EmbeddedBitstream(const std::string& format) {
  if (format == "e5m4") {
    return {loom_braggnn_fpga_e5m4, static_cast<size_t>(loom_braggnn_fpga_e5m4_end - loom_braggnn_fpga_e5m4)};
  }
  if (format == "e5m3") {
    return {loom_braggnn_fpga_e5m3, static_cast<size_t>(loom_braggnn_fpga_e5m3_end - loom_braggnn_fpga_e5m3)};
  }
  return {};
}

}  // namespace loom::science
