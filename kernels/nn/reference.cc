#include "kernels/nn/reference.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace loom::nn::ref {

Tensor Conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int pad) {
  assert(x.rank() == 4 && w.rank() == 4 && x.dim(1) == w.dim(1));
  const int64_t n = x.dim(0), cin = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t cout = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const int64_t oh = h + 2 * pad - kh + 1, ow = wd + 2 * pad - kw + 1;
  Tensor y({n, cout, oh, ow});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = bias ? bias->data[co] : 0.0;
          for (int64_t ci = 0; ci < cin; ++ci)
            for (int64_t u = 0; u < kh; ++u)
              for (int64_t v = 0; v < kw; ++v) {
                const int64_t r = i + u - pad, c = j + v - pad;
                if (r < 0 || r >= h || c < 0 || c >= wd) continue;
                acc += static_cast<double>(x.data[((b * cin + ci) * h + r) * wd + c]) *
                       w.data[((co * cin + ci) * kh + u) * kw + v];
              }
          y.data[((b * cout + co) * oh + i) * ow + j] = static_cast<float>(acc);
        }
  return y;
}

Tensor Linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  assert(x.rank() == 2 && w.rank() == 2 && x.dim(1) == w.dim(1));
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  Tensor y({n, out});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias ? bias->data[o] : 0.0;
      for (int64_t k = 0; k < in; ++k) acc += static_cast<double>(x.data[b * in + k]) * w.data[o * in + k];
      y.data[b * out + o] = static_cast<float>(acc);
    }
  return y;
}

Tensor MatMul(const Tensor& a, const Tensor& b) {
  assert(a.rank() == 2 && b.rank() == 2 && a.dim(1) == b.dim(0));
  const int64_t m = a.dim(0), k = a.dim(1), n = b.dim(1);
  Tensor y({m, n});
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < k; ++t) acc += static_cast<double>(a.data[i * k + t]) * b.data[t * n + j];
      y.data[i * n + j] = static_cast<float>(acc);
    }
  return y;
}

Tensor MaxPool2(const Tensor& x) {
  assert(x.rank() == 4);
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), oh = h / 2, ow = w / 2;
  Tensor y({n, c, oh, ow});
  for (int64_t p = 0; p < n * c; ++p)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t u = 0; u < 2; ++u)
          for (int64_t v = 0; v < 2; ++v) m = std::max(m, x.data[(p * h + 2 * i + u) * w + 2 * j + v]);
        y.data[(p * oh + i) * ow + j] = m;
      }
  return y;
}

Tensor UpsampleBilinear2x(const Tensor& x) {
  assert(x.rank() == 4);
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), oh = 2 * h, ow = 2 * w;
  Tensor y({n, c, oh, ow});
  // PyTorch, align_corners=False: src = (dst + 0.5) / scale - 0.5, clamped below at 0; the
  // upper neighbour index is clamped to the last row/column.
  auto source = [](int64_t dst, int64_t size, int64_t* i0, int64_t* i1, double* frac) {
    double s = (dst + 0.5) / 2.0 - 0.5;
    if (s < 0) s = 0;
    *i0 = static_cast<int64_t>(s);
    *i1 = std::min(*i0 + 1, size - 1);
    *frac = s - static_cast<double>(*i0);
  };
  for (int64_t p = 0; p < n * c; ++p)
    for (int64_t i = 0; i < oh; ++i) {
      int64_t r0, r1;
      double fr;
      source(i, h, &r0, &r1, &fr);
      for (int64_t j = 0; j < ow; ++j) {
        int64_t c0, c1;
        double fc;
        source(j, w, &c0, &c1, &fc);
        const float* s = x.data.data() + p * h * w;
        const double top = (1 - fc) * s[r0 * w + c0] + fc * s[r0 * w + c1];
        const double bottom = (1 - fc) * s[r1 * w + c0] + fc * s[r1 * w + c1];
        y.data[(p * oh + i) * ow + j] = static_cast<float>((1 - fr) * top + fr * bottom);
      }
    }
  return y;
}

void SoftmaxLastDim(Tensor* x) {
  const int64_t last = x->shape.back(), rows = x->numel() / last;
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x->data.data() + r * last;
    const float m = *std::max_element(v, v + last);
    double sum = 0;
    for (int64_t k = 0; k < last; ++k) sum += std::exp(static_cast<double>(v[k]) - m);
    for (int64_t k = 0; k < last; ++k) v[k] = static_cast<float>(std::exp(static_cast<double>(v[k]) - m) / sum);
  }
}

void LeakyRelu(Tensor* x, float slope) {
  for (float& v : x->data) v = v >= 0 ? v : v * slope;
}

void Relu(Tensor* x) {
  for (float& v : x->data) v = std::max(v, 0.0f);
}

void Sigmoid(Tensor* x) {
  for (float& v : x->data) v = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(v))));
}

void Tanh(Tensor* x, float scale) {
  for (float& v : x->data) v = static_cast<float>(scale * std::tanh(static_cast<double>(v)));
}

}  // namespace loom::nn::ref
