// BraggNN (Liu et al., IUCrJ 2022): locates the centre of a Bragg peak in an 11x11 detector patch.
// Two architectures share one implementation:
//
//   BraggNN (the public reference code's network, 33,172 parameters): per-patch min-max
//   normalisation; conv 3x3 1->64 (no activation); non-local block 64->32->64 (theta, phi, g:
//   1x1 convs; f = softmax(theta^T phi) over the last axis; y = f g^T; 1x1 conv back; + input);
//   LeakyReLU(0.01); conv 3x3 64->32 + LeakyReLU; conv 3x3 32->8 + LeakyReLU; flatten (C, H, W);
//   dense 200->16->8->4->2 each + LeakyReLU; linear 2->2.
//
//   FPGA-class BraggNN (OpenHLS, Levental et al. 2023, 3,016 parameters): conv 1->16; non-local
//   16->8->16; conv 16->8; conv 8->2; dense 50->16->8->4->2; ReLU after every layer (the last
//   included).
//
// Output: the peak centre (column, row) in pixels divided by 11, pixel centres at 0..10.
//
// Weights are PyTorch's state dict names and shapes (tools/braggnn/model.py):
//   conv1.{weight,bias}, nlb.{theta,phi,g,out}.{weight,bias}, conv2.*, conv3.*, fc1.* .. fcK.*
// A missing, misshapen or unexpected tensor is an error naming it and the expected shape.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/nn/tensor.h"
#include "kernels/science/lanes.h"

namespace loom::science {

inline constexpr int kPatch = 11;  // input patches are kPatch x kPatch
inline constexpr int kPatchPixels = kPatch * kPatch;

struct BraggArchitecture {
  std::string name;
  int conv1 = 0;              // conv1 output channels
  int inner = 0;              // non-local block's inner channels
  int conv2 = 0;              // conv2 output channels
  int conv3 = 0;              // conv3 output channels (flattened: conv3 * 5 * 5)
  std::vector<int> dense;     // dense layer widths after the flatten, each followed by the activation
  bool final_linear = false;  // a last linear 2->2 without activation
  bool activation_after_conv1 = false;
  float slope = 0.0f;  // activation: max(x, slope * x); 0 is ReLU

  int NumDense() const { return static_cast<int>(dense.size()) + (final_linear ? 1 : 0); }
  // Every weight tensor's name and shape, in forward order.
  std::vector<std::pair<std::string, std::vector<int64_t>>> WeightShapes() const;
  int64_t NumParameters() const;
};

BraggArchitecture BraggNNArchitecture();
BraggArchitecture BraggNNFpgaArchitecture();

// Per-patch min-max normalisation to [0, 1] in float32, as the reference: (p - min) / (max - min);
// a constant patch becomes zeros.
void MinMaxNormalise(const float* patch, float* out);

// Checks `weights` against `arch`: every tensor present with its shape, nothing else.
Status CheckWeights(const BraggArchitecture& arch, const nn::TensorMap& weights);

// The network in float32 on the CPU (kernels/science/layers.h). Immutable after Create, so
// Forward is thread-safe.
class BraggNet {
 public:
  static Result<BraggNet> Create(BraggArchitecture arch, const nn::TensorMap& weights);

  const BraggArchitecture& arch() const { return arch_; }
  const nn::TensorMap& weights() const { return weights_; }

  // patches: n raw patches [n, 11, 11] (normalised here); out: [n, 2] (column, row) / 11.
  // Batches of min_lanes_batch() patches or more run 16 at a time (kernels/science/lanes.h; a
  // last partial block is padded), smaller ones one patch at a time; both give the same answers
  // to float rounding. `threads` > 1 splits the batch across that many threads (whole 16-patch
  // blocks each).
  // REQUIRES: patches.size() == n * 121, out.size() == n * 2, threads >= 1.
  void Forward(std::span<const float> patches, int64_t n, std::span<float> out, int threads = 1) const;

  // Each path alone, whatever n (tests compare the two). ForwardLanes pads a last block of
  // fewer than 16 patches with zero patches.
  void ForwardPerPatch(std::span<const float> patches, int64_t n, std::span<float> out) const;
  void ForwardLanes(std::span<const float> patches, int64_t n, std::span<float> out) const;

  // The smallest batch that takes the 16-patch path: where one padded block costs less than
  // that many patches one at a time. A block of the full BraggNN (2.1M multiply-adds a patch)
  // costs about 6 patches' time on the per-patch path, so 8; one of the FPGA-class network
  // (0.2M) about 1.4, so 2 (measured on the 2-vCPU VM: docs/KERNELS-BRAGGNN.md).
  int64_t min_lanes_batch() const { return min_lanes_batch_; }

 private:
  BraggNet() = default;

  // `batched`: the whole call has min_lanes_batch_ patches or more, so this share of it
  // (whatever its size) takes the lanes path.
  void ForwardRange(const float* patches, int64_t n, float* out, bool batched) const;
  lanes::PackedWeights LanesWeights() const;

  BraggArchitecture arch_;
  int64_t min_lanes_batch_ = lanes::kLanes;
  nn::TensorMap weights_;  // as given (PyTorch layouts), for the emulated build and export
  std::vector<float> conv1_w_, conv1_b_, tpg_w_, tpg_b_, out_w_, out_b_, conv2_w_, conv2_b_, conv3_w_, conv3_b_;
  std::vector<std::vector<float>> dense_w_, dense_b_;  // [in][out] packed, fc1's rows in (H, W, C) order
};

}  // namespace loom::science
