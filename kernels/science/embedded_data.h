// The trained weights and bitstreams built into the BraggNN library (from kernels/science/data/,
// assembled in with .incbin by embedded_data.cc), so a worker needs no data files.
#pragma once

#include <string>
#include <string_view>

namespace loom::science {

// braggnn_trained.safetensors
std::string_view EmbeddedBraggNNWeights();
// braggnn_fpga_<format>.bitstream for format "e5m4" or "e5m3"; empty for any other.
std::string_view EmbeddedBitstream(const std::string& format);

}  // namespace loom::science
