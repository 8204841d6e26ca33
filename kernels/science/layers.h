// The optimised float32 layers the science networks run on the CPU: one sample at a time in
// channel-last (H, W, C) layout, so that every convolution is a small matrix product whose
// output channels are the vectorised, register-blocked axis. The hot loops are compiled for
// AVX-512 and AVX2+FMA as well as baseline x86-64 and picked at run time (GCC target_clones).
// Each is tested against the naive NCHW reference layers (kernels/nn/reference.h).
// Stateless and thread-safe.
#pragma once

#include <cstdint>

namespace loom::science::fast {

// c[i, j] = (accumulate ? c[i, j] : 0) + (bias ? bias[j] : 0) + sum_p a[i, p] * b[p, j]
// for i < m, j < n, p < k; row-major with leading dimensions lda, ldb, ldc.
void Gemm(int m, int n, int k, const float* a, int lda, const float* b, int ldb, const float* bias, float* c, int ldc,
          bool accumulate = false);

// Valid (no padding) 3x3 convolution, stride 1, channel-last:
// in [h, w, cin] -> out [h - 2, w - 2, cout]; weights packed by PackConv3x3 as [3, 3, cin, cout].
// `scratch` holds (h - 2) * (w - 2) * 9 * cin floats.
void Conv3x3(const float* in, int h, int w, int cin, const float* packed_w, const float* bias, int cout, float* out,
             float* scratch);

// PyTorch's conv weight [cout, cin, kh, kw] -> [kh, kw, cin, cout].
void PackConv(const float* w, int cout, int cin, int kh, int kw, float* packed);

// Softmax over each row of x [rows, cols] (row stride ld), in place.
void SoftmaxRows(float* x, int rows, int cols, int ld);

// exp(x) for each element, |relative error| < 3e-7 for x in [-87, 88]; 0 below, inf above.
void ExpInPlace(float* x, int n);

// max(x, slope * x) elementwise (slope 0: ReLU).
void LeakyRelu(float* x, int64_t n, float slope);

}  // namespace loom::science::fast
