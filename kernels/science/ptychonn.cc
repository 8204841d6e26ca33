#include "kernels/science/ptychonn.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <numbers>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>

#include "kernels/nn/reference.h"

namespace loom::science {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DType = memory::data_type;

constexpr float kPi = std::numbers::pi_v<float>;

// One fused layer of the network: a 3x3 convolution with its activation, a 2x2 max-pool or a
// bilinear x2 upsampling.
struct Layer {
  enum Kind { kConv, kPool, kUp } kind;
  std::string name;  // "<sequential>.<index>" for convolutions
  int cin = 0;
  int cout = 0;
  PtychoAct act = PtychoAct::kNone;
};

// Appends the layers of a PyTorch nn.Sequential described as [conv(cin, cout), relu, pool, up]
// ops, numbering them as PyTorch does, and fusing each ReLU into the convolution before it.
class SequentialSpec {
 public:
  explicit SequentialSpec(std::string prefix) : prefix_(std::move(prefix)) {}
  SequentialSpec& ConvRelu(int cin, int cout) {
    layers_.push_back({Layer::kConv, prefix_ + "." + std::to_string(index_), cin, cout, PtychoAct::kRelu});
    index_ += 2;
    return *this;
  }
  SequentialSpec& Conv(int cin, int cout, PtychoAct act) {
    layers_.push_back({Layer::kConv, prefix_ + "." + std::to_string(index_), cin, cout, act});
    index_ += 1;
    return *this;
  }
  SequentialSpec& Pool() { return Add(Layer::kPool); }
  SequentialSpec& Up() { return Add(Layer::kUp); }
  std::vector<Layer> layers() const { return layers_; }

 private:
  SequentialSpec& Add(Layer::Kind kind) {
    layers_.push_back({kind, "", 0, 0, PtychoAct::kNone});
    index_ += 1;
    return *this;
  }
  std::string prefix_;
  int index_ = 0;
  std::vector<Layer> layers_;
};

// The network as a trunk and one or two heads: heads[0] is the phase, heads[1] the amplitude.
struct Architecture {
  std::vector<Layer> trunk;
  std::vector<std::vector<Layer>> heads;
};

std::vector<Layer> OriginalDecoder(const std::string& prefix, PtychoAct act) {
  return SequentialSpec(prefix)
      .ConvRelu(128, 128)
      .ConvRelu(128, 128)
      .Up()
      .ConvRelu(128, 64)
      .ConvRelu(64, 64)
      .Up()
      .ConvRelu(64, 64)
      .ConvRelu(64, 64)
      .Up()
      .Conv(64, 1, act)
      .layers();
}

Architecture MakeArchitecture(PtychoModel model) {
  Architecture a;
  if (model == PtychoModel::kOriginal) {
    a.trunk = SequentialSpec("encoder")
                  .ConvRelu(1, 32)
                  .ConvRelu(32, 32)
                  .Pool()
                  .ConvRelu(32, 64)
                  .ConvRelu(64, 64)
                  .Pool()
                  .ConvRelu(64, 128)
                  .ConvRelu(128, 128)
                  .Pool()
                  .layers();
    a.heads = {OriginalDecoder("phase", PtychoAct::kTanhPi), OriginalDecoder("amplitude", PtychoAct::kSigmoid)};
    return a;
  }
  SequentialSpec enc("encoder");
  int cin = 1;
  for (int c : {16, 32, 64, 128}) {
    enc.ConvRelu(cin, c).ConvRelu(c, c).Pool();
    cin = c;
  }
  SequentialSpec dec("decoder");
  for (int c : {128, 64, 32, 16}) {
    dec.ConvRelu(cin, c).ConvRelu(c, c).Up();
    cin = c;
  }
  dec.Conv(16, 1, PtychoAct::kTanhPi);
  a.trunk = enc.layers();
  a.heads = {dec.layers()};
  return a;
}

// oneDNN reports errors by exception; everything that calls it goes through here.
template <typename Fn>
auto CatchDnnl(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const dnnl::error& e) {
    return Internal(std::string("ptychonn: oneDNN failed to ") + what + ": " + e.what());
  }
}

