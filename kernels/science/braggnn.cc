#include "kernels/science/braggnn.h"

#include <algorithm>
#include <set>
#include <thread>

#include "kernels/nn/safetensors.h"
#include "kernels/science/lanes.h"
#include "kernels/science/layers.h"

namespace loom::science {
namespace {

constexpr int kH1 = kPatch - 2;  // 9: after conv1 and the non-local block
constexpr int kH2 = kH1 - 2;     // 7: after conv2
constexpr int kH3 = kH2 - 2;     // 5: after conv3
constexpr int kP1 = kH1 * kH1;
constexpr int kP2 = kH2 * kH2;
constexpr int kP3 = kH3 * kH3;
// The attention matrix's rows are padded from 81 to 96 columns (zeros in phi^T), so its product
// runs in whole 32-wide column blocks instead of ending in a scalar column.
constexpr int kLdF = 96;

std::vector<float> Packed(const nn::Tensor& w) {
  std::vector<float> out(w.data.size());
  fast::PackConv(w.data.data(), static_cast<int>(w.dim(0)), static_cast<int>(w.dim(1)), static_cast<int>(w.dim(2)),
                 static_cast<int>(w.dim(3)), out.data());
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> BraggArchitecture::WeightShapes() const {
  std::vector<std::pair<std::string, std::vector<int64_t>>> s;
  auto conv = [&](const std::string& layer, int out, int in, int k) {
    s.push_back({layer + ".weight", {out, in, k, k}});
    s.push_back({layer + ".bias", {out}});
  };
  conv("conv1", conv1, 1, 3);
  conv("nlb.theta", inner, conv1, 1);
  conv("nlb.phi", inner, conv1, 1);
  conv("nlb.g", inner, conv1, 1);
  conv("nlb.out", conv1, inner, 1);
  conv("conv2", conv2, conv1, 3);
  conv("conv3", conv3, conv2, 3);
  int in = conv3 * kP3;
  int i = 1;
  for (int width : dense) {
    s.push_back({"fc" + std::to_string(i) + ".weight", {width, in}});
    s.push_back({"fc" + std::to_string(i) + ".bias", {width}});
    in = width;
    ++i;
  }
  if (final_linear) {
    s.push_back({"fc" + std::to_string(i) + ".weight", {2, in}});
    s.push_back({"fc" + std::to_string(i) + ".bias", {2}});
  }
  return s;
}

int64_t BraggArchitecture::NumParameters() const {
  int64_t n = 0;
  for (const auto& [tensor, shape] : WeightShapes()) n += nn::Tensor::NumElements(shape);
  return n;
}

BraggArchitecture BraggNNArchitecture() {
  return {.name = "braggnn",
          .conv1 = 64,
          .inner = 32,
          .conv2 = 32,
          .conv3 = 8,
          .dense = {16, 8, 4, 2},
          .final_linear = true,
          .activation_after_conv1 = false,
          .slope = 0.01f};
}

BraggArchitecture BraggNNFpgaArchitecture() {
  return {.name = "braggnn-fpga",
          .conv1 = 16,
          .inner = 8,
          .conv2 = 8,
          .conv3 = 2,
          .dense = {16, 8, 4, 2},
          .final_linear = false,
          .activation_after_conv1 = true,
          .slope = 0.0f};
}

void MinMaxNormalise(const float* patch, float* out) {
  const auto [lo, hi] = std::minmax_element(patch, patch + kPatchPixels);
  const float min = *lo;
  const float span = *hi - *lo;
  for (int i = 0; i < kPatchPixels; ++i) out[i] = span > 0 ? (patch[i] - min) / span : 0.0f;
}

Status CheckWeights(const BraggArchitecture& arch, const nn::TensorMap& weights) {
  std::set<std::string> expected;
  for (const auto& [name, shape] : arch.WeightShapes()) {
    auto t = nn::FindTensor(weights, name, shape);
    if (!t.ok()) return InvalidArgument(arch.name + " weights: " + t.status().message());
    expected.insert(name);
  }
  for (const auto& [name, t] : weights) {
    if (!expected.contains(name)) {
      return InvalidArgument(arch.name + " weights: unexpected tensor '" + name + "' " + nn::ShapeString(t.shape) +
                             "; is this another network's weights file?");
    }
  }
  return Status::Ok();
}

namespace {

// Multiply-adds of one patch through the network (the attention's two products included).
int64_t MultiplyAdds(const BraggArchitecture& a) {
  const int64_t p1 = 81, p2 = 49, p3 = 25;  // pixels after conv1, conv2, conv3
  int64_t n = p1 * a.conv1 * 9 + p1 * 3 * a.inner * a.conv1 + 2 * p1 * p1 * a.inner + p1 * a.conv1 * a.inner +
              p2 * a.conv2 * a.conv1 * 9 + p3 * a.conv3 * a.conv2 * 9;
  int64_t width = p3 * a.conv3;
  for (int d : a.dense) {
    n += width * d;
    width = d;
  }
  return n + (a.final_linear ? width * 2 : 0);
}

}  // namespace

Result<BraggNet> BraggNet::Create(BraggArchitecture arch, const nn::TensorMap& weights) {
  LOOM_RETURN_IF_ERROR(CheckWeights(arch, weights));
  BraggNet net;
  net.min_lanes_batch_ = MultiplyAdds(arch) > 1'000'000 ? 8 : 2;
  net.arch_ = std::move(arch);
  net.weights_ = weights;
  const auto& w = net.weights_;
  auto data = [&](const std::string& name) { return w.at(name).data; };
  net.conv1_w_ = Packed(w.at("conv1.weight"));
  net.conv1_b_ = data("conv1.bias");
  // theta, phi and g in one product: [conv1][3 * inner].
  const int c1 = net.arch_.conv1;
  const int in = net.arch_.inner;
  net.tpg_w_.assign(static_cast<size_t>(c1) * 3 * in, 0.0f);
  int part = 0;
  for (const char* name : {"nlb.theta", "nlb.phi", "nlb.g"}) {
    const auto& t = w.at(std::string(name) + ".weight").data;  // [inner, c1, 1, 1]
    const auto& b = w.at(std::string(name) + ".bias").data;
    for (int o = 0; o < in; ++o) {
      for (int i = 0; i < c1; ++i) net.tpg_w_[static_cast<size_t>(i) * 3 * in + part * in + o] = t[o * c1 + i];
      net.tpg_b_.push_back(b[o]);
    }
    ++part;
  }
  net.out_w_ = Packed(w.at("nlb.out.weight"));
  net.out_b_ = data("nlb.out.bias");
  net.conv2_w_ = Packed(w.at("conv2.weight"));
  net.conv2_b_ = data("conv2.bias");
  net.conv3_w_ = Packed(w.at("conv3.weight"));
  net.conv3_b_ = data("conv3.bias");
  for (int l = 0; l < net.arch_.NumDense(); ++l) {
    const nn::Tensor& t = w.at("fc" + std::to_string(l + 1) + ".weight");  // [out, in]
    const int o_n = static_cast<int>(t.dim(0));
    const int i_n = static_cast<int>(t.dim(1));
    std::vector<float> packed(t.data.size());
    for (int o = 0; o < o_n; ++o) {
      for (int i = 0; i < i_n; ++i) {
        int row = i;
        if (l == 0) {  // PyTorch flattens (C, H, W); our features are (H, W, C).
          const int c = i / kP3;
          const int p = i % kP3;
          row = p * net.arch_.conv3 + c;
        }
        packed[static_cast<size_t>(row) * o_n + o] = t.data[static_cast<size_t>(o) * i_n + i];
      }
    }
    net.dense_w_.push_back(std::move(packed));
    net.dense_b_.push_back(data("fc" + std::to_string(l + 1) + ".bias"));
  }
  return net;
}

void BraggNet::Forward(std::span<const float> patches, int64_t n, std::span<float> out, int threads) const {
  LOOM_CHECK(threads >= 1);
  const int64_t blocks = (n + lanes::kLanes - 1) / lanes::kLanes;
  const int64_t workers = std::min<int64_t>(threads, blocks);
  const bool batched = n >= min_lanes_batch_;
  if (workers <= 1) {
    ForwardRange(patches.data(), n, out.data(), batched);
    return;
  }
  // Whole 16-patch blocks per thread, so the split changes no patch's path.
  std::vector<std::jthread> pool;
  for (int64_t t = 0; t < workers; ++t) {
    const int64_t begin = std::min(n, blocks * t / workers * lanes::kLanes);
    const int64_t end = std::min(n, blocks * (t + 1) / workers * lanes::kLanes);
    const int64_t count = end - begin;
    pool.emplace_back([this, &patches, &out, begin, count, batched] {
      ForwardRange(patches.data() + begin * kPatchPixels, count, out.data() + begin * 2, batched);
    });
  }
}

lanes::PackedWeights BraggNet::LanesWeights() const {
  lanes::PackedWeights w;
  w.conv1 = arch_.conv1;
  w.inner = arch_.inner;
  w.conv2 = arch_.conv2;
  w.conv3 = arch_.conv3;
  w.activation_after_conv1 = arch_.activation_after_conv1;
  w.slope = arch_.slope;
  w.conv1_w = conv1_w_.data();
  w.conv1_b = conv1_b_.data();
  w.tpg_w = tpg_w_.data();
  w.tpg_b = tpg_b_.data();
  w.out_w = out_w_.data();
  w.out_b = out_b_.data();
  w.conv2_w = conv2_w_.data();
  w.conv2_b = conv2_b_.data();
  w.conv3_w = conv3_w_.data();
  w.conv3_b = conv3_b_.data();
  w.activated_dense = static_cast<int>(arch_.dense.size());
  for (size_t l = 0; l < dense_w_.size(); ++l) {
    w.dense_w.push_back(dense_w_[l].data());
    w.dense_b.push_back(dense_b_[l].data());
    w.dense_out.push_back(static_cast<int>(dense_b_[l].size()));
  }
  return w;
}

void BraggNet::ForwardRange(const float* patches, int64_t n, float* out, bool batched) const {
  const std::span<const float> in(patches, static_cast<size_t>(n) * kPatchPixels);
  const std::span<float> result(out, static_cast<size_t>(n) * 2);
  if (batched && lanes::Supported(LanesWeights())) {
    ForwardLanes(in, n, result);
  } else {
    ForwardPerPatch(in, n, result);
  }
}

void BraggNet::ForwardLanes(std::span<const float> patches, int64_t n, std::span<float> out) const {
  lanes::Forward(LanesWeights(), patches.data(), n, out.data());
}

void BraggNet::ForwardPerPatch(std::span<const float> patches, int64_t n, std::span<float> out) const {
  const int c1 = arch_.conv1;
  const int in = arch_.inner;
  const int c2 = arch_.conv2;
  const int c3 = arch_.conv3;
  const float slope = arch_.slope;
  const int features = c3 * kP3;
  std::vector<float> x0(kPatchPixels), a1(static_cast<size_t>(kP1) * c1), tpg(static_cast<size_t>(kP1) * 3 * in),
      phi_t(static_cast<size_t>(in) * kLdF, 0.0f), f(static_cast<size_t>(kP1) * kLdF), y(static_cast<size_t>(kP1) * in),
      a2(static_cast<size_t>(kP2) * c2), scratch(static_cast<size_t>(std::max(kP1 * 9, kP2 * 9 * c1)));
  // The dense layers run on the whole batch at once: flatten every patch first.
  std::vector<float> feat(static_cast<size_t>(n) * features);
  for (int64_t s = 0; s < n; ++s) {
    MinMaxNormalise(patches.data() + s * kPatchPixels, x0.data());
    fast::Conv3x3(x0.data(), kPatch, kPatch, 1, conv1_w_.data(), conv1_b_.data(), c1, a1.data(), scratch.data());
    if (arch_.activation_after_conv1) fast::LeakyRelu(a1.data(), static_cast<int64_t>(a1.size()), slope);
    // Non-local block.
    fast::Gemm(kP1, 3 * in, c1, a1.data(), c1, tpg_w_.data(), 3 * in, tpg_b_.data(), tpg.data(), 3 * in);
    for (int p = 0; p < kP1; ++p) {
      for (int c = 0; c < in; ++c) phi_t[c * kLdF + p] = tpg[p * 3 * in + in + c];
    }
    fast::Gemm(kP1, kLdF, in, tpg.data(), 3 * in, phi_t.data(), kLdF, nullptr, f.data(), kLdF);
    fast::SoftmaxRows(f.data(), kP1, kP1, kLdF);
    fast::Gemm(kP1, in, kP1, f.data(), kLdF, tpg.data() + 2 * in, 3 * in, nullptr, y.data(), in);
    fast::Gemm(kP1, c1, in, y.data(), in, out_w_.data(), c1, out_b_.data(), a1.data(), c1, /*accumulate=*/true);
    fast::LeakyRelu(a1.data(), static_cast<int64_t>(a1.size()), slope);
    fast::Conv3x3(a1.data(), kH1, kH1, c1, conv2_w_.data(), conv2_b_.data(), c2, a2.data(), scratch.data());
    fast::LeakyRelu(a2.data(), static_cast<int64_t>(a2.size()), slope);
    float* a3 = feat.data() + s * features;
    fast::Conv3x3(a2.data(), kH2, kH2, c2, conv3_w_.data(), conv3_b_.data(), c3, a3, scratch.data());
    fast::LeakyRelu(a3, features, slope);
  }
  std::vector<float> cur = std::move(feat), next;
  int width = features;
  for (int l = 0; l < arch_.NumDense(); ++l) {
    const int o = static_cast<int>(dense_b_[l].size());
    next.assign(static_cast<size_t>(n) * o, 0.0f);
    fast::Gemm(static_cast<int>(n), o, width, cur.data(), width, dense_w_[l].data(), o, dense_b_[l].data(), next.data(),
               o);
    const bool activate = l < static_cast<int>(arch_.dense.size());
    if (activate) fast::LeakyRelu(next.data(), static_cast<int64_t>(next.size()), slope);
    std::swap(cur, next);
    width = o;
  }
  std::copy(cur.begin(), cur.end(), out.begin());
}

}  // namespace loom::science
