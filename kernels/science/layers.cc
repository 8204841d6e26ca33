#include "kernels/science/layers.h"

#include <algorithm>
#include <cstring>

#include "kernels/science/exp_taylor.h"
#include "kernels/science/simd.h"

namespace loom::science::fast {
namespace {

// An mr x nr block of c, accumulated in registers over all of k.
template <int MR, int NR>
LOOM_INLINE void Tile(int k, const float* a, int lda, const float* b, int ldb, const float* bias, float* c, int ldc,
                      bool accumulate) {
  float acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NR; ++j) {
      acc[r][j] = (accumulate ? c[r * ldc + j] : 0.0f) + (bias != nullptr ? bias[j] : 0.0f);
    }
  }
  for (int p = 0; p < k; ++p) {
    const float* bp = b + static_cast<int64_t>(p) * ldb;
    for (int r = 0; r < MR; ++r) {
      const float av = a[r * lda + p];
      for (int j = 0; j < NR; ++j) acc[r][j] += av * bp[j];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < NR; ++j) c[r * ldc + j] = acc[r][j];
  }
}

// Rows of c in blocks of 4 (then singly) for one column block of width NR.
template <int NR>
LOOM_INLINE void Columns(int m, int k, const float* a, int lda, const float* b, int ldb, const float* bias, float* c,
                         int ldc, bool accumulate) {
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    Tile<4, NR>(k, a + static_cast<int64_t>(i) * lda, lda, b, ldb, bias, c + static_cast<int64_t>(i) * ldc, ldc,
                accumulate);
  }
  for (; i < m; ++i) {
    Tile<1, NR>(k, a + static_cast<int64_t>(i) * lda, lda, b, ldb, bias, c + static_cast<int64_t>(i) * ldc, ldc,
                accumulate);
  }
}

}  // namespace

LOOM_SIMD_CLONES
void Gemm(int m, int n, int k, const float* a, int lda, const float* b, int ldb, const float* bias, float* c, int ldc,
          bool accumulate) {
  int j = 0;
  auto at = [&](int col) { return bias != nullptr ? bias + col : nullptr; };
  for (; j + 32 <= n; j += 32) Columns<32>(m, k, a, lda, b + j, ldb, at(j), c + j, ldc, accumulate);
  for (; j + 16 <= n; j += 16) Columns<16>(m, k, a, lda, b + j, ldb, at(j), c + j, ldc, accumulate);
  for (; j + 8 <= n; j += 8) Columns<8>(m, k, a, lda, b + j, ldb, at(j), c + j, ldc, accumulate);
  for (; j + 4 <= n; j += 4) Columns<4>(m, k, a, lda, b + j, ldb, at(j), c + j, ldc, accumulate);
  for (; j < n; ++j) Columns<1>(m, k, a, lda, b + j, ldb, at(j), c + j, ldc, accumulate);
}

void PackConv(const float* w, int cout, int cin, int kh, int kw, float* packed) {
  for (int o = 0; o < cout; ++o) {
    for (int i = 0; i < cin; ++i) {
      for (int y = 0; y < kh; ++y) {
        for (int x = 0; x < kw; ++x) {
          packed[((y * kw + x) * cin + i) * cout + o] = w[((o * cin + i) * kh + y) * kw + x];
        }
      }
    }
  }
}

void Conv3x3(const float* in, int h, int w, int cin, const float* packed_w, const float* bias, int cout, float* out,
             float* scratch) {
  const int oh = h - 2;
  const int ow = w - 2;
  const int k = 9 * cin;
  // im2col: for output pixel (y, x), the three input rows y..y+2 each give 3 * cin contiguous floats.
  for (int y = 0; y < oh; ++y) {
    for (int x = 0; x < ow; ++x) {
      float* row = scratch + static_cast<int64_t>(y * ow + x) * k;
      for (int ky = 0; ky < 3; ++ky) {
        std::memcpy(row + ky * 3 * cin, in + static_cast<int64_t>((y + ky) * w + x) * cin,
                    sizeof(float) * 3 * static_cast<size_t>(cin));
      }
    }
  }
  Gemm(oh * ow, cout, k, scratch, k, packed_w, cout, bias, out, cout);
}

LOOM_SIMD_CLONES
void ExpInPlace(float* x, int n) {
  for (int i = 0; i < n; ++i) x[i] = ExpTaylor(x[i]);
}

LOOM_SIMD_CLONES
void SoftmaxRows(float* x, int rows, int cols, int ld) {
  // The max and the sum run in 16 independent lanes (one vector), not one serial chain.
  constexpr int kLanes = 16;
  for (int r = 0; r < rows; ++r) {
    float* row = x + static_cast<int64_t>(r) * ld;
    float lanes[kLanes];
    for (int l = 0; l < kLanes; ++l) lanes[l] = row[0];
    int j = 0;
    for (; j + kLanes <= cols; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) lanes[l] = lanes[l] > row[j + l] ? lanes[l] : row[j + l];
    }
    float mx = row[0];
    for (; j < cols; ++j) mx = std::max(mx, row[j]);
    for (int l = 0; l < kLanes; ++l) mx = std::max(mx, lanes[l]);
    // Probabilities below e^-80 (1.8e-35) become 0: scaled by 1/sum they could reach float's
    // subnormal range, where every later multiply-add takes a slow microcode path.
    for (j = 0; j < cols; ++j) row[j] = row[j] - mx < -80.0f ? -100.0f : row[j] - mx;
    ExpInPlace(row, cols);
    for (int l = 0; l < kLanes; ++l) lanes[l] = 0;
    for (j = 0; j + kLanes <= cols; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) lanes[l] += row[j + l];
    }
    float sum = 0;
    for (; j < cols; ++j) sum += row[j];
    for (int l = 0; l < kLanes; ++l) sum += lanes[l];
    const float inv = 1.0f / sum;
    for (j = 0; j < cols; ++j) row[j] *= inv;
  }
}

LOOM_SIMD_CLONES
void LeakyRelu(float* x, int64_t n, float slope) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0 ? x[i] : x[i] * slope;
}

}  // namespace loom::science::fast
