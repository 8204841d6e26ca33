#include "kernels/science/ptychonn_weights.h"

#include <algorithm>

#include "kernels/nn/safetensors.h"

namespace loom::science {

Result<nn::TensorMap> PtychoWeightsFromOnnx(PtychoModel model, const nn::OnnxModel& onnx) {
  const auto expected = PtychoWeightShapes(model);
  const std::string net = PtychoModelName(model);
  nn::TensorMap out;
  if (std::all_of(expected.begin(), expected.end(),
                  [&](const auto& e) { return onnx.initializers.contains(e.first); })) {
    for (const auto& [name, shape] : expected) out[name] = onnx.initializers.at(name);
    return out;
  }
  std::vector<const nn::OnnxNode*> convs;
  for (const auto& n : onnx.nodes) {
    if (n.op_type == "Conv") convs.push_back(&n);
  }
  if (convs.size() * 2 != expected.size()) {
    return InvalidArgument("ONNX model (" + onnx.producer + ") has " + std::to_string(convs.size()) +
                           " Conv nodes and its initializers lack the PyTorch names; " + net + " has " +
                           std::to_string(expected.size() / 2) + " convolutions");
  }
  for (size_t i = 0; i < convs.size(); ++i) {
    const nn::OnnxNode& conv = *convs[i];
    for (size_t k = 0; k < 2; ++k) {
      const auto& [name, shape] = expected[2 * i + k];
      auto it = conv.inputs.size() > k + 1 ? onnx.initializers.find(conv.inputs[k + 1]) : onnx.initializers.end();
      if (it == onnx.initializers.end()) {
        return InvalidArgument("ONNX Conv node " + std::to_string(i) + " ('" + conv.name +
                               "') has no initializer for " + (k == 0 ? "its weight" : "its bias") + " (" + net +
                               " layer '" + name + "')");
      }
      if (it->second.shape != shape) {
        return InvalidArgument("ONNX Conv node " + std::to_string(i) + " ('" + conv.name + "'): initializer '" +
                               it->first + "' does not have the shape of " + net + " layer '" + name + "'");
      }
      out[name] = it->second;
    }
  }
  return out;
}

Result<nn::TensorMap> LoadPtychoWeights(PtychoModel model, const std::string& path) {
  nn::TensorMap weights;
  if (path.size() >= 5 && path.ends_with(".onnx")) {
    LOOM_ASSIGN_OR_RETURN(nn::OnnxModel onnx, nn::ReadOnnx(path));
    LOOM_ASSIGN_OR_RETURN(weights, PtychoWeightsFromOnnx(model, onnx));
  } else {
    LOOM_ASSIGN_OR_RETURN(nn::Safetensors st, nn::ReadSafetensors(path));
    weights = std::move(st.tensors);
  }
  if (Status s = CheckPtychoWeights(model, weights); !s.ok()) return Status(s.code(), path + ": " + s.message());
  return weights;
}

}  // namespace loom::science
