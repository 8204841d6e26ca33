// The BraggNN networks (kernels/science/braggnn.h) on kLanes patches at once: one patch per float
// lane of a vector register, activations laid out [feature][kLanes patches]. Every conv, 1x1 conv
// and dense layer is then broadcast-weight x patch-vector multiply-adds with no horizontal
// operation, and the non-local attention runs one query row at a time (scores, max, exp, sum,
// times g) without materialising the 81x81 matrix. The vectors are GCC vector types of kLanes
// floats compiled for AVX-512 (one register), AVX2 (two) and baseline x86-64 (four), picked at
// run time like layers.h. Same arithmetic, in the same order, as BraggNet's per-patch path.
// Stateless and thread-safe.
#pragma once

#include <cstdint>
#include <vector>

namespace loom::science::lanes {

inline constexpr int kLanes = 16;

// Views of a BraggNet's float32 weights in the layouts BraggNet packs them in: convs as
// [kh, kw, cin, cout], theta/phi/g as one [conv1, 3 * inner] product, dense as [in, out] with
// fc1's rows in (H, W, C) order.
struct PackedWeights {
  int conv1 = 0, inner = 0, conv2 = 0, conv3 = 0;
  bool activation_after_conv1 = false;
  float slope = 0.0f;
  const float *conv1_w = nullptr, *conv1_b = nullptr, *tpg_w = nullptr, *tpg_b = nullptr, *out_w = nullptr,
              *out_b = nullptr, *conv2_w = nullptr, *conv2_b = nullptr, *conv3_w = nullptr, *conv3_b = nullptr;
  std::vector<const float*> dense_w, dense_b;
  std::vector<int> dense_out;  // each dense layer's width
  int activated_dense = 0;     // the first this many dense layers are followed by the activation
};

// Whether Forward handles these weights (the attention's inner width a multiple of 8).
bool Supported(const PackedWeights& w);

// patches: n raw patches [n, 11, 11] (normalised here); out: [n, 2]. The last block's unused
// lanes run on zero patches and are dropped. REQUIRES: Supported(w).
void Forward(const PackedWeights& w, const float* patches, int64_t n, float* out);

}  // namespace loom::science::lanes
