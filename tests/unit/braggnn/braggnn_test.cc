// BraggNN and the FPGA-class network in float32: parameter counts, equality with a network
// composed of the naive reference layers, equality with PyTorch's golden outputs, and the
// errors for bad weights.
#include "kernels/science/braggnn.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "kernels/nn/reference.h"
#include "kernels/nn/safetensors.h"
#include "tests/unit/braggnn/braggnn_test_util.h"

namespace loom::science {
namespace {

using testing::GoldenFile;
using testing::MaxAbsDiff;

TEST(BraggNNTest, ParameterCountsAreThePapers) {
  EXPECT_EQ(BraggNNArchitecture().NumParameters(), 33172);
  EXPECT_EQ(BraggNNFpgaArchitecture().NumParameters(), 3016);
}

// The whole network from kernels/nn/reference.h layers, NCHW, straight from the PyTorch model.
std::vector<float> ReferenceForward(const BraggArchitecture& arch, const nn::TensorMap& w,
                                    const std::vector<float>& raw, int64_t n) {
  auto act = [&](nn::Tensor* t) { nn::ref::LeakyRelu(t, arch.slope); };
  nn::Tensor x({n, 1, kPatch, kPatch});
  for (int64_t s = 0; s < n; ++s) MinMaxNormalise(raw.data() + s * kPatchPixels, x.data.data() + s * kPatchPixels);
  auto conv = [&](const nn::Tensor& in, const std::string& name) {
    return nn::ref::Conv2d(in, w.at(name + ".weight"), &w.at(name + ".bias"), 0);
  };
  nn::Tensor a1 = conv(x, "conv1");
  if (arch.activation_after_conv1) act(&a1);
  const nn::Tensor theta = conv(a1, "nlb.theta"), phi = conv(a1, "nlb.phi"), g = conv(a1, "nlb.g");
  const int64_t c = arch.inner, p = 81;
  nn::Tensor y({n, c, 9, 9});
  for (int64_t s = 0; s < n; ++s) {
    nn::Tensor tt({p, c}), ph({c, p}), gt({p, c});
    for (int64_t i = 0; i < c; ++i) {
      for (int64_t j = 0; j < p; ++j) {
        tt.data[j * c + i] = theta.data[(s * c + i) * p + j];
        ph.data[i * p + j] = phi.data[(s * c + i) * p + j];
        gt.data[j * c + i] = g.data[(s * c + i) * p + j];
      }
    }
    nn::Tensor f = nn::ref::MatMul(tt, ph);
    nn::ref::SoftmaxLastDim(&f);
    const nn::Tensor yy = nn::ref::MatMul(f, gt);  // [p, c]
    for (int64_t i = 0; i < c; ++i) {
      for (int64_t j = 0; j < p; ++j) y.data[(s * c + i) * p + j] = yy.data[j * c + i];
    }
  }
  nn::Tensor a = conv(y, "nlb.out");
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] += a1.data[i];
  act(&a);
  a = conv(a, "conv2");
  act(&a);
  a = conv(a, "conv3");
  act(&a);
  a.shape = {n, a.numel() / n};
  for (int l = 0; l < arch.NumDense(); ++l) {
    const std::string name = "fc" + std::to_string(l + 1);
    a = nn::ref::Linear(a, w.at(name + ".weight"), &w.at(name + ".bias"));
    if (l < static_cast<int>(arch.dense.size())) act(&a);
  }
  return a.data;
}

class BraggNetGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BraggNetGoldenTest, ForwardEqualsPyTorchAndTheReferenceLayers) {
  const GoldenFile golden = GoldenFile::Load(GetParam());
  const BraggArchitecture arch = golden.fpga ? BraggNNFpgaArchitecture() : BraggNNArchitecture();
  auto net = BraggNet::Create(arch, golden.weights);
  ASSERT_TRUE(net.ok()) << net.status().message();
  std::vector<float> out(golden.n * 2);
  net->Forward(golden.input, golden.n, out);
  EXPECT_LE(MaxAbsDiff(out, golden.output), 1e-5f);
  EXPECT_LE(MaxAbsDiff(out, ReferenceForward(arch, golden.weights, golden.input, golden.n)), 1e-5f);
  // One patch at a time gives the batch's answers.
  for (int64_t s = 0; s < golden.n; ++s) {
    std::vector<float> one(2);
    net->Forward(std::span(golden.input).subspan(s * kPatchPixels, kPatchPixels), 1, one);
    EXPECT_LE(std::abs(one[0] - out[s * 2]), 1e-6f);
    EXPECT_LE(std::abs(one[1] - out[s * 2 + 1]), 1e-6f);
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, BraggNetGoldenTest,
                         ::testing::Values("golden_braggnn_random", "golden_braggnn_trained",
                                           "golden_braggnn_fpga_random", "golden_braggnn_fpga_trained"));

TEST(BraggNNTest, ConstantPatchNormalisesToZeros) {
  std::vector<float> patch(kPatchPixels, 42.0f), out(kPatchPixels, 1.0f);
  MinMaxNormalise(patch.data(), out.data());
  for (float v : out) EXPECT_EQ(v, 0.0f);
  patch[3] = 52.0f;
  MinMaxNormalise(patch.data(), out.data());
  EXPECT_EQ(out[3], 1.0f);
  EXPECT_EQ(out[0], 0.0f);
}

TEST(BraggNNTest, BadWeightsAreRefusedNamingTheTensorAndShape) {
  const GoldenFile golden = GoldenFile::Load("golden_braggnn_random");
  nn::TensorMap w = golden.weights;
  w.erase("nlb.phi.bias");
  auto missing = BraggNet::Create(BraggNNArchitecture(), w);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nlb.phi.bias"), std::string::npos) << missing.status().message();

  w = golden.weights;
  w["conv2.weight"] = nn::Tensor({32, 64, 3, 2});
  auto misshapen = BraggNet::Create(BraggNNArchitecture(), w);
  ASSERT_FALSE(misshapen.ok());
  EXPECT_NE(misshapen.status().message().find("conv2.weight"), std::string::npos);
  EXPECT_NE(misshapen.status().message().find("[32, 64, 3, 3]"), std::string::npos) << misshapen.status().message();

  w = golden.weights;
  w["extra"] = nn::Tensor({1});
  auto extra = BraggNet::Create(BraggNNArchitecture(), w);
  ASSERT_FALSE(extra.ok());
  EXPECT_NE(extra.status().message().find("unexpected tensor 'extra'"), std::string::npos);

  // The FPGA-class network's weights are not BraggNN's.
  auto other = BraggNet::Create(BraggNNArchitecture(), GoldenFile::Load("golden_braggnn_fpga_random").weights);
  EXPECT_FALSE(other.ok());
}

}  // namespace
}  // namespace loom::science
