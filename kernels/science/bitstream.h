// The "bitstream" of the FPGA-class BraggNN: what a real FPGA design would be built from and
// checked against, the network's weights plus the number format it computes in, sealed with a
// checksum. It is a safetensors file (kernels/nn/safetensors.h) whose metadata says:
//
//   loom_artifact   "bitstream"
//   format_version  "1"
//   network         "braggnn-fpga"      (BraggNNFpgaArchitecture's weights, float32)
//   number_format   "e5m4" | "e5m3"     (minifloat.h)
//   checksum        "sha256:<64 hex>"   over CanonicalBytes (below)
//
// CanonicalBytes: "loom-bitstream-v1\n" "network=<network>\n" "number_format=<format>\n", then
// for each tensor in name order: "<name>\n" "<d0>,<d1>,...\n" and its float32 little-endian
// bytes. tools/braggnn/export.py writes the same (so Python and C++ seal alike).
//
// A file that does not parse, lacks a field, fails its checksum, names another network or whose
// weights do not fit the network is refused with an error saying which.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "kernels/nn/tensor.h"
#include "kernels/science/minifloat.h"

namespace loom::science {

inline constexpr char kBitstreamNetwork[] = "braggnn-fpga";

struct Bitstream {
  std::string network;
  FloatFormat format;
  nn::TensorMap weights;
  std::string checksum;  // "sha256:..."
};

std::string BitstreamChecksum(const std::string& network, const FloatFormat& format, const nn::TensorMap& weights);

// The bitstream's bytes (a safetensors file) for these weights and format.
std::string SerializeBitstream(const nn::TensorMap& weights, const FloatFormat& format);

// Parses and verifies; `origin` (a path or "embedded") names the file in errors.
Result<Bitstream> ParseBitstream(std::string_view bytes, const std::string& origin);
Result<Bitstream> ReadBitstream(const std::string& path);

}  // namespace loom::science
