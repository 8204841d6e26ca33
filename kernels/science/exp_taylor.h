// exp(x) in float32 for a scalar or a GCC vector of floats, header-only so that each caller's
// target clone (AVX-512, AVX2, baseline; see layers.cc) compiles it for its own instruction set.
// Relative error < 3e-7 for x in [-87, 88]; 0 below, inf above (tested by LayersTest and
// LanesTest). The scalar and the vector form are one body, so the per-patch softmax
// (layers.cc) and the batched attention (lanes.cc) compute bit-identical exponentials.
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>

#include "kernels/science/simd.h"

namespace loom::science::fast {

// exp(x) = 2^q * exp(r), q = round(x / ln 2), r = x - q ln 2 in [-ln2/2, ln2/2] (ln 2 split in
// two for an exact reduction), exp(r) by its degree-6 Taylor polynomial (error < 2e-8 there).
// q is rounded by adding and subtracting 1.5 * 2^23 (round to nearest even, as rint).
// F is float or a GCC vector of float (`float __attribute__((vector_size(N)))`).
// REQUIRES: -87 <= x <= 88 (ExpTaylor clamps; a caller that knows its range calls this directly).
template <typename F>
LOOM_INLINE F ExpTaylorInRange(F x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  constexpr int32_t kRoundBits = 0x4B400000;
  const F t = x * kLog2e + kRound;  // fused or not, q is x / ln 2 rounded to an integer
  const F q = t - kRound;
  const F r = (x - q * kLn2Hi) - q * kLn2Lo;
  F p = F{} + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  if constexpr (std::is_same_v<F, float>) {
    return p * std::bit_cast<float>((std::bit_cast<int32_t>(t) - kRoundBits + 127) << 23);
  } else {
    using I = decltype(x < x);  // the matching vector of int32
    return p * std::bit_cast<F>(((std::bit_cast<I>(t) - kRoundBits) + 127) << 23);
  }
}

// exp(x) for any x: 0 below -87, inf above 88.
template <typename F>
LOOM_INLINE F ExpTaylor(F x) {
  const F zero{};
  const F v = x < -87.0f ? zero - 87.0f : (x > 88.0f ? zero + 88.0f : x);
  F e = ExpTaylorInRange(v);
  if constexpr (std::is_same_v<F, float>) {
    if (x < -87.0f) e = 0.0f;
    if (x > 88.0f) e = __builtin_inff();
  } else {
    e = x < -87.0f ? zero : e;
    e = x > 88.0f ? zero + __builtin_inff() : e;
  }
  return e;
}

}  // namespace loom::science::fast