struct Step {
  dnnl::primitive prim;
  std::unordered_map<int, memory> args;
};

// Appends oneDNN primitives to a pipeline. Activations take the layouts the primitives prefer
// (format_tag::any), with a reorder inserted where one layer's output layout differs from what
// the next wants. Weights are reordered once, when the pipeline is built.
class Builder {
 public:
  Builder(const dnnl::engine& engine, dnnl::stream& stream, std::vector<Step>* steps)
      : engine_(engine), stream_(stream), steps_(steps) {}

  memory Reorder(const memory& from, const memory::desc& want) {
    if (from.get_desc() == want) return from;
    memory to(want, engine_);
    steps_->push_back({dnnl::reorder(from, to), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}});
    return to;
  }

  memory Conv(const memory& src, const float* weight, const float* bias, int cin, int cout, PtychoAct act) {
    const memory::dims d = src.get_desc().dims();
    const memory::dims dst_dims = {d[0], cout, d[2], d[3]};
    const memory::desc src_any(d, DType::f32, Tag::any);
    const memory::desc w_any({cout, cin, 3, 3}, DType::f32, Tag::any);
    const memory::desc b_md({cout}, DType::f32, Tag::x);
    const memory::desc dst_any(dst_dims, DType::f32, Tag::any);
    dnnl::post_ops ops;
    switch (act) {
      case PtychoAct::kNone:
        break;
      case PtychoAct::kRelu:
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        break;
      case PtychoAct::kSigmoid:
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_logistic, 0.f, 0.f);
        break;
      case PtychoAct::kTanhPi:
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_tanh, 0.f, 0.f);
        ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, kPi, 0.f);
        break;
    }
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    // convolution_direct: never Winograd, whose transforms cost accuracy.
    const dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               src_any, w_any, b_md, dst_any, {1, 1}, {1, 1}, {1, 1});
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, engine_);
    const memory in = Reorder(src, pd.src_desc());
    // The user's weights are only read (by the reorder), never written.
    memory w_user({{cout, cin, 3, 3}, DType::f32, Tag::oihw}, engine_, const_cast<float*>(weight));
    memory w(pd.weights_desc(), engine_);
    dnnl::reorder(w_user, w).execute(stream_, w_user, w);
    memory b(b_md, engine_);
    std::copy_n(bias, cout, static_cast<float*>(b.get_data_handle()));
    stream_.wait();
    memory dst(pd.dst_desc(), engine_);
    steps_->push_back({dnnl::convolution_forward(pd),
                       {{DNNL_ARG_SRC, in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, dst}}});
    return dst;
  }

  memory Pool(const memory& src) {
    const memory::dims d = src.get_desc().dims();
    const memory::desc dst_any({d[0], d[1], d[2] / 2, d[3] / 2}, DType::f32, Tag::any);
    const dnnl::pooling_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
                                           src.get_desc(), dst_any, {2, 2}, {2, 2}, {0, 0}, {0, 0});
    const dnnl::pooling_forward::primitive_desc pd(desc, engine_);
    memory dst(pd.dst_desc(), engine_);
    steps_->push_back({dnnl::pooling_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}});
    return dst;
  }

  // oneDNN's linear resampling maps output x to input (x + 0.5) / 2 - 0.5, clamped at the edges:
  // PyTorch's align_corners=False.
  memory Up(const memory& src) {
    const memory::dims d = src.get_desc().dims();
    const memory::desc dst_any({d[0], d[1], d[2] * 2, d[3] * 2}, DType::f32, Tag::any);
    const dnnl::resampling_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::resampling_linear,
                                              {2.f, 2.f}, src.get_desc(), dst_any);
    const dnnl::resampling_forward::primitive_desc pd(desc, engine_);
    memory dst(pd.dst_desc(), engine_);
    steps_->push_back({dnnl::resampling_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}});
    return dst;
  }

  // A plain NCHW memory with the same dims as `m`, for a result the caller reads.
  memory Plain(const memory& m) { return Reorder(m, memory::desc(m.get_desc().dims(), DType::f32, Tag::nchw)); }

 private:
  const dnnl::engine& engine_;
  dnnl::stream& stream_;
  std::vector<Step>* steps_;
};

