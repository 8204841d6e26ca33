#include "kernels/science/lanes.h"

#include <algorithm>
#include <memory>

#include "common/status.h"
#include "kernels/science/braggnn.h"
#include "kernels/science/exp_taylor.h"
#include "kernels/science/simd.h"

namespace loom::science::lanes {
namespace {

// kLanes floats, one per patch: one zmm register with AVX-512, two ymm with AVX2, four xmm on
// baseline x86-64. Only ever passed by pointer or inside always-inlined code, so the ABI of
// passing it by value (GCC's -Wpsabi note) never comes into play.
using V = float __attribute__((vector_size(kLanes * sizeof(float))));

constexpr int kH1 = kPatch - 2;  // 9: after conv1 and the non-local block
constexpr int kH2 = kH1 - 2;     // 7
constexpr int kH3 = kH2 - 2;     // 5
constexpr int kP1 = kH1 * kH1;   // 81: the attention's queries and keys
// Queries per pass over the keys: each phi and g vector loaded serves this many rows.
constexpr int kQueries = 2;
// The attention's output channels accumulated in registers per pass over the keys.
constexpr int kChannels = 8;

LOOM_INLINE V Activate(V x, float slope) { return x > 0.0f ? x : x * slope; }

// A valid k x k convolution, stride 1, on an h x w x cin input; k = 1 with h = w = 1 is a dense
// layer. Weights [k, k, cin, cout].
struct Conv {
  int h, w, cin, k, cout;
  const float* weight;
  const float* bias;
  bool activate;
  float slope;
};

// NP output pixels (from p0, row-major) x NO output channels (from o0), accumulated in registers
// over all of k * k * cin in im2col order, as fast::Conv3x3 and fast::Gemm sum them:
// out = (residual ? residual : 0) + bias + sum w * in, then the activation.
template <int NP, int NO>
LOOM_INLINE void ConvTile(const Conv& c, const V* in, int p0, int o0, const V* residual, V* out) {
  const int ow = c.w - c.k + 1;
  const V* px[NP];
  V acc[NP][NO];
  for (int p = 0; p < NP; ++p) {
    const int y = (p0 + p) / ow;
    const int x = (p0 + p) % ow;
    px[p] = in + static_cast<int64_t>(y * c.w + x) * c.cin;
    for (int o = 0; o < NO; ++o) {
      const V init = residual != nullptr ? residual[(p0 + p) * c.cout + o0 + o] : V{};
      acc[p][o] = init + c.bias[o0 + o];
    }
  }
  for (int ky = 0; ky < c.k; ++ky) {
    for (int kx = 0; kx < c.k; ++kx) {
      const int off = (ky * c.w + kx) * c.cin;
      const float* wt = c.weight + static_cast<int64_t>((ky * c.k + kx) * c.cin) * c.cout + o0;
      for (int i = 0; i < c.cin; ++i) {
        V x[NP];
        for (int p = 0; p < NP; ++p) x[p] = px[p][off + i];
        for (int o = 0; o < NO; ++o) {
          const float wv = wt[i * c.cout + o];
          for (int p = 0; p < NP; ++p) acc[p][o] += wv * x[p];
        }
      }
    }
  }
  for (int p = 0; p < NP; ++p) {
    for (int o = 0; o < NO; ++o) {
      out[(p0 + p) * c.cout + o0 + o] = c.activate ? Activate(acc[p][o], c.slope) : acc[p][o];
    }
  }
}

template <int NP, int NO>
LOOM_INLINE void ConvColumns(const Conv& c, const V* in, int o0, const V* residual, V* out) {
  const int pixels = (c.h - c.k + 1) * (c.w - c.k + 1);
  int p = 0;
  for (; p + NP <= pixels; p += NP) ConvTile<NP, NO>(c, in, p, o0, residual, out);
  for (; p < pixels; ++p) ConvTile<1, NO>(c, in, p, o0, residual, out);
}

// out [pixels][cout] from in [h][w][cin]; residual (may alias out) is added before the bias.
LOOM_INLINE void RunConv(const Conv& c, const V* in, V* out, const V* residual = nullptr) {
  int o = 0;
  for (; o + 8 <= c.cout; o += 8) ConvColumns<3, 8>(c, in, o, residual, out);
  for (; o + 4 <= c.cout; o += 4) ConvColumns<4, 4>(c, in, o, residual, out);
  for (; o + 2 <= c.cout; o += 2) ConvColumns<4, 2>(c, in, o, residual, out);
  for (; o < c.cout; ++o) ConvColumns<4, 1>(c, in, o, residual, out);
}

// Scores of queries i0 .. i0 + Q - 1 against keys j0 .. j0 + J - 1 (theta_i . phi_j, summed
// over the channels in order, as fast::Gemm): Q x J independent sums, so the multiply-adds
// overlap instead of waiting on one another. mx: each query's running max.
template <int Q, int J>
LOOM_INLINE void Scores(const V* tpg, int inner, int i0, int j0, V* rows, V* mx) {
  const int ld = 3 * inner;
  V s[Q][J] = {};
  for (int c = 0; c < inner; ++c) {
    V theta[Q];
    for (int q = 0; q < Q; ++q) theta[q] = tpg[(i0 + q) * ld + c];
    for (int k = 0; k < J; ++k) {
      const V phi = tpg[(j0 + k) * ld + inner + c];
      for (int q = 0; q < Q; ++q) s[q][k] += theta[q] * phi;
    }
  }
  for (int q = 0; q < Q; ++q) {
    for (int k = 0; k < J; ++k) {
      rows[q * kP1 + j0 + k] = s[q][k];
      mx[q] = mx[q] < s[q][k] ? s[q][k] : mx[q];
    }
  }
}

// Rows i0 .. i0 + Q - 1 of y = softmax(theta^T phi) g^T, tpg [kP1][3 * inner] (theta, phi, g),
// y [kP1][inner]; `rows` holds Q x kP1 scores, then probabilities: one row of the attention
// matrix per query, never the whole matrix. The arithmetic is fast::SoftmaxRows' and
// fast::Gemm's, so the answers are the per-patch path's: the row max subtracted, differences
// below -80 a zero probability, exp, the sum in 16 strided partial sums, each probability times
// 1 / sum, then the products with g summed over the keys in order.
template <int Q>
LOOM_INLINE void AttentionRows(const V* tpg, int inner, int i0, V* y, V* rows) {
  constexpr int kKeys = 4;  // keys per block of scores
  V mx[Q];
  for (int q = 0; q < Q; ++q) mx[q] = V{} - __builtin_inff();  // the max is exact, whatever the order
  int j = 0;
  for (; j + kKeys <= kP1; j += kKeys) Scores<Q, kKeys>(tpg, inner, i0, j, rows, mx);
  for (; j < kP1; ++j) Scores<Q, 1>(tpg, inner, i0, j, rows, mx);
  constexpr int kPartial = 16;  // fast::SoftmaxRows' lanes
  constexpr int kWhole = kP1 / kPartial * kPartial;
  for (int q = 0; q < Q; ++q) {
    V* row = rows + q * kP1;
    // d <= 0, so only the low clamp of ExpTaylor applies, and below -80 the flush to zero
    // (SoftmaxRows maps those to -100, which ExpTaylor turns into 0).
    for (j = 0; j < kP1; ++j) {
      const V d = row[j] - mx[q];
      const V e = fast::ExpTaylorInRange(d < -87.0f ? V{} - 87.0f : d);
      row[j] = d < -80.0f ? V{} : e;
    }
    V partial[kPartial] = {};
    for (j = 0; j < kWhole; j += kPartial) {
      for (int l = 0; l < kPartial; ++l) partial[l] += row[j + l];
    }
    V sum{};
    for (j = kWhole; j < kP1; ++j) sum += row[j];
    for (int l = 0; l < kPartial; ++l) sum += partial[l];
    const V inv = 1.0f / sum;
    for (j = 0; j < kP1; ++j) row[j] *= inv;
  }
  const int ld = 3 * inner;
  for (int c0 = 0; c0 < inner; c0 += kChannels) {
    V acc[Q][kChannels] = {};
    for (j = 0; j < kP1; ++j) {
      const V* g = tpg + j * ld + 2 * inner + c0;
      for (int c = 0; c < kChannels; ++c) {
        const V gv = g[c];
        for (int q = 0; q < Q; ++q) acc[q][c] += rows[q * kP1 + j] * gv;
      }
    }
    for (int q = 0; q < Q; ++q) {
      for (int c = 0; c < kChannels; ++c) y[(i0 + q) * inner + c0 + c] = acc[q][c];
    }
  }
}

// The block's buffers, in V units.
struct Layout {
  int x0, a1, tpg, y, a2, a3, dense_a, dense_b, rows, total;
};

Layout LayoutFor(const PackedWeights& w) {
  int widest = w.conv3 * kH3 * kH3;
  for (int o : w.dense_out) widest = std::max(widest, o);
  Layout l{};
  int at = 0;
  auto take = [&](int n) {
    const int start = at;
    at += n;
    return start;
  };
  l.x0 = take(kPatchPixels);
  l.a1 = take(kP1 * w.conv1);
  l.tpg = take(kP1 * 3 * w.inner);
  l.y = take(kP1 * w.inner);
  l.a2 = take(kH2 * kH2 * w.conv2);
  l.a3 = take(kH3 * kH3 * w.conv3);
  l.dense_a = take(widest);
  l.dense_b = take(widest);
  l.rows = take(kQueries * kP1);
  l.total = at;
  return l;
}

// The whole network on one block of up to kLanes patches.
LOOM_SIMD_CLONES
void ForwardBlock(const PackedWeights& w, const Layout& l, const float* patches, int count, float* out, V* buf) {
  // Transpose to [pixel][patch] (zeros past count), then min-max normalise each lane, as
  // MinMaxNormalise: (p - min) / (max - min), a constant patch zeros.
  V* x0 = buf + l.x0;
  for (int p = 0; p < kPatchPixels; ++p) {
    V v{};
    for (int s = 0; s < count; ++s) v[s] = patches[s * kPatchPixels + p];
    x0[p] = v;
  }
  V lo = x0[0];
  V hi = x0[0];
  for (int p = 1; p < kPatchPixels; ++p) {
    lo = x0[p] < lo ? x0[p] : lo;
    hi = x0[p] > hi ? x0[p] : hi;
  }
  const V span = hi - lo;
  for (int p = 0; p < kPatchPixels; ++p) x0[p] = span > 0.0f ? (x0[p] - lo) / span : V{};

  V* a1 = buf + l.a1;
  V* tpg = buf + l.tpg;
  V* y = buf + l.y;
  RunConv({kPatch, kPatch, 1, 3, w.conv1, w.conv1_w, w.conv1_b, w.activation_after_conv1, w.slope}, x0, a1);
  // Non-local block: theta, phi and g in one product, the attention, then out + a1.
  RunConv({kH1, kH1, w.conv1, 1, 3 * w.inner, w.tpg_w, w.tpg_b, false, 0.0f}, a1, tpg);
  V* rows = buf + l.rows;
  int i = 0;
  for (; i + kQueries <= kP1; i += kQueries) AttentionRows<kQueries>(tpg, w.inner, i, y, rows);
  for (; i < kP1; ++i) AttentionRows<1>(tpg, w.inner, i, y, rows);
  RunConv({kH1, kH1, w.inner, 1, w.conv1, w.out_w, w.out_b, true, w.slope}, y, a1, a1);
  RunConv({kH1, kH1, w.conv1, 3, w.conv2, w.conv2_w, w.conv2_b, true, w.slope}, a1, buf + l.a2);
  RunConv({kH2, kH2, w.conv2, 3, w.conv3, w.conv3_w, w.conv3_b, true, w.slope}, buf + l.a2, buf + l.a3);
  const V* cur = buf + l.a3;
  int width = w.conv3 * kH3 * kH3;
  for (size_t d = 0; d < w.dense_out.size(); ++d) {
    V* next = buf + (d % 2 == 0 ? l.dense_a : l.dense_b);
    const bool activate = static_cast<int>(d) < w.activated_dense;
    RunConv({1, 1, width, 1, w.dense_out[d], w.dense_w[d], w.dense_b[d], activate, w.slope}, cur, next);
    cur = next;
    width = w.dense_out[d];
  }
  for (int s = 0; s < count; ++s) {
    for (int o = 0; o < width; ++o) out[s * width + o] = cur[o][s];
  }
}

}  // namespace

bool Supported(const PackedWeights& w) { return w.inner > 0 && w.inner % kChannels == 0; }

void Forward(const PackedWeights& w, const float* patches, int64_t n, float* out) {
  LOOM_CHECK(Supported(w));
  const Layout l = LayoutFor(w);
  // Aligned by hand: the AVX-512 clone moves V with aligned loads and stores, but outside it
  // (baseline x86-64) GCC caps alignof(V) at 16, so std::vector<V> would not do.
  const size_t bytes = static_cast<size_t>(l.total) * sizeof(V);
  std::vector<float> storage((bytes + sizeof(V)) / sizeof(float));
  void* at = storage.data();
  size_t space = storage.size() * sizeof(float);
  V* buf = static_cast<V*>(std::align(sizeof(V), bytes, at, space));
  const int width = w.dense_out.empty() ? 0 : w.dense_out.back();
  for (int64_t s = 0; s < n; s += kLanes) {
    const int count = static_cast<int>(std::min<int64_t>(kLanes, n - s));
    ForwardBlock(w, l, patches + s * kPatchPixels, count, out + s * width, buf);
  }
}

}  // namespace loom::science::lanes
