#include "kernels/science/ptychonn_kernels.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>

#include "common/value.h"
#include "kernels/science/ptychonn.h"
#include "kernels/science/ptychonn_weights.h"

namespace loom::kernels {
namespace {

using science::PtychoModel;
using science::PtychoNet;

// Frames per oneDNN call: bounds the activations' memory (about 10 MiB per 64x64 frame) whatever
// the batch, and the number of pipelines a warm network keeps (one per chunk size, <= 16).
constexpr int64_t kChunk = 16;
// Networks kept warm per worker process (each distinct weights file is one).
constexpr size_t kMaxWarmNets = 4;

// The loaded networks, by (model, weights path), least recently used first.
class NetCache {
 public:
  Result<std::shared_ptr<PtychoNet>> Get(PtychoModel model, const std::string& path) {
    std::lock_guard lock(mu_);
    const std::string key = std::string(science::PtychoModelName(model)) + "|" + path;
    for (auto it = nets_.begin(); it != nets_.end(); ++it) {
      if (it->first == key) {
        nets_.splice(nets_.end(), nets_, it);
        return nets_.back().second;
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    LOOM_ASSIGN_OR_RETURN(nn::TensorMap weights, science::LoadPtychoWeights(model, path));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PtychoNet> net, PtychoNet::Create(model, std::move(weights)));
    spdlog::info("{}: loaded weights {} ({:.0f} ms)", science::PtychoModelName(model), path,
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (nets_.size() >= kMaxWarmNets) nets_.pop_front();
    nets_.emplace_back(key, std::shared_ptr<PtychoNet>(std::move(net)));
    return nets_.back().second;
  }

 private:
  std::mutex mu_;
  // shared_ptr: a task keeps its network alive if another task evicts it meanwhile.
  std::list<std::pair<std::string, std::shared_ptr<PtychoNet>>> nets_;  // GUARDED_BY(mu_)
};

NetCache& Cache() {
  static auto* cache = new NetCache();
  return *cache;
}

std::string ShapeLabel(const Tensor& t) {
  std::string s = std::string(DTypeName(t.dtype())) + "[";
  for (int i = 0; i < t.shape_size(); ++i) s += (i ? "x" : "") + std::to_string(t.shape(i));
  return s + "]";
}

Value FloatTensor(const std::vector<int64_t>& shape, const std::vector<float>& data) {
  return TensorValue(shape, std::span<const float>(data));
}

// The call's `weights` argument, else the function's configuration, else the default.
Result<std::string> WeightsPath(const KernelCall& call, bool edge) {
  const Value* v = call.param(1);
  if ((v == nullptr || IsNull(*v)) && call.config != nullptr) {
    if (auto it = call.config->find("weights"); it != call.config->end()) v = &it->second;
  }
  if (v == nullptr || IsNull(*v)) return DefaultPtychoWeightsPath(edge);
  if (!v->has_string_value() || v->string_value().empty()) {
    return InvalidArgument(std::string(edge ? "ptychonn-edge" : "ptychonn") +
                           ": 'weights' must be the path of a .safetensors or .onnx file, got " + DebugString(*v));
  }
  return v->string_value();
}

// The frames of a .npy file (NumPy's format: magic, version, a Python-dict header, raw data):
// float32 little-endian ('<f4'), C order. Gives the same tensor the caller would have sent.
Result<Value> TensorFromNpy(const std::string& bytes, const std::string& kernel) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument(kernel + ": 'frames' bytes must be a .npy file of float32 values: " + why);
  };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) return bad("no .npy magic");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8;
    offset = 10;
  } else if ((major == 2 || major == 3) && bytes.size() >= 12) {
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    return bad("unsupported version " + std::to_string(major));
  }
  if (header_len > bytes.size() - offset) return bad("truncated header");
  const std::string header = bytes.substr(offset, header_len);
  if (header.find("'descr': '<f4'") == std::string::npos) return bad("descr is not '<f4' in " + header);
  if (header.find("'fortran_order': False") == std::string::npos) return bad("Fortran order is not supported");
  const size_t open = header.find("'shape': (");
  const size_t close = open == std::string::npos ? open : header.find(')', open);
  if (close == std::string::npos) return bad("no shape in " + header);
  std::vector<int64_t> shape;
  int64_t count = 1;
  const std::string dims = header.substr(open + 10, close - open - 10);
  for (size_t pos = 0; pos < dims.size();) {
    const size_t comma = dims.find(',', pos);
    const std::string item = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? dims.size() : comma + 1;
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    int64_t d = 0;
    try {
      d = std::stoll(item);
    } catch (const std::exception&) {
      return bad("bad shape (" + dims + ")");
    }
    if (d < 0 || d > (int64_t{1} << 31)) return bad("bad shape (" + dims + ")");
    shape.push_back(d);
    count *= d;
    if (count > (int64_t{1} << 31)) return bad("too many elements");
  }
  const size_t data_offset = offset + header_len;
  if (bytes.size() - data_offset != static_cast<size_t>(count) * sizeof(float)) {
    return bad("shape (" + dims + ") needs " + std::to_string(count * 4) + " bytes of data, the file has " +
               std::to_string(bytes.size() - data_offset));
  }
  Value v;
  auto* t = v.mutable_tensor_value();
  t->set_dtype(v1::DTYPE_FLOAT32);
  for (int64_t d : shape) t->add_shape(d);
  t->set_data(bytes.substr(data_offset));
  return v;
}