void Run(std::vector<Step>& steps, dnnl::stream& stream) {
  for (auto& s : steps) s.prim.execute(stream, s.args);
  stream.wait();
}

struct DnnlContext {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

DnnlContext& SharedContext() {
  static DnnlContext ctx;
  return ctx;
}

memory::dims Dims(const std::vector<int64_t>& shape) { return memory::dims(shape.begin(), shape.end()); }

// Runs one layer built by `build` on x and returns its plain NCHW output.
template <typename BuildFn>
Result<nn::Tensor> RunOneLayer(const nn::Tensor& x, const char* what, BuildFn&& build) {
  if (x.shape.size() != 4) return InvalidArgument(std::string(what) + ": the input must be NCHW");
  return CatchDnnl(what, [&]() -> Result<nn::Tensor> {
    auto& ctx = SharedContext();
    std::vector<Step> steps;
    Builder b(ctx.engine, ctx.stream, &steps);
    memory in({Dims(x.shape), DType::f32, Tag::nchw}, ctx.engine, const_cast<float*>(x.data.data()));
    const memory out = b.Plain(build(b, in));
    Run(steps, ctx.stream);
    nn::Tensor y;
    const memory::dims d = out.get_desc().dims();
    y.shape.assign(d.begin(), d.end());
    y.data.resize(static_cast<size_t>(y.numel()));
    std::copy_n(static_cast<const float*>(out.get_data_handle()), y.data.size(), y.data.data());
    return y;
  });
}

}  // namespace

const char* PtychoModelName(PtychoModel model) {
  return model == PtychoModel::kOriginal ? "ptychonn" : "ptychonn-edge";
}
int PtychoInputSide(PtychoModel model) { return model == PtychoModel::kOriginal ? 64 : 128; }
bool PtychoHasAmplitude(PtychoModel model) { return model == PtychoModel::kOriginal; }

std::vector<std::pair<std::string, std::vector<int64_t>>> PtychoWeightShapes(PtychoModel model) {
  const Architecture a = MakeArchitecture(model);
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  auto add = [&](const std::vector<Layer>& layers) {
    for (const Layer& l : layers) {
      if (l.kind != Layer::kConv) continue;
      out.push_back({l.name + ".weight", {l.cout, l.cin, 3, 3}});
      out.push_back({l.name + ".bias", {l.cout}});
    }
  };
  add(a.trunk);
  // The state_dict's order: amplitude before phase.
  for (auto it = a.heads.rbegin(); it != a.heads.rend(); ++it) add(*it);
  return out;
}

int64_t PtychoParameterCount(PtychoModel model) {
  int64_t n = 0;
  for (const auto& [name, shape] : PtychoWeightShapes(model)) {
    int64_t k = 1;
    for (int64_t d : shape) k *= d;
    n += k;
  }
  return n;
}

