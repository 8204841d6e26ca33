// Reads the weights of an ONNX model (e.g. one exported from PyTorch by torch.onnx.export): its
// graph initializers as a loom::nn::TensorMap, plus each node's operator and input names, which
// per-architecture loaders use to map initializer names onto their own (see
// science::PtychoWeightsFromOnnx). Parsed with the ONNX protobuf classes of Debian's libonnx-dev
// (onnx_proto, generated for the system protobuf).
//
// Only float32 tensors are supported, stored as raw_data or float_data; external data, other
// element types, negative dimensions and sizes that disagree with the dimensions are errors that
// name the tensor. Stateless and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/nn/tensor.h"

namespace loom::nn {

struct OnnxNode {
  std::string op_type;
  std::string name;
  std::vector<std::string> inputs;
};

struct OnnxModel {
  TensorMap initializers;
  std::vector<OnnxNode> nodes;  // in graph order
  std::string producer;         // e.g. "pytorch 1.13.0"
  int64_t opset = 0;            // of the default domain, 0 if absent
};

// The largest ONNX file read by default.
inline constexpr size_t kMaxOnnxBytes = size_t{1} << 30;

Result<OnnxModel> ParseOnnx(std::string_view bytes, size_t max_bytes = kMaxOnnxBytes);
Result<OnnxModel> ReadOnnx(const std::string& path, size_t max_bytes = kMaxOnnxBytes);

}  // namespace loom::nn
