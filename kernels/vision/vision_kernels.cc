#include "kernels/vision/vision_kernels.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "kernels/vision/dog.h"
#include "kernels/vision/focus.h"
#include "kernels/vision/image.h"

namespace loom::kernels {
namespace {

using vision::DogOptions;
using vision::FocusOptions;

// The most DoG buffer memory a worker keeps between dog_blobs calls.
constexpr size_t kKeptDogBytes = size_t{256} << 20;

// A kernel's option: the call's argument, else the function's configuration, else nothing.
// The call's arguments were type-checked against the KernelInfo; configuration values are
// checked here, with the same kind of message.
class Options {
 public:
  Options(const KernelCall& call, const v1::KernelInfo& info, std::string kernel)
      : call_(call), info_(info), kernel_(std::move(kernel)) {}

  const Value* Find(const std::string& name) const {
    for (int i = 0; i < info_.inputs_size(); ++i) {
      if (info_.inputs(i).name() != name) continue;
      if (const Value* v = call_.param(static_cast<size_t>(i)); v != nullptr && !IsNull(*v)) return v;
      break;
    }
    if (call_.config != nullptr) {
      if (auto it = call_.config->find(name); it != call_.config->end() && !IsNull(it->second)) return &it->second;
    }
    return nullptr;
  }

  Status Double(const std::string& name, double* out) const {
    const Value* v = Find(name);
    if (v == nullptr) return Status::Ok();
    if (v->has_int_value()) {
      *out = static_cast<double>(v->int_value());
    } else if (v->has_double_value()) {
      *out = v->double_value();
    } else {
      return Wrong(name, "a number", *v);
    }
    return Status::Ok();
  }

  Status Int(const std::string& name, int* out) const {
    const Value* v = Find(name);
    if (v == nullptr) return Status::Ok();
    if (!v->has_int_value()) return Wrong(name, "an int", *v);
    if (v->int_value() < -(1 << 30) || v->int_value() > (1 << 30)) {
      return InvalidArgument(kernel_ + ": '" + name + "' is out of range: " + std::to_string(v->int_value()));
    }
    *out = static_cast<int>(v->int_value());
    return Status::Ok();
  }

  Status Bool(const std::string& name, bool* out) const {
    const Value* v = Find(name);
    if (v == nullptr) return Status::Ok();
    if (!v->has_bool_value()) return Wrong(name, "a bool", *v);
    *out = v->bool_value();
    return Status::Ok();
  }

  Status String(const std::string& name, std::string* out) const {
    const Value* v = Find(name);
    if (v == nullptr) return Status::Ok();
    if (!v->has_string_value()) return Wrong(name, "a string", *v);
    *out = v->string_value();
    return Status::Ok();
  }

 private:
  Status Wrong(const std::string& name, const char* want, const Value& got) const {
    return InvalidArgument(kernel_ + ": option '" + name + "' must be " + want + ", got " + KindName(got) + " " +
                           DebugString(got));
  }

