// A dense float32 tensor, row-major (C order), and a map of named tensors: the weights of a
// network as read from a safetensors or ONNX file. Shapes use int64_t like PyTorch's.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace loom::nn {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // numel() elements, row-major

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s) : shape(std::move(s)), data(static_cast<size_t>(NumElements(shape))) {}
  Tensor(std::vector<int64_t> s, std::vector<float> d) : shape(std::move(s)), data(std::move(d)) {}

  int64_t numel() const { return NumElements(shape); }
  int64_t dim(size_t i) const { return shape.at(i); }
  size_t rank() const { return shape.size(); }

  static int64_t NumElements(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// "[2, 3, 4]"
std::string ShapeString(const std::vector<int64_t>& shape);

using TensorMap = std::map<std::string, Tensor>;

}  // namespace loom::nn
