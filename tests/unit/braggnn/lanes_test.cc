// The batched path (kernels/science/lanes.h, 16 patches per vector) against the per-patch path
// and PyTorch's golden outputs, for both networks with random and trained weights, batch sizes
// that leave partial blocks, extreme inputs, and the thread split. Which instruction set runs is
// picked at load time: under valgrind (no AVX-512) these tests check the AVX2 clone.
#include "kernels/science/lanes.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/science/bragg_synth.h"
#include "kernels/science/braggnn.h"
#include "tests/unit/braggnn/braggnn_test_util.h"

namespace loom::science {
namespace {

using testing::GoldenFile;
using testing::MaxAbsDiff;

// The two paths do the same float operations in the same order (lanes.h), so they agree far
// below the golden tolerance; the bound leaves room for a compiler that contracts differently.
constexpr float kPathTolerance = 1e-6f;

struct Net {
  GoldenFile golden;
  BraggNet net;
};

Net Load(const std::string& stem) {
  GoldenFile golden = GoldenFile::Load(stem);
  auto net = BraggNet::Create(golden.fpga ? BraggNNFpgaArchitecture() : BraggNNArchitecture(), golden.weights);
  EXPECT_TRUE(net.ok()) << net.status().message();
  return {std::move(golden), std::move(*net)};
}

std::vector<float> PerPatch(const BraggNet& net, const std::vector<float>& patches) {
  const int64_t n = static_cast<int64_t>(patches.size()) / kPatchPixels;
  std::vector<float> out(n * 2);
  net.ForwardPerPatch(patches, n, out);
  return out;
}

std::vector<float> Lanes(const BraggNet& net, const std::vector<float>& patches) {
  const int64_t n = static_cast<int64_t>(patches.size()) / kPatchPixels;
  std::vector<float> out(n * 2, -1.0f);
  net.ForwardLanes(patches, n, out);
  return out;
}

class LanesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LanesTest, EqualsPyTorchGoldenOutputs) {
  const Net n = Load(GetParam());
  ASSERT_GE(n.golden.n, lanes::kLanes);  // a whole block: the batched path is the one Forward takes
  EXPECT_LE(MaxAbsDiff(Lanes(n.net, n.golden.input), n.golden.output), 1e-5f);
  std::vector<float> out(n.golden.n * 2);
  n.net.Forward(n.golden.input, n.golden.n, out);
  EXPECT_LE(MaxAbsDiff(out, n.golden.output), 1e-5f);
}

TEST_P(LanesTest, EqualsThePerPatchPathForEveryBatchSize) {
  const Net n = Load(GetParam());
  const SyntheticPeaks peaks = GeneratePeaks(1000, 7);
  for (int64_t batch : {1, 15, 16, 17, 33, 1000}) {
    const std::vector<float> in(peaks.patches.begin(), peaks.patches.begin() + batch * kPatchPixels);
    const std::vector<float> want = PerPatch(n.net, in);
    const std::vector<float> got = Lanes(n.net, in);
    EXPECT_LE(MaxAbsDiff(got, want), kPathTolerance) << "batch " << batch;
    std::vector<float> forward(batch * 2);
    n.net.Forward(in, batch, forward);
    EXPECT_LE(MaxAbsDiff(forward, want), kPathTolerance) << "batch " << batch;
  }
}

TEST_P(LanesTest, EqualsThePerPatchPathOnExtremeInputs) {
  const Net n = Load(GetParam());
  std::mt19937 rng(11);
  std::vector<float> in;
  auto add = [&](auto pixel) {
    for (int p = 0; p < kPatchPixels; ++p) in.push_back(pixel(p));
  };
  add([](int) { return 42.0f; });                                                     // constant: normalises to zeros
  add([](int) { return 0.0f; });                                                      // all zero
  add([](int p) { return p == 60 ? 1.0f : 0.0f; });                                   // one hot pixel
  add([](int p) { return p == 0 ? 3e38f : 0.0f; });                                   // near float's largest
  add([](int p) { return p == 120 ? -3e38f : 1.0f; });                                // and its most negative
  add([](int p) { return 1e7f + static_cast<float>(p % 7); });                        // large offset, small span
  add([](int p) { return static_cast<float>(p) * 1e-30f; });                          // tiny span
  add([&](int) { return std::uniform_real_distribution<float>(-1e6f, 1e6f)(rng); });  // noise, negative counts
  const int64_t distinct = static_cast<int64_t>(in.size()) / kPatchPixels;
  // The same patches at every lane position and in a partial block.
  for (int64_t i = distinct; i < 37; ++i) {
    in.insert(in.end(), in.begin() + (i % distinct) * kPatchPixels, in.begin() + (i % distinct + 1) * kPatchPixels);
  }
  const std::vector<float> want = PerPatch(n.net, in);
  const std::vector<float> got = Lanes(n.net, in);
  for (float v : got) EXPECT_TRUE(std::isfinite(v));
  EXPECT_LE(MaxAbsDiff(got, want), kPathTolerance);
}

TEST_P(LanesTest, ThreadsSplitTheBatchWithoutChangingAnyAnswer) {
  const Net n = Load(GetParam());
  const SyntheticPeaks peaks = GeneratePeaks(1000, 8);
  for (int64_t batch : {17, 1000}) {
    const std::span<const float> in(peaks.patches.data(), batch * kPatchPixels);
    std::vector<float> one(batch * 2), many(batch * 2);
    n.net.Forward(in, batch, one);
    for (int threads : {2, 3, 64}) {
      n.net.Forward(in, batch, many, threads);
      EXPECT_EQ(many, one) << batch << " patches, " << threads << " threads";
    }
  }
}

// Forward takes the 16-patch path from min_lanes_batch() patches on (a padded block is cheaper
// than that many single patches): exactly that path's answers on each side of the threshold.
TEST_P(LanesTest, ForwardTakesTheBlockPathFromTheNetworksThreshold) {
  const Net n = Load(GetParam());
  EXPECT_EQ(n.net.min_lanes_batch(), n.golden.fpga ? 2 : 8);
  const SyntheticPeaks peaks = GeneratePeaks(16, 9);
  const int64_t t = n.net.min_lanes_batch();
  for (int64_t batch : {int64_t{1}, t - 1, t, int64_t{15}}) {
    if (batch < 1) continue;
    const std::vector<float> in(peaks.patches.begin(), peaks.patches.begin() + batch * kPatchPixels);
    std::vector<float> forward(batch * 2);
    n.net.Forward(in, batch, forward);
    EXPECT_EQ(forward, batch >= t ? Lanes(n.net, in) : PerPatch(n.net, in)) << "batch " << batch;
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, LanesTest,
                         ::testing::Values("golden_braggnn_random", "golden_braggnn_trained",
                                           "golden_braggnn_fpga_random", "golden_braggnn_fpga_trained"));

}  // namespace
}  // namespace loom::science
