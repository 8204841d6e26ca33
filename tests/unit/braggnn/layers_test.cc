// Each optimised layer (kernels/science/layers.h) against the naive reference (kernels/nn/reference.h).
#include "kernels/science/layers.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/nn/reference.h"

namespace loom::science::fast {
namespace {

nn::Tensor Random(std::vector<int64_t> shape, std::mt19937* rng, float scale = 1.0f) {
  nn::Tensor t(std::move(shape));
  std::uniform_real_distribution<float> u(-scale, scale);
  for (float& v : t.data) v = u(*rng);
  return t;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(LayersTest, GemmEqualsReferenceMatMulForEveryColumnBlockAndRemainder) {
  std::mt19937 rng(1);
  for (auto [m, n, k] : {std::tuple{1, 1, 1},
                         {3, 5, 7},
                         {4, 32, 64},
                         {81, 81, 32},
                         {81, 96, 64},
                         {49, 32, 576},
                         {7, 63, 9},
                         {130, 2, 200}}) {
    const nn::Tensor a = Random({m, k}, &rng);
    const nn::Tensor b = Random({k, n}, &rng);
    const nn::Tensor bias = Random({n}, &rng);
    nn::Tensor want = nn::ref::MatMul(a, b);
    std::vector<float> got(static_cast<size_t>(m) * n);
    Gemm(m, n, k, a.data.data(), k, b.data.data(), n, nullptr, got.data(), n);
    EXPECT_LT(MaxAbsDiff(got, want.data), 1e-4f) << m << "x" << n << "x" << k;
    // With bias and accumulation into c.
    std::vector<float> c(got.size(), 1.0f);
    Gemm(m, n, k, a.data.data(), k, b.data.data(), n, bias.data.data(), c.data(), n, /*accumulate=*/true);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) want.data[i * n + j] += 1.0f + bias.data[j];
    }
    EXPECT_LT(MaxAbsDiff(c, want.data), 1e-4f) << m << "x" << n << "x" << k;
  }
}

// NCHW [1, C, H, W] <-> HWC.
std::vector<float> ToHwc(const nn::Tensor& t) {
  const int64_t c = t.dim(1), hw = t.dim(2) * t.dim(3);
  std::vector<float> out(t.data.size());
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t p = 0; p < hw; ++p) out[p * c + i] = t.data[i * hw + p];
  }
  return out;
}

TEST(LayersTest, Conv3x3EqualsReferenceConv2d) {
  std::mt19937 rng(2);
  for (auto [cin, cout, h] : {std::tuple{1, 64, 11}, {64, 32, 9}, {32, 8, 7}, {1, 16, 11}, {16, 8, 9}, {8, 2, 7}}) {
    const nn::Tensor x = Random({1, cin, h, h}, &rng);
    const nn::Tensor w = Random({cout, cin, 3, 3}, &rng, 0.3f);
    const nn::Tensor b = Random({cout}, &rng);
    const nn::Tensor want = nn::ref::Conv2d(x, w, &b, 0);
    std::vector<float> packed(w.data.size());
    PackConv(w.data.data(), cout, cin, 3, 3, packed.data());
    const std::vector<float> in = ToHwc(x);
    std::vector<float> out(static_cast<size_t>(cout) * (h - 2) * (h - 2));
    std::vector<float> scratch(static_cast<size_t>(h - 2) * (h - 2) * 9 * cin);
    Conv3x3(in.data(), h, h, cin, packed.data(), b.data.data(), cout, out.data(), scratch.data());
    EXPECT_LT(MaxAbsDiff(out, ToHwc(want)), 1e-5f) << cin << "->" << cout;
  }
}

TEST(LayersTest, OneByOneConvAsGemmEqualsReferenceConv2d) {
  std::mt19937 rng(3);
  const nn::Tensor x = Random({1, 64, 9, 9}, &rng);
  const nn::Tensor w = Random({32, 64, 1, 1}, &rng, 0.3f);
  const nn::Tensor b = Random({32}, &rng);
  std::vector<float> packed(w.data.size());
  PackConv(w.data.data(), 32, 64, 1, 1, packed.data());
  const std::vector<float> in = ToHwc(x);
  std::vector<float> out(81 * 32);
  Gemm(81, 32, 64, in.data(), 64, packed.data(), 32, b.data.data(), out.data(), 32);
  EXPECT_LT(MaxAbsDiff(out, ToHwc(nn::ref::Conv2d(x, w, &b, 0))), 1e-5f);
}

TEST(LayersTest, DenseAsGemmEqualsReferenceLinear) {
  std::mt19937 rng(4);
  const nn::Tensor x = Random({37, 200}, &rng);
  const nn::Tensor w = Random({16, 200}, &rng, 0.2f);
  const nn::Tensor b = Random({16}, &rng);
  std::vector<float> wt(w.data.size());
  for (int o = 0; o < 16; ++o) {
    for (int i = 0; i < 200; ++i) wt[i * 16 + o] = w.data[o * 200 + i];
  }
  std::vector<float> out(37 * 16);
  Gemm(37, 16, 200, x.data.data(), 200, wt.data(), 16, b.data.data(), out.data(), 16);
  EXPECT_LT(MaxAbsDiff(out, nn::ref::Linear(x, w, &b).data), 1e-5f);
}

TEST(LayersTest, SoftmaxRowsEqualsReferenceIncludingLargeLogits) {
  std::mt19937 rng(5);
  nn::Tensor x = Random({81, 81}, &rng, 30.0f);
  x.data[5] = 500.0f;  // one dominant logit: the row is one-hot
  std::vector<float> got = x.data;
  nn::ref::SoftmaxLastDim(&x);
  SoftmaxRows(got.data(), 81, 81, 81);
  EXPECT_LT(MaxAbsDiff(got, x.data), 1e-6f);
  EXPECT_FLOAT_EQ(got[5], 1.0f);
}

TEST(LayersTest, ExpIsWithinThreeTenthsOfAMicroOfStdExp) {
  std::vector<float> x;
  for (float v = -100.0f; v <= 100.0f; v += 0.0137f) x.push_back(v);
  std::vector<float> got = x;
  ExpInPlace(got.data(), static_cast<int>(got.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    if (x[i] < -87.0f) {
      EXPECT_EQ(got[i], 0.0f);
    } else if (x[i] > 88.0f) {
      EXPECT_TRUE(std::isinf(got[i]));
    } else {
      EXPECT_LT(std::abs(got[i] - want) / want, 3e-7) << x[i];
    }
  }
}

TEST(LayersTest, LeakyReluEqualsReference) {
  std::mt19937 rng(6);
  nn::Tensor x = Random({1000}, &rng);
  std::vector<float> got = x.data, relu = x.data;
  LeakyRelu(got.data(), 1000, 0.01f);
  LeakyRelu(relu.data(), 1000, 0.0f);
  nn::Tensor want_relu = x;
  nn::ref::LeakyRelu(&x, 0.01f);
  nn::ref::Relu(&want_relu);
  EXPECT_EQ(got, x.data);
  EXPECT_EQ(relu, want_relu.data);
}

}  // namespace
}  // namespace loom::science::fast