nn::TensorMap SeededPtychoWeights(PtychoModel model, uint64_t seed) {
  auto splitmix64 = [](uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  nn::TensorMap out;
  uint64_t k = 0;
  for (const auto& [name, shape] : PtychoWeightShapes(model)) {
    // A bias has the bound of its layer's weight, whose fan-in is cin * 3 * 3.
    const std::string weight_name = name.ends_with(".bias") ? name.substr(0, name.size() - 5) + ".weight" : name;
    int64_t fan_in = 0;
    for (const auto& [n, s] : PtychoWeightShapes(model)) {
      if (n == weight_name) fan_in = s[1] * s[2] * s[3];
    }
    const double root = std::sqrt(static_cast<double>(fan_in));
    nn::Tensor t;
    t.shape = shape;
    t.data.resize(static_cast<size_t>(t.numel()));
    for (float& v : t.data) {
      const double u = static_cast<double>(splitmix64((seed << 40) + k++) >> 11) * 0x1p-53;
      v = static_cast<float>((2 * u - 1) / root);
    }
    out[name] = std::move(t);
  }
  return out;
}

Status CheckPtychoWeights(PtychoModel model, const nn::TensorMap& weights) {
  const std::string net = PtychoModelName(model);
  const auto expected = PtychoWeightShapes(model);
  for (const auto& [name, shape] : expected) {
    auto it = weights.find(name);
    if (it == weights.end()) {
      return InvalidArgument(net + " weights: tensor '" + name + "' " + nn::ShapeString(shape) + " is missing (found " +
                             std::to_string(weights.size()) + " tensors)");
    }
    if (it->second.shape != shape) {
      return InvalidArgument(net + " weights: tensor '" + name + "' has shape " + nn::ShapeString(it->second.shape) +
                             ", expected " + nn::ShapeString(shape));
    }
    if (static_cast<int64_t>(it->second.data.size()) != it->second.numel()) {
      return InvalidArgument(net + " weights: tensor '" + name + "' holds " + std::to_string(it->second.data.size()) +
                             " values for shape " + nn::ShapeString(shape));
    }
    for (float v : it->second.data) {
      if (!std::isfinite(v)) return InvalidArgument(net + " weights: tensor '" + name + "' holds a non-finite value");
    }
  }
  if (weights.size() != expected.size()) {
    for (const auto& [name, t] : weights) {
      if (std::none_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == name; })) {
        return InvalidArgument(net + " weights: unexpected tensor '" + name + "' (is this a " + net + " model?)");
      }
    }
  }
  return Status::Ok();
}

struct PtychoNet::Impl {
  struct Pipeline {
    std::vector<Step> steps;
    memory input;
    std::vector<memory> outputs;  // per head, plain NCHW
  };

  PtychoModel model;
  size_t max_pipelines = kDefaultMaxPipelines;
  Architecture arch;
  nn::TensorMap weights;
  DnnlContext ctx;
  mutable std::mutex mu;
  std::map<int64_t, std::unique_ptr<Pipeline>> pipelines;  // GUARDED_BY(mu), by batch size

  const nn::Tensor& W(const std::string& name) const { return weights.at(name); }

  memory AppendLayers(Builder& b, memory cur, const std::vector<Layer>& layers) const {
    for (const Layer& l : layers) {
      switch (l.kind) {
        case Layer::kConv:
          cur = b.Conv(cur, W(l.name + ".weight").data.data(), W(l.name + ".bias").data.data(), l.cin, l.cout, l.act);
          break;
        case Layer::kPool:
          cur = b.Pool(cur);
          break;
        case Layer::kUp:
          cur = b.Up(cur);
          break;
      }
    }
    return cur;
  }

  Result<Pipeline*> GetPipeline(int64_t batch) {
    if (auto it = pipelines.find(batch); it != pipelines.end()) return it->second.get();
    return CatchDnnl("build the pipeline", [&]() -> Result<Pipeline*> {
      auto p = std::make_unique<Pipeline>();
      Builder b(ctx.engine, ctx.stream, &p->steps);
      const int side = PtychoInputSide(model);
      // The input memory gets the caller's buffer at each Forward.
      p->input = memory({{batch, 1, side, side}, DType::f32, Tag::nchw}, ctx.engine, nullptr);
      const memory trunk = AppendLayers(b, p->input, arch.trunk);
      for (const auto& head : arch.heads) p->outputs.push_back(b.Plain(AppendLayers(b, trunk, head)));
      Pipeline* raw = p.get();
      // Bounded: a caller cycling through many batch sizes rebuilds instead of growing memory.
      if (pipelines.size() >= max_pipelines) pipelines.erase(pipelines.begin());
      pipelines[batch] = std::move(p);
      return raw;
    });
  }
};

