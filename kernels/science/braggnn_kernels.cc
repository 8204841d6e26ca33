#include "kernels/science/braggnn_kernels.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/nn/safetensors.h"
#include "kernels/science/bitstream.h"
#include "kernels/science/braggnn.h"
#include "kernels/science/embedded_data.h"
#include "kernels/science/fpga_device.h"

namespace loom::kernels {
namespace {

using science::BraggNet;
using science::kPatch;
using science::kPatchPixels;

// A call's string option: the argument, else the function's configuration, else `fallback`.
Result<std::string> StringOption(const KernelCall& call, const v1::KernelInfo& info, const std::string& name,
                                 const std::string& fallback) {
  const Value* v = nullptr;
  for (int i = 0; i < info.inputs_size(); ++i) {
    if (info.inputs(i).name() == name) v = call.param(static_cast<size_t>(i));
  }
  if ((v == nullptr || IsNull(*v)) && call.config != nullptr) {
    if (auto it = call.config->find(name); it != call.config->end()) v = &it->second;
  }
  if (v == nullptr || IsNull(*v)) return fallback;
  if (!v->has_string_value()) {
    return InvalidArgument(info.name() + ": '" + name + "' must be a string, got " + DebugString(*v));
  }
  return v->string_value();
}

Result<int64_t> MaxPatches(const KernelCall& call, const std::string& kernel) {
  if (call.config == nullptr) return kDefaultMaxPatches;
  auto it = call.config->find("max_patches");
  if (it == call.config->end()) return kDefaultMaxPatches;
  if (!it->second.has_int_value() || it->second.int_value() < 1) {
    return InvalidArgument(kernel + ": configuration 'max_patches' must be a positive int, got " +
                           DebugString(it->second));
  }
  return it->second.int_value();
}

// Nested lists of numbers (what the CLI's JSON literals make) as a shape and float32 values;
// false if `v` is not a regular nesting of numbers.
bool FlattenList(const Value& v, size_t depth, std::vector<int64_t>* shape, std::vector<float>* out) {
  if (v.has_int_value() || v.has_double_value()) {
    if (depth != shape->size()) return false;
    out->push_back(v.has_int_value() ? static_cast<float>(v.int_value()) : static_cast<float>(v.double_value()));
    return true;
  }
  if (!v.has_list_value() || depth > 3) return false;
  const int64_t len = v.list_value().items_size();
  if (depth == shape->size()) {
    if (!out->empty()) return false;  // a number where a list was seen before
    shape->push_back(len);
  } else if ((*shape)[depth] != len) {
    return false;
  }
  for (const Value& item : v.list_value().items()) {
    if (!FlattenList(item, depth + 1, shape, out)) return false;
  }
  return true;
}

// The patches of a call: float32 [N, 11, 11] or [11, 11] (a tensor, or nested lists of
// numbers), finite, N within the limit.
Result<std::vector<float>> Patches(const KernelCall& call, const std::string& kernel, int64_t* n) {
  const Value& v = *call.param(0);
  const std::string expected = "expected a float32 tensor of shape [N, 11, 11] or [11, 11]";
  std::vector<int64_t> shape;
  std::vector<float> data;
  std::string got;
  if (v.has_tensor_value()) {
    const Tensor& t = v.tensor_value();
    got = std::string(DTypeName(t.dtype())) + "[";
    for (int i = 0; i < t.shape_size(); ++i) got += (i ? ", " : "") + std::to_string(t.shape(i));
    got += "]";
    if (t.dtype() != v1::DTYPE_FLOAT32) return InvalidArgument(kernel + ": 'patches': " + expected + ", got " + got);
    LOOM_RETURN_IF_ERROR(ValidateTensor(t));
    shape.assign(t.shape().begin(), t.shape().end());
  } else if (v.has_list_value()) {
    if (!FlattenList(v, 0, &shape, &data)) {
      return InvalidArgument(kernel + ": 'patches': " + expected +
                             " (or nested lists of numbers of that shape), got lists that are not a regular array of "
                             "numbers");
    }
    got = "a list of shape [";
    for (size_t i = 0; i < shape.size(); ++i) got += (i ? ", " : "") + std::to_string(shape[i]);
    got += "]";
  } else {
    return InvalidArgument(kernel + ": 'patches': " + expected + ", got " + DebugString(v));
  }
  const bool one = shape.size() == 2 && shape[0] == kPatch && shape[1] == kPatch;
  const bool many = shape.size() == 3 && shape[0] >= 1 && shape[1] == kPatch && shape[2] == kPatch;
  if (!one && !many) return InvalidArgument(kernel + ": 'patches': " + expected + ", got " + got);
  *n = one ? 1 : shape[0];
  LOOM_ASSIGN_OR_RETURN(const int64_t limit, MaxPatches(call, kernel));
  if (*n > limit) {
    return InvalidArgument(kernel + ": " + std::to_string(*n) + " patches in one call, more than the limit of " +
                           std::to_string(limit) + " (configuration 'max_patches'); split the batch");
  }
  if (v.has_tensor_value()) {
    data.resize(static_cast<size_t>(*n) * kPatchPixels);
    std::memcpy(data.data(), v.tensor_value().data().data(), data.size() * sizeof(float));
  }
  for (size_t i = 0; i < data.size(); ++i) {
    if (!std::isfinite(data[i])) {
      return InvalidArgument(kernel + ": patch " + std::to_string(i / kPatchPixels) + " holds a non-finite value");
    }
  }
  return data;
}

Result<Value> Centres(std::vector<float> out, int64_t n, const std::string& units, const std::string& kernel) {
  if (units == "pixels") {
    for (float& v : out) v *= kPatch;
  } else if (units != "fraction") {
    return InvalidArgument(kernel + ": units must be 'fraction' or 'pixels', got '" + units + "'");
  }
  return TensorValue({n, 2}, std::span<const float>(out));
}

// Loaded once per source ("embedded" or a path) and kept for the process's lifetime.
template <typename T>
class WarmCache {
 public:
  template <typename Load>
  Result<const T*> Get(const std::string& key, Load&& load) {
    std::lock_guard lock(mu_);
    if (auto it = items_.find(key); it != items_.end()) return it->second.get();
    LOOM_ASSIGN_OR_RETURN(T item, load());
    auto [it, inserted] = items_.emplace(key, std::make_unique<T>(std::move(item)));
    return it->second.get();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<T>> items_;  // GUARDED_BY(mu_)
};

Result<nn::TensorMap> LoadWeights(const std::string& source) {
  auto st =
      source == "embedded" ? nn::ParseSafetensors(science::EmbeddedBraggNNWeights()) : nn::ReadSafetensors(source);
  if (!st.ok()) return InvalidArgument("braggnn: weights " + source + ": " + st.status().message());
  return std::move(st->tensors);
}

Result<Value> RunBraggNN(const KernelCall& call, const v1::KernelInfo& info) {
  static WarmCache<BraggNet> nets;
  int64_t n = 0;
  LOOM_ASSIGN_OR_RETURN(auto patches, Patches(call, "braggnn", &n));
  LOOM_ASSIGN_OR_RETURN(const std::string units, StringOption(call, info, "units", "fraction"));
  LOOM_ASSIGN_OR_RETURN(const std::string source, StringOption(call, info, "weights", "embedded"));
  LOOM_ASSIGN_OR_RETURN(const BraggNet* net, nets.Get(source, [&]() -> Result<BraggNet> {
    LOOM_ASSIGN_OR_RETURN(auto weights, LoadWeights(source));
    return BraggNet::Create(science::BraggNNArchitecture(), weights);
  }));
  std::vector<float> out(static_cast<size_t>(n) * 2);
  net->Forward(patches, n, out);
  return Centres(std::move(out), n, units, "braggnn");
}

// A programmed device and the float32 build of its network.
struct FpgaTarget {
  std::unique_ptr<science::FpgaDevice> device;
  std::unique_ptr<BraggNet> float32;
};

Result<Value> RunBraggNNFpga(const KernelCall& call, const v1::KernelInfo& info) {
  static WarmCache<FpgaTarget> targets;
  const std::string kernel = "braggnn-fpga";
  int64_t n = 0;
  LOOM_ASSIGN_OR_RETURN(auto patches, Patches(call, kernel, &n));
  LOOM_ASSIGN_OR_RETURN(const std::string units, StringOption(call, info, "units", "fraction"));
  LOOM_ASSIGN_OR_RETURN(const std::string format_name, StringOption(call, info, "number_format", ""));
  LOOM_ASSIGN_OR_RETURN(const std::string precision, StringOption(call, info, "precision", "device"));
  LOOM_ASSIGN_OR_RETURN(const std::string path, StringOption(call, info, "bitstream", ""));
  if (precision != "device" && precision != "float32") {
    return InvalidArgument(kernel + ": precision must be 'device' or 'float32', got '" + precision + "'");
  }
  std::string key;
  if (path.empty()) {
    const std::string f = format_name.empty() ? "e5m4" : format_name;
    if (f != "e5m4" && f != "e5m3") {
      return InvalidArgument(kernel + ": number_format must be 'e5m4' or 'e5m3' (the built-in bitstreams), got '" + f +
                             "'");
    }
    key = "embedded:" + f;
  } else {
    key = path;
  }
  LOOM_ASSIGN_OR_RETURN(const FpgaTarget* target, targets.Get(key, [&]() -> Result<FpgaTarget> {
    Result<science::Bitstream> b =
        path.empty() ? science::ParseBitstream(science::EmbeddedBitstream(key.substr(9)), "built-in " + key.substr(9))
                     : science::ReadBitstream(path);
    if (!b.ok()) return b.status();
    FpgaTarget t;
    t.device = std::make_unique<science::EmulatedFpgaDevice>();
    LOOM_RETURN_IF_ERROR(t.device->Load(*b));
    LOOM_ASSIGN_OR_RETURN(auto net, BraggNet::Create(science::BraggNNFpgaArchitecture(), b->weights));
    t.float32 = std::make_unique<BraggNet>(std::move(net));
    return t;
  }));
  const science::FpgaDeviceInfo dev = target->device->Info();
  if (!format_name.empty() && dev.number_format != format_name) {
    return InvalidArgument(kernel + ": bitstream " + path + " computes in " + dev.number_format +
                           ", but number_format " + format_name + " was asked for");
  }
  std::vector<float> out(static_cast<size_t>(n) * 2);
  if (precision == "device") {
    LOOM_RETURN_IF_ERROR(target->device->Run(patches, n, out));
  } else {
    target->float32->Forward(patches, n, out);
  }
  LOOM_ASSIGN_OR_RETURN(Value centres, Centres(std::move(out), n, units, kernel));
  Value device = MapValue({{"class", StringValue(dev.device_class)},
                           {"name", StringValue(dev.name)},
                           {"emulated", BoolValue(dev.emulated)},
                           {"network", StringValue(dev.network)},
                           {"number_format", StringValue(dev.number_format)},
                           {"checksum", StringValue(dev.checksum)},
                           {"precision", StringValue(precision == "device" ? dev.number_format : "float32")}});
  return MapValue({{"centres", std::move(centres)}, {"device", std::move(device)}});
}

}  // namespace

Status RegisterBraggKernels(KernelRegistry* registry) {
  for (const v1::KernelInfo& info : BraggKernelInfos()) {
    KernelFn fn;
    if (info.name() == "braggnn") {
      fn = [info](const KernelCall& call) { return RunBraggNN(call, info); };
    } else {
      fn = [info](const KernelCall& call) { return RunBraggNNFpga(call, info); };
    }
    LOOM_RETURN_IF_ERROR(registry->Register({info, std::move(fn)}));
  }
  return Status::Ok();
}

}  // namespace loom::kernels
