// Golden files written by tools/braggnn/export.py (kernels/science/data/golden_*.safetensors):
// a network's weights plus golden.input (raw counts [N, 11, 11]) and golden.output ([N, 2]).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/nn/safetensors.h"

namespace loom::science::testing {

inline std::string DataPath(const std::string& file) { return std::string(LOOM_SCIENCE_DATA_DIR) + "/" + file; }

struct GoldenFile {
  nn::TensorMap weights;
  std::vector<float> input, output;
  int64_t n = 0;
  bool fpga = false;

  static GoldenFile Load(const std::string& stem) {
    GoldenFile g;
    auto st = nn::ReadSafetensors(DataPath(stem + ".safetensors"));
    EXPECT_TRUE(st.ok()) << st.status().message();
    if (!st.ok()) return g;
    g.weights = st->tensors;
    g.input = g.weights.at("golden.input").data;
    g.output = g.weights.at("golden.output").data;
    g.n = g.weights.at("golden.input").dim(0);
    g.weights.erase("golden.input");
    g.weights.erase("golden.output");
    g.fpga = st->metadata["network"] == "braggnn-fpga";
    return g;
  }
};

inline float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace loom::science::testing
