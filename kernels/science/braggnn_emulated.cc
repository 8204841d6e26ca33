#include "kernels/science/braggnn_emulated.h"

#include <algorithm>
#include <cmath>

namespace loom::science {

Result<EmulatedBraggNet> EmulatedBraggNet::Create(BraggArchitecture arch, const nn::TensorMap& weights,
                                                  FloatFormat format) {
  LOOM_RETURN_IF_ERROR(CheckWeights(arch, weights));
  EmulatedBraggNet net(std::move(arch), format);
  for (const auto& [name, shape] : net.arch_.WeightShapes()) {
    const bool is_bias = name.ends_with(".bias");
    const std::string layer = name.substr(0, name.rfind('.'));
    auto& dst = is_bias ? net.layers_[layer].b : net.layers_[layer].w;
    for (float v : weights.at(name).data) dst.push_back(net.arith_.Round(v));
  }
  return net;
}

std::vector<double> EmulatedBraggNet::Conv(const Layer& l, const std::vector<double>& x, int cin, int h, int cout,
                                           int k) const {
  const int oh = h - k + 1;
  std::vector<double> y(static_cast<size_t>(cout) * oh * oh);
  for (int o = 0; o < cout; ++o) {
    for (int r = 0; r < oh; ++r) {
      for (int c = 0; c < oh; ++c) {
        double acc = l.b[o];
        for (int i = 0; i < cin; ++i) {
          for (int ky = 0; ky < k; ++ky) {
            for (int kx = 0; kx < k; ++kx) {
              const double w = l.w[((static_cast<size_t>(o) * cin + i) * k + ky) * k + kx];
              acc = arith_.Add(acc, arith_.Mul(w, x[(static_cast<size_t>(i) * h + r + ky) * h + c + kx]));
            }
          }
        }
        y[(static_cast<size_t>(o) * oh + r) * oh + c] = acc;
      }
    }
  }
  return y;
}

std::vector<double> EmulatedBraggNet::Dense(const Layer& l, const std::vector<double>& x, int in, int out) const {
  std::vector<double> y(out);
  for (int o = 0; o < out; ++o) {
    double acc = l.b[o];
    for (int i = 0; i < in; ++i) acc = arith_.Add(acc, arith_.Mul(l.w[static_cast<size_t>(o) * in + i], x[i]));
    y[o] = acc;
  }
  return y;
}

void EmulatedBraggNet::Activate(std::vector<double>* x) const {
  const double slope = arith_.Round(arch_.slope);
  for (double& v : *x) v = v > 0 ? v : (slope == 0 ? 0.0 : arith_.Mul(slope, v));
}

void EmulatedBraggNet::Forward(std::span<const float> patches, int64_t n, std::span<float> out) const {
  const int c1 = arch_.conv1;
  const int in = arch_.inner;
  constexpr int h1 = kPatch - 2;
  constexpr int p1 = h1 * h1;
  std::vector<float> norm(kPatchPixels);
  for (int64_t s = 0; s < n; ++s) {
    MinMaxNormalise(patches.data() + s * kPatchPixels, norm.data());
    std::vector<double> x(norm.begin(), norm.end());
    for (double& v : x) v = arith_.Round(v);
    std::vector<double> a1 = Conv(layers_.at("conv1"), x, 1, kPatch, c1, 3);
    if (arch_.activation_after_conv1) Activate(&a1);
    const auto theta = Conv(layers_.at("nlb.theta"), a1, c1, h1, in, 1);  // [inner, 81]
    const auto phi = Conv(layers_.at("nlb.phi"), a1, c1, h1, in, 1);
    const auto g = Conv(layers_.at("nlb.g"), a1, c1, h1, in, 1);
    std::vector<double> y(static_cast<size_t>(in) * p1), row(p1);
    for (int i = 0; i < p1; ++i) {
      for (int j = 0; j < p1; ++j) {
        double acc = 0;
        for (int c = 0; c < in; ++c) acc = arith_.Add(acc, arith_.Mul(theta[c * p1 + i], phi[c * p1 + j]));
        row[j] = acc;
      }
      const double m = *std::max_element(row.begin(), row.end());
      double sum = 0;
      for (double& v : row) {
        v = arith_.Exp(arith_.Sub(v, m));
        sum = arith_.Add(sum, v);
      }
      for (double& v : row) v = arith_.Div(v, sum);
      for (int c = 0; c < in; ++c) {
        double acc = 0;
        for (int j = 0; j < p1; ++j) acc = arith_.Add(acc, arith_.Mul(row[j], g[c * p1 + j]));
        y[static_cast<size_t>(c) * p1 + i] = acc;
      }
    }
    std::vector<double> a = Conv(layers_.at("nlb.out"), y, in, h1, c1, 1);
    for (size_t i = 0; i < a.size(); ++i) a[i] = arith_.Add(a[i], a1[i]);
    Activate(&a);
    a = Conv(layers_.at("conv2"), a, c1, h1, arch_.conv2, 3);
    Activate(&a);
    a = Conv(layers_.at("conv3"), a, arch_.conv2, h1 - 2, arch_.conv3, 3);
    Activate(&a);  // [conv3, 5, 5]: already PyTorch's (C, H, W) flatten order
    int width = static_cast<int>(a.size());
    for (int l = 0; l < arch_.NumDense(); ++l) {
      const Layer& layer = layers_.at("fc" + std::to_string(l + 1));
      const int o = static_cast<int>(layer.b.size());
      a = Dense(layer, a, width, o);
      if (l < static_cast<int>(arch_.dense.size())) Activate(&a);
      width = o;
    }
    for (int k = 0; k < 2; ++k) out[s * 2 + k] = static_cast<float>(a[k]);
  }
}

}  // namespace loom::science
