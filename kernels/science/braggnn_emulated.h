// A BraggNN architecture (braggnn.h) computed in a small floating-point format exactly as an FPGA
// datapath built from that format's operators would (minifloat.h): the accuracy cost of the
// format, measured without the hardware. Slow on purpose (one rounding per operation).
//
// What is rounded, and in what order:
//  - weights and biases are rounded to the format once, at load;
//  - the input patch is min-max normalised on the host in float32 (as for the float32 build),
//    then rounded to the format;
//  - a convolution or dense output starts from its bias and adds the products one at a time,
//    each product rounded and each sum rounded: acc = R(acc + R(w * x)), inputs in (channel,
//    kernel row, kernel column) order, dense inputs in index order;
//  - non-local block: f[i][j] = sum over c of theta[c][i] * phi[c][j] (from 0, c ascending);
//    softmax over j as m = max_j f, e = R(exp(R(f - m))), s = sum of e (j ascending),
//    p = R(e / s); y[c][i] = sum over j of p[i][j] * g[c][j] (from 0, j ascending); the block's
//    output conv is then added to its input with one more rounded add;
//  - activations: ReLU is exact; LeakyReLU's negative side is R(slope * x), slope rounded too.
// Immutable after Create; Forward is thread-safe.
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/nn/tensor.h"
#include "kernels/science/braggnn.h"
#include "kernels/science/minifloat.h"

namespace loom::science {

class EmulatedBraggNet {
 public:
  static Result<EmulatedBraggNet> Create(BraggArchitecture arch, const nn::TensorMap& weights, FloatFormat format);

  const BraggArchitecture& arch() const { return arch_; }
  const FloatFormat& format() const { return arith_.format(); }

  // As BraggNet::Forward: raw patches [n, 11, 11] -> [n, 2] (column, row) / 11, each output
  // a value of the format (returned as float).
  void Forward(std::span<const float> patches, int64_t n, std::span<float> out) const;

 private:
  EmulatedBraggNet(BraggArchitecture arch, FloatFormat format) : arch_(std::move(arch)), arith_(format) {}

  struct Layer {
    std::vector<double> w, b;  // PyTorch layouts, rounded to the format
  };
  // Valid conv, stride 1: x [cin, h, w] -> [cout, h - k + 1, w - k + 1].
  std::vector<double> Conv(const Layer& l, const std::vector<double>& x, int cin, int h, int cout, int k) const;
  std::vector<double> Dense(const Layer& l, const std::vector<double>& x, int in, int out) const;
  void Activate(std::vector<double>* x) const;

  BraggArchitecture arch_;
  MiniFloatArith arith_;
  std::map<std::string, Layer> layers_;  // "conv1", "nlb.theta", ..., "fc1", ...
};

}  // namespace loom::science
