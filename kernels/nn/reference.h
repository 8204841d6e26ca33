// Naive reference layers: the plainest loops that compute each layer the way PyTorch defines
// it, NCHW, float32, accumulating in double. They are slow on purpose; tests check every
// optimised layer of the science kernels against them.
#pragma once

#include "kernels/nn/tensor.h"

namespace loom::nn::ref {

// x [N, Cin, H, W], w [Cout, Cin, kh, kw], bias [Cout] or nullptr; stride 1, zero padding `pad`
// on every side. Output [N, Cout, H + 2*pad - kh + 1, W + 2*pad - kw + 1] (torch.nn.Conv2d).
Tensor Conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int pad);
// x [N, in], w [out, in], bias [out] or nullptr: x w^T + b (torch.nn.Linear).
Tensor Linear(const Tensor& x, const Tensor& w, const Tensor* bias);
// a [M, K], b [K, N] -> [M, N].
Tensor MatMul(const Tensor& a, const Tensor& b);
// x [N, C, H, W] -> [N, C, H/2, W/2]: 2x2 windows, stride 2, floor (torch.nn.MaxPool2d(2)).
Tensor MaxPool2(const Tensor& x);
// x [N, C, H, W] -> [N, C, 2H, 2W]: bilinear, half-pixel centres
// (torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)).
Tensor UpsampleBilinear2x(const Tensor& x);
// Softmax over the last axis, in place.
void SoftmaxLastDim(Tensor* x);
void LeakyRelu(Tensor* x, float slope);
void Relu(Tensor* x);
void Sigmoid(Tensor* x);
// x <- scale * tanh(x)
void Tanh(Tensor* x, float scale = 1.0f);

}  // namespace loom::nn::ref