PtychoNet::PtychoNet(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PtychoNet::~PtychoNet() = default;

Result<std::unique_ptr<PtychoNet>> PtychoNet::Create(PtychoModel model, nn::TensorMap weights, size_t max_pipelines) {
  LOOM_RETURN_IF_ERROR(CheckPtychoWeights(model, weights));
  if (max_pipelines < 1) return InvalidArgument("PtychoNet: max_pipelines must be at least 1");
  auto impl = std::make_unique<Impl>();
  impl->model = model;
  impl->max_pipelines = max_pipelines;
  impl->arch = MakeArchitecture(model);
  impl->weights = std::move(weights);
  return std::unique_ptr<PtychoNet>(new PtychoNet(std::move(impl)));
}

PtychoModel PtychoNet::model() const { return impl_->model; }

size_t PtychoNet::cached_pipelines() const {
  std::lock_guard lock(impl_->mu);
  return impl_->pipelines.size();
}

namespace {

Status CheckInput(PtychoModel model, std::span<const float> input, int64_t batch) {
  const int64_t side = PtychoInputSide(model);
  if (batch < 1 || static_cast<int64_t>(input.size()) != batch * side * side) {
    return InvalidArgument(std::string(PtychoModelName(model)) + ": expected " + std::to_string(batch) + " x " +
                           std::to_string(side) + " x " + std::to_string(side) + " floats, got " +
                           std::to_string(input.size()));
  }
  return Status::Ok();
}

PtychoOutput EmptyOutput(PtychoModel model, int64_t batch) {
  PtychoOutput out;
  out.batch = batch;
  out.side = PtychoInputSide(model);
  const auto n = static_cast<size_t>(batch * out.side * out.side);
  out.phase.resize(n);
  if (PtychoHasAmplitude(model)) out.amplitude.resize(n);
  return out;
}

}  // namespace

Result<PtychoOutput> PtychoNet::Forward(std::span<const float> input, int64_t batch) {
  LOOM_RETURN_IF_ERROR(CheckInput(impl_->model, input, batch));
  std::lock_guard lock(impl_->mu);
  LOOM_ASSIGN_OR_RETURN(Impl::Pipeline * p, impl_->GetPipeline(batch));
  PtychoOutput out = EmptyOutput(impl_->model, batch);
  return CatchDnnl("run the network", [&]() -> Result<PtychoOutput> {
    // The input is only read.
    p->input.set_data_handle(const_cast<float*>(input.data()));
    Run(p->steps, impl_->ctx.stream);
    p->input.set_data_handle(nullptr);
    std::vector<float>* dst[] = {&out.phase, &out.amplitude};
    for (size_t h = 0; h < p->outputs.size(); ++h) {
      std::copy_n(static_cast<const float*>(p->outputs[h].get_data_handle()), dst[h]->size(), dst[h]->data());
    }
    return std::move(out);
  });
}

Result<PtychoOutput> PtychoNet::ForwardReference(std::span<const float> input, int64_t batch) const {
  LOOM_RETURN_IF_ERROR(CheckInput(impl_->model, input, batch));
  const int side = PtychoInputSide(impl_->model);
  nn::Tensor x;
  x.shape = {batch, 1, side, side};
  x.data.assign(input.begin(), input.end());
  auto run = [&](nn::Tensor cur, const std::vector<Layer>& layers) {
    for (const Layer& l : layers) {
      switch (l.kind) {
        case Layer::kConv: {
          const nn::Tensor& b = impl_->W(l.name + ".bias");
          cur = nn::ref::Conv2d(cur, impl_->W(l.name + ".weight"), &b, 1);
          switch (l.act) {
            case PtychoAct::kNone:
              break;
            case PtychoAct::kRelu:
              nn::ref::Relu(&cur);
              break;
            case PtychoAct::kSigmoid:
              nn::ref::Sigmoid(&cur);
              break;
            case PtychoAct::kTanhPi:
              nn::ref::Tanh(&cur, kPi);
              break;
          }
          break;
        }
        case Layer::kPool:
          cur = nn::ref::MaxPool2(cur);
          break;
        case Layer::kUp:
          cur = nn::ref::UpsampleBilinear2x(cur);
          break;
      }
    }
    return cur;
  };
  const nn::Tensor trunk = run(std::move(x), impl_->arch.trunk);
  PtychoOutput out = EmptyOutput(impl_->model, batch);
  std::vector<float>* dst[] = {&out.phase, &out.amplitude};
  for (size_t h = 0; h < impl_->arch.heads.size(); ++h) *dst[h] = run(trunk, impl_->arch.heads[h]).data;
  return out;
}

Result<std::vector<float>> PreprocessEdgeFrame(std::span<const float> frame, int64_t rows, int64_t cols) {
  constexpr int64_t kCrop = 512;
  constexpr int64_t kBin = 4;
  constexpr int64_t kOut = kCrop / kBin;
  if (rows < kCrop || cols < kCrop || static_cast<int64_t>(frame.size()) != rows * cols) {
    return InvalidArgument("ptychonn-edge: a raw frame must be at least 512 x 512 (the detector's is 516 x 516), got " +
                           std::to_string(rows) + " x " + std::to_string(cols) + " with " +
                           std::to_string(frame.size()) + " values");
  }
  const int64_t r0 = (rows - kCrop) / 2;
  const int64_t c0 = (cols - kCrop) / 2;
  std::vector<float> out(static_cast<size_t>(kOut * kOut), 0.f);
  for (int64_t r = 0; r < kCrop; ++r) {
    const float* row = frame.data() + (r0 + r) * cols + c0;
    float* dst = out.data() + (r / kBin) * kOut;
    for (int64_t c = 0; c < kCrop; ++c) {
      const float v = row[c];
      if (!(v >= 0.f) || !std::isfinite(v)) {
        return InvalidArgument("ptychonn-edge: a raw frame holds photon counts, but pixel (" + std::to_string(r0 + r) +
                               ", " + std::to_string(c0 + c) + ") is " + std::to_string(v));
      }
      dst[c / kBin] += v;
    }
  }
  for (float& v : out) v = std::log1p(v / static_cast<float>(kBin * kBin));
  return out;
}

Result<nn::Tensor> DnnlConv3x3(const nn::Tensor& x, const nn::Tensor& weight, const nn::Tensor& bias, PtychoAct act) {
  if (x.shape.size() != 4 || weight.shape.size() != 4 || weight.shape[2] != 3 || weight.shape[3] != 3 ||
      weight.shape[1] != x.shape[1] || bias.shape != std::vector<int64_t>{weight.shape[0]}) {
    return InvalidArgument("DnnlConv3x3: shapes x " + nn::ShapeString(x.shape) + ", weight " +
                           nn::ShapeString(weight.shape) + ", bias " + nn::ShapeString(bias.shape) +
                           " do not fit a 3x3 convolution");
  }
  return RunOneLayer(x, "DnnlConv3x3", [&](Builder& b, const memory& in) {
    return b.Conv(in, weight.data.data(), bias.data.data(), static_cast<int>(weight.shape[1]),
                  static_cast<int>(weight.shape[0]), act);
  });
}

Result<nn::Tensor> DnnlMaxPool2(const nn::Tensor& x) {
  return RunOneLayer(x, "DnnlMaxPool2", [](Builder& b, const memory& in) { return b.Pool(in); });
}

Result<nn::Tensor> DnnlUpsampleBilinear2x(const nn::Tensor& x) {
  return RunOneLayer(x, "DnnlUpsampleBilinear2x", [](Builder& b, const memory& in) { return b.Up(in); });
}

}  // namespace loom::science
