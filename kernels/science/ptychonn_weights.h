// Loading PtychoNN weights from files: safetensors (kernels/nn/safetensors.h) as written by
// tools/ptychonn/export.py, or ONNX as exported from PyTorch (tools/ptychonn/export.py --onnx,
// or a user's own torch.onnx.export of the same architecture).
#pragma once

#include <string>

#include "common/status.h"
#include "kernels/nn/onnx_import.h"
#include "kernels/nn/tensor.h"
#include "kernels/science/ptychonn.h"

namespace loom::science {

// Maps an ONNX model's initializers onto the architecture's weight names. When the exporter kept
// the PyTorch names ("encoder.0.weight" ...), they are used as they are; otherwise (names such as
// "onnx::Conv_123" after constant folding) the Conv nodes are taken in graph order, which for a
// PyTorch export is the forward order (encoder, amplitude decoder, phase decoder), and their
// weight and bias inputs are checked against the expected shapes. The error says which layer did
// not fit.
Result<nn::TensorMap> PtychoWeightsFromOnnx(PtychoModel model, const nn::OnnxModel& onnx);

// Reads `path` (.onnx: ONNX; anything else: safetensors) and checks it (CheckPtychoWeights).
Result<nn::TensorMap> LoadPtychoWeights(PtychoModel model, const std::string& path);

}  // namespace loom::science
