// PtychoNN: phase retrieval from one far-field diffraction pattern by a convolutional network,
// on the CPU with oneDNN. Two architectures (docs/KERNELS-PTYCHONN.md):
//
//   kOriginal (Cherukara et al., APL 2020): input 1x64x64; 3x3 convolutions (padding 1) + ReLU;
//     encoder [32,32]-maxpool-[64,64]-maxpool-[128,128]-maxpool; two decoders with separate
//     weights, each [128,128]-up-[64,64]-up-[64,64]-up-conv 64->1; amplitude = sigmoid, phase =
//     tanh * pi. 1,247,074 parameters.
//   kEdge (Babu et al., Nat. Commun. 2023): phase only, input 1x128x128; encoder 16,32,64,128
//     (conv-relu-conv-relu-maxpool each), decoder 128,64,32,16 (conv-relu-conv-relu-up each),
//     conv 16->1, tanh * pi. 733,921 parameters.
//
// "up" is bilinear x2 with half-pixel centres (PyTorch align_corners=False). Weights are named as
// the PyTorch reference's state_dict (tools/ptychonn/models.py): "encoder.<i>.weight", ...
//
// PtychoNet builds one oneDNN pipeline per batch size on first use (primitives created, weights
// reordered into the layouts the convolutions want) and keeps it (up to max_pipelines batch sizes;
// beyond, the smallest batch size's pipeline is dropped): later batches of that size only execute. Convolutions fuse
// their ReLU / sigmoid / tanh*pi as post-ops.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "kernels/nn/tensor.h"

namespace loom::science {

enum class PtychoModel { kOriginal, kEdge };

const char* PtychoModelName(PtychoModel model);  // "ptychonn", "ptychonn-edge"
int PtychoInputSide(PtychoModel model);          // 64, 128
bool PtychoHasAmplitude(PtychoModel model);

// Every weight tensor the architecture needs, name -> shape, in layer order.
std::vector<std::pair<std::string, std::vector<int64_t>>> PtychoWeightShapes(PtychoModel model);
int64_t PtychoParameterCount(PtychoModel model);

// Seeded random weights, the same as tools/ptychonn/models.py's seeded_weights: element k
// (counting through PtychoWeightShapes in order) is uniform in +-1/sqrt(fan_in) from
// splitmix64(seed * 2^40 + k), computed in double and rounded to float.
nn::TensorMap SeededPtychoWeights(PtychoModel model, uint64_t seed);

// Checks that `weights` holds exactly the architecture's tensors with their shapes and finite
// values; the error names the first tensor that is missing, extra, misshapen or not finite.
Status CheckPtychoWeights(PtychoModel model, const nn::TensorMap& weights);

// Outputs for a batch, each [batch, side, side] row-major. amplitude is empty for kEdge.
struct PtychoOutput {
  int64_t batch = 0;
  int side = 0;
  std::vector<float> amplitude;
  std::vector<float> phase;
};

// Thread-safe: Forward calls are serialised (one oneDNN stream; a worker runs one task at a time).
class PtychoNet {
 public:
  static constexpr size_t kDefaultMaxPipelines = 16;
  static Result<std::unique_ptr<PtychoNet>> Create(PtychoModel model, nn::TensorMap weights,
                                                   size_t max_pipelines = kDefaultMaxPipelines);
  ~PtychoNet();
  PtychoNet(const PtychoNet&) = delete;
  PtychoNet& operator=(const PtychoNet&) = delete;

  PtychoModel model() const;
  // input: batch * side * side floats (the network's input, see PreprocessEdgeFrame for kEdge).
  // REQUIRES nothing: a wrong size or batch < 1 is an InvalidArgument.
  Result<PtychoOutput> Forward(std::span<const float> input, int64_t batch);
  // The same network through loom::nn::ref's naive layers (for tests).
  Result<PtychoOutput> ForwardReference(std::span<const float> input, int64_t batch) const;
  // How many batch sizes have a built pipeline.
  size_t cached_pipelines() const;

 private:
  struct Impl;
  explicit PtychoNet(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The edge model's preprocessing of one raw detector frame (rows x cols, row-major photon counts,
// at least 512 x 512; the detector's is 516 x 516): the centred 512 x 512 crop, 4x4 mean-binned to
// 128 x 128, then log1p (the networks here are trained on log1p photon counts). Negative or
// non-finite counts are an InvalidArgument naming the pixel.
Result<std::vector<float>> PreprocessEdgeFrame(std::span<const float> frame, int64_t rows, int64_t cols);

// oneDNN layers on their own, each NCHW in and out, for tests against loom::nn::ref. They build
// and run a one-step pipeline with the same code PtychoNet uses.
enum class PtychoAct { kNone, kRelu, kSigmoid, kTanhPi };
Result<nn::Tensor> DnnlConv3x3(const nn::Tensor& x, const nn::Tensor& weight, const nn::Tensor& bias, PtychoAct act);
Result<nn::Tensor> DnnlMaxPool2(const nn::Tensor& x);
Result<nn::Tensor> DnnlUpsampleBilinear2x(const nn::Tensor& x);

}  // namespace loom::science