  const KernelCall& call_;
  const v1::KernelInfo& info_;
  std::string kernel_;
};

Value DoubleTensor(const std::vector<int64_t>& shape, const std::vector<double>& data) {
  return TensorValue(shape, std::span<const double>(data));
}

Value IntTensor(const std::vector<int64_t>& counts) {
  return TensorValue({static_cast<int64_t>(counts.size())}, std::span<const int64_t>(counts));
}

Result<Value> Focus(const KernelCall& call, const v1::KernelInfo& info) {
  Options o(call, info, "focus");
  FocusOptions f;
  LOOM_RETURN_IF_ERROR(o.Double("threshold", &f.threshold));
  LOOM_RETURN_IF_ERROR(o.Bool("return_blobs", &f.return_blobs));
  LOOM_RETURN_IF_ERROR(o.Int("resize", &f.resize));
  LOOM_RETURN_IF_ERROR(o.Double("saturated_percent", &f.saturated_percent));
  LOOM_RETURN_IF_ERROR(o.Int("num_scales", &f.num_scales));
  LOOM_RETURN_IF_ERROR(o.Double("sigma_min", &f.sigma_min));
  LOOM_RETURN_IF_ERROR(o.Double("sigma_max", &f.sigma_max));
  LOOM_RETURN_IF_ERROR(o.Double("truncate", &f.truncate));
  LOOM_RETURN_IF_ERROR(o.Double("min_response", &f.min_response));
  LOOM_RETURN_IF_ERROR(o.Double("noise_floor", &f.noise_floor));
  LOOM_RETURN_IF_ERROR(o.Double("fine_sigma_max", &f.fine_sigma_max));
  if (Status s = vision::ValidateFocusOptions(f); !s.ok()) return InvalidArgument("focus: " + s.message());
  const Value* image_value = o.Find("image");
  if (image_value == nullptr) return InvalidArgument("focus: 'image' is required");
  LOOM_ASSIGN_OR_RETURN(cv::Mat image, vision::ImageFromValue(*image_value, "focus"));
  LOOM_ASSIGN_OR_RETURN(vision::FocusResult r, vision::DetectFocus(image, f));

  // DoG scale i has the sigma of blur i (FocusSigmas has one more: the last blur).
  std::vector<double> sigmas = vision::FocusSigmas(f);
  sigmas.resize(static_cast<size_t>(f.num_scales));
  std::vector<std::pair<std::string, Value>> out = {
      {"score", DoubleValue(r.score)},
      {"in_focus", BoolValue(r.in_focus)},
      {"threshold", DoubleValue(r.threshold)},
      {"per_scale_counts", IntTensor(r.per_scale_counts)},
      {"sigmas", DoubleTensor({static_cast<int64_t>(sigmas.size())}, sigmas)},
      {"laplacian_variance", DoubleValue(vision::VarianceOfLaplacian(image))},
      {"tenengrad", DoubleValue(vision::Tenengrad(image))},
  };
  if (f.return_blobs) {
    std::vector<double> blobs;
    blobs.reserve(r.blobs.size() * 3);
    for (const auto& b : r.blobs) blobs.insert(blobs.end(), {double(b.row), double(b.col), b.sigma});
    out.emplace_back("blobs", DoubleTensor({static_cast<int64_t>(r.blobs.size()), 3}, blobs));
  }
  return MapValue(std::move(out));
}

Result<Value> DogBlobs(const KernelCall& call, const v1::KernelInfo& info) {
  Options o(call, info, "dog_blobs");
  DogOptions d;
  std::string mode = "paper";
  std::string conv = "auto";
  LOOM_RETURN_IF_ERROR(o.String("mode", &mode));
  LOOM_RETURN_IF_ERROR(o.String("conv", &conv));
  if (mode == "paper") {
    d.mode = vision::DogMode::kPaper;
  } else if (mode == "skimage") {
    d.mode = vision::DogMode::kSkimage;
  } else {
    return InvalidArgument("dog_blobs: option 'mode' must be 'paper' or 'skimage', got '" + mode + "'");
  }
  if (conv == "auto") {
    d.path = vision::ConvPath::kAuto;
  } else if (conv == "direct") {
    d.path = vision::ConvPath::kDirect;
  } else if (conv == "fft") {
    d.path = vision::ConvPath::kFft;
  } else {
    return InvalidArgument("dog_blobs: option 'conv' must be 'auto', 'direct' or 'fft', got '" + conv + "'");
  }
  LOOM_RETURN_IF_ERROR(o.Double("min_sigma", &d.min_sigma));
  LOOM_RETURN_IF_ERROR(o.Double("max_sigma", &d.max_sigma));
  LOOM_RETURN_IF_ERROR(o.Int("n_bin", &d.n_bin));
  LOOM_RETURN_IF_ERROR(o.Double("sigma_ratio", &d.sigma_ratio));
  LOOM_RETURN_IF_ERROR(o.Double("threshold", &d.threshold));
  LOOM_RETURN_IF_ERROR(o.Double("overlap", &d.overlap));
  LOOM_RETURN_IF_ERROR(o.Double("truncate", &d.truncate));
  LOOM_RETURN_IF_ERROR(o.Int("histogram_bins", &d.histogram_bins));
  if (Status s = vision::ValidateDogOptions(d); !s.ok()) return InvalidArgument("dog_blobs: " + s.message());
  const Value* image_value = o.Find("image");
  if (image_value == nullptr) return InvalidArgument("dog_blobs: 'image' is required");
  // skimage mode works in double precision, as scikit-image does, so results agree bit for bit.
  LOOM_ASSIGN_OR_RETURN(cv::Mat image, vision::ImageFromValue(*image_value, "dog_blobs",
                                                              d.mode == vision::DogMode::kSkimage ? CV_64F : CV_32F));
  // A worker runs its tasks one after another on one thread: keeping the buffers between frames
  // saves their page faults (about 15 ms per 1000x1000 frame). A cube over kKeptDogBytes is
  // released after the call so one huge frame does not pin its memory in a warm worker.
  thread_local vision::DogWorkspace workspace;
  auto result = vision::DetectDogBlobs(image, d, &workspace);
  size_t kept = 0;
  for (const auto& m : workspace.cube) kept += m.total() * m.elemSize();
  if (kept > kKeptDogBytes) workspace = vision::DogWorkspace();
  LOOM_ASSIGN_OR_RETURN(vision::DogResult r, std::move(result));

  std::vector<double> blobs;
  std::vector<double> sigmas;
  blobs.reserve(r.blobs.size() * 3);
  for (const auto& b : r.blobs) {
    blobs.insert(blobs.end(), {b.x, b.y, b.radius});
    sigmas.push_back(b.sigma);
  }
  const auto n = static_cast<int64_t>(r.blobs.size());
  return MapValue({
      {"blobs", DoubleTensor({n, 3}, blobs)},
      {"count", IntValue(n)},
      {"sigmas", DoubleTensor({n}, sigmas)},
      {"histogram",
       MapValue({{"edges", DoubleTensor({static_cast<int64_t>(r.histogram_edges.size())}, r.histogram_edges)},
                 {"counts", IntTensor(r.histogram_counts)}})},
  });
}

}  // namespace

Status RegisterVisionKernels(KernelRegistry* registry) {
  const v1::KernelInfo focus = FocusKernelInfo();
  LOOM_RETURN_IF_ERROR(registry->Register({focus, [focus](const KernelCall& c) { return Focus(c, focus); }}));
  const v1::KernelInfo dog = DogBlobsKernelInfo();
  return registry->Register({dog, [dog](const KernelCall& c) { return DogBlobs(c, dog); }});
}

}  // namespace loom::kernels
