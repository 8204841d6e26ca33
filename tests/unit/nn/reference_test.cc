// The reference layers against values worked by hand or printed by PyTorch.
#include "kernels/nn/reference.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace loom::nn::ref {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::Pointwise;

TEST(ReferenceTest, Conv2dWithAndWithoutPadding) {
  Tensor x({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w({1, 1, 2, 2}, {1, 0, 0, -1});
  Tensor b({1}, {10});
  Tensor y = Conv2d(x, w, &b, 0);
  EXPECT_THAT(y.shape, ElementsAre(1, 1, 2, 2));
  EXPECT_THAT(y.data, ElementsAre(6, 6, 6, 6));  // x[i][j] - x[i+1][j+1] + 10 = -4 + 10
  // 3x3 of ones, padding 1: each output sums the input's neighbourhood.
  Tensor ones({1, 1, 3, 3}, std::vector<float>(9, 1.0f));
  Tensor y2 = Conv2d(x, ones, nullptr, 1);
  EXPECT_THAT(y2.shape, ElementsAre(1, 1, 3, 3));
  EXPECT_THAT(y2.data, ElementsAre(12, 21, 16, 27, 45, 33, 24, 39, 28));
  // Two input channels, two output channels, batch of two.
  Tensor x2({2, 2, 1, 1}, {1, 2, 3, 4});
  Tensor w2({2, 2, 1, 1}, {1, 1, 1, -1});
  EXPECT_THAT(Conv2d(x2, w2, nullptr, 0).data, ElementsAre(3, -1, 7, -1));
}

TEST(ReferenceTest, LinearAndMatMul) {
  Tensor x({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor w({2, 3}, {1, 0, 0, 0, 1, 1});
  Tensor b({2}, {0.5f, -1});
  EXPECT_THAT(Linear(x, w, &b).data, ElementsAre(1.5f, 4, 4.5f, 10));
  Tensor wt({3, 2}, {1, 0, 0, 1, 0, 1});
  EXPECT_THAT(MatMul(x, wt).data, ElementsAre(1, 5, 4, 11));
}

TEST(ReferenceTest, MaxPoolFloorsOddSizes) {
  Tensor x({1, 1, 3, 3}, {1, 5, 2, 3, 4, 9, 0, 0, 0});
  Tensor y = MaxPool2(x);
  EXPECT_THAT(y.shape, ElementsAre(1, 1, 1, 1));
  EXPECT_THAT(y.data, ElementsAre(5));
}

TEST(ReferenceTest, BilinearUpsampleMatchesPyTorchHalfPixelCentres) {
  // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), scale_factor=2,
  //                                 mode="bilinear", align_corners=False)
  Tensor x({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor y = UpsampleBilinear2x(x);
  EXPECT_THAT(y.shape, ElementsAre(1, 1, 4, 4));
  const std::vector<float> expected = {1.0f, 1.25f, 1.75f, 2.0f, 1.5f, 1.75f, 2.25f, 2.5f,
                                       2.5f, 2.75f, 3.25f, 3.5f, 3.0f, 3.25f, 3.75f, 4.0f};
  EXPECT_THAT(y.data, Pointwise(FloatNear(1e-6f), expected));
}

TEST(ReferenceTest, Activations) {
  Tensor s({2, 2}, {0, std::log(3.0f), 1000, 1000});
  SoftmaxLastDim(&s);
  EXPECT_THAT(s.data, Pointwise(FloatNear(1e-6f), std::vector<float>{0.25f, 0.75f, 0.5f, 0.5f}));
  Tensor a({4}, {-2, -0.5f, 0, 3});
  Tensor l = a, r = a, g = a, t = a;
  LeakyRelu(&l, 0.01f);
  EXPECT_THAT(l.data, ElementsAre(-0.02f, -0.005f, 0, 3));
  Relu(&r);
  EXPECT_THAT(r.data, ElementsAre(0, 0, 0, 3));
  Sigmoid(&g);
  EXPECT_THAT(g.data[2], 0.5f);
  EXPECT_THAT(g.data[0], FloatNear(1 / (1 + std::exp(2.0f)), 1e-7f));
  Tanh(&t, static_cast<float>(M_PI));
  EXPECT_THAT(t.data[3], FloatNear(static_cast<float>(M_PI * std::tanh(3.0)), 1e-6f));
  EXPECT_THAT(t.data, ::testing::Each(::testing::Le(static_cast<float>(M_PI))));
}

}  // namespace
}  // namespace loom::nn::ref
