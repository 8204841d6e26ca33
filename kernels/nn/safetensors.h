// Reading and writing safetensors files (https://huggingface.co/docs/safetensors): the format
// Loom's science kernels keep their weights and golden test data in.
//
//   bytes 0..7   N, the header's length, little-endian uint64
//   bytes 8..8+N a JSON object: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
//                 ..., "__metadata__": {"<key>": "<string>", ...}}  (metadata optional)
//   the rest     the tensors' raw little-endian bytes; tensor <name> is bytes [b, e) of it
//
// Reading accepts F32, F64, F16 and BF16 (converted to float32) and checks every offset, shape
// and size against the file, so a truncated or damaged file is an error that says what is wrong,
// never a crash. Writing writes F32, tensors in name order, offsets aligned to 8 bytes.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "common/status.h"
#include "kernels/nn/tensor.h"

namespace loom::nn {

struct Safetensors {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Headers over this many bytes are refused (the format's own reference limit is 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

Result<Safetensors> ParseSafetensors(std::string_view bytes);
Result<Safetensors> ReadSafetensors(const std::string& path);

std::string SerializeSafetensors(const Safetensors& st);
Status WriteSafetensors(const std::string& path, const Safetensors& st);

// The tensor `name` with exactly `shape`, or an error naming the file's shape and the expected one.
Result<const Tensor*> FindTensor(const TensorMap& tensors, const std::string& name, const std::vector<int64_t>& shape);

}  // namespace loom::nn