Result<Value> RunPtycho(const KernelCall& call, PtychoModel model) {
  const bool edge = model == PtychoModel::kEdge;
  const std::string name = science::PtychoModelName(model);
  const int64_t side = science::PtychoInputSide(model);
  const std::string expected =
      edge ? "float32 [N,128,128] or [128,128] (network input), or raw frames [N,516,516] or [516,516]"
           : "float32 [N,64,64] or [64,64]";
  const Value* arg = call.param(0);
  Value from_npy;
  if (arg->has_bytes_value()) {
    LOOM_ASSIGN_OR_RETURN(from_npy, TensorFromNpy(arg->bytes_value(), name));
    arg = &from_npy;
  }
  if (!arg->has_tensor_value()) {
    return InvalidArgument(name + ": 'frames' must be a tensor " + expected + " (or the bytes of a .npy file), got " +
                           KindName(*arg));
  }
  const Tensor& t = arg->tensor_value();
  LOOM_RETURN_IF_ERROR(ValidateTensor(t));
  const int dims = t.shape_size();
  if (t.dtype() != v1::DTYPE_FLOAT32 || (dims != 2 && dims != 3)) {
    return InvalidArgument(name + ": 'frames' must be " + expected + ", got " + ShapeLabel(t));
  }
  const int64_t n = dims == 3 ? t.shape(0) : 1;
  const int64_t rows = t.shape(dims - 2);
  const int64_t cols = t.shape(dims - 1);
  const bool raw = edge && rows >= 512 && cols >= 512;
  if (n < 1 || (!raw && (rows != side || cols != side))) {
    return InvalidArgument(name + ": 'frames' must be " + expected + ", got " + ShapeLabel(t));
  }
  std::vector<float> input(static_cast<size_t>(n * rows * cols));
  std::memcpy(input.data(), t.data().data(), input.size() * sizeof(float));
  if (raw) {
    std::vector<float> pre(static_cast<size_t>(n * side * side));
    for (int64_t i = 0; i < n; ++i) {
      LOOM_ASSIGN_OR_RETURN(std::vector<float> frame,
                            science::PreprocessEdgeFrame(
                                std::span<const float>(input).subspan(i * rows * cols, rows * cols), rows, cols));
      std::copy(frame.begin(), frame.end(), pre.begin() + i * side * side);
    }
    input = std::move(pre);
  }
  LOOM_ASSIGN_OR_RETURN(const std::string path, WeightsPath(call, edge));
  LOOM_ASSIGN_OR_RETURN(std::shared_ptr<PtychoNet> net, Cache().Get(model, path));
  std::vector<float> phase(input.size());
  std::vector<float> amplitude(edge ? 0 : input.size());
  const int64_t per = side * side;
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t b = std::min(kChunk, n - i);
    LOOM_ASSIGN_OR_RETURN(science::PtychoOutput out,
                          net->Forward(std::span<const float>(input).subspan(i * per, b * per), b));
    std::copy(out.phase.begin(), out.phase.end(), phase.begin() + i * per);
    if (!edge) std::copy(out.amplitude.begin(), out.amplitude.end(), amplitude.begin() + i * per);
  }
  const std::vector<int64_t> shape = dims == 3 ? std::vector<int64_t>{n, side, side} : std::vector<int64_t>{side, side};
  std::vector<std::pair<std::string, Value>> result;
  if (!edge) result.emplace_back("amplitude", FloatTensor(shape, amplitude));
  result.emplace_back("phase", FloatTensor(shape, phase));
  return MapValue(std::move(result));
}

}  // namespace

Status RegisterPtychoKernels(KernelRegistry* registry) {
  const auto infos = PtychoKernelInfos();
  LOOM_RETURN_IF_ERROR(
      registry->Register({infos[0], [](const KernelCall& c) { return RunPtycho(c, PtychoModel::kOriginal); }}));
  return registry->Register({infos[1], [](const KernelCall& c) { return RunPtycho(c, PtychoModel::kEdge); }});
}

}  // namespace loom::kernels
