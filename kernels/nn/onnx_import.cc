#include "kernels/nn/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <bit>
#include <cstring>
#include <fstream>
#include <sstream>

namespace loom::nn {
namespace {

static_assert(std::endian::native == std::endian::little, "ONNX raw_data is little-endian");

std::string DataTypeName(int t) {
  const auto* d = onnx::TensorProto_DataType_descriptor();
  const auto* v = d->FindValueByNumber(t);
  return v != nullptr ? v->name() : "data type " + std::to_string(t);
}

Result<Tensor> ConvertTensor(const onnx::TensorProto& t) {
  const std::string what = "ONNX initializer '" + t.name() + "'";
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    return InvalidArgument(what +
                           " keeps its data in an external file, which is not supported; export with "
                           "the weights inside the model (size < 2 GiB)");
  }
  if (t.data_type() != onnx::TensorProto::FLOAT) {
    return InvalidArgument(what + " is " + DataTypeName(t.data_type()) +
                           "; only FLOAT (float32) weights are supported");
  }
  Tensor out;
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || (d > 0 && n > (int64_t{1} << 40) / d)) {
      return InvalidArgument(what + " has an invalid dimension " + std::to_string(d));
    }
    out.shape.push_back(d);
    n *= d;
  }
  if (!t.raw_data().empty()) {
    if (t.raw_data().size() != static_cast<size_t>(n) * sizeof(float)) {
      return InvalidArgument(what + " holds " + std::to_string(t.raw_data().size()) + " bytes of raw data; its " +
                             std::to_string(n) + " float32 values need " + std::to_string(n * 4));
    }
    out.data.resize(static_cast<size_t>(n));
    std::memcpy(out.data.data(), t.raw_data().data(), t.raw_data().size());
  } else {
    if (t.float_data_size() != n) {
      return InvalidArgument(what + " holds " + std::to_string(t.float_data_size()) + " values for " +
                             std::to_string(n) + " elements");
    }
    out.data.assign(t.float_data().begin(), t.float_data().end());
  }
  return out;
}

}  // namespace

Result<OnnxModel> ParseOnnx(std::string_view bytes, size_t max_bytes) {
  if (bytes.size() > max_bytes) {
    return InvalidArgument("ONNX model is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                           std::to_string(max_bytes));
  }
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return InvalidArgument("not an ONNX model: the bytes do not parse as onnx.ModelProto");
  }
  if (!model.has_graph()) return InvalidArgument("ONNX model has no graph");
  OnnxModel out;
  out.producer = model.producer_name() + (model.producer_version().empty() ? "" : " " + model.producer_version());
  for (const auto& op : model.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") out.opset = op.version();
  }
  for (const auto& init : model.graph().initializer()) {
    if (init.name().empty()) return InvalidArgument("ONNX model has an initializer without a name");
    LOOM_ASSIGN_OR_RETURN(Tensor t, ConvertTensor(init));
    if (!out.initializers.emplace(init.name(), std::move(t)).second) {
      return InvalidArgument("ONNX model has two initializers named '" + init.name() + "'");
    }
  }
  for (const auto& node : model.graph().node()) {
    out.nodes.push_back({node.op_type(), node.name(), {node.input().begin(), node.input().end()}});
  }
  return out;
}

Result<OnnxModel> ReadOnnx(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open ONNX model " + path);
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  if (size > max_bytes) {
    return InvalidArgument("ONNX model " + path + " is " + std::to_string(size) + " bytes, over the limit of " +
                           std::to_string(max_bytes));
  }
  in.seekg(0);
  std::string bytes(size, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) return Internal("cannot read ONNX model " + path);
  auto r = ParseOnnx(bytes, max_bytes);
  if (!r.ok()) return Status(r.status().code(), path + ": " + r.status().message());
  return r;
}

}  // namespace loom::nn
