#include "kernels/nn/safetensors.h"

#include <bit>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace loom::nn {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; so is every host Loom runs on");

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

struct DType {
  const char* name;
  size_t bytes;
};

Result<DType> ParseDType(const std::string& s) {
  if (s == "F32") return DType{"F32", 4};
  if (s == "F64") return DType{"F64", 8};
  if (s == "F16") return DType{"F16", 2};
  if (s == "BF16") return DType{"BF16", 2};
  return InvalidArgument("dtype '" + s + "' is not supported (F32, F64, F16 or BF16)");
}

void Convert(const DType& t, const char* src, size_t n, float* dst) {
  if (std::strcmp(t.name, "F32") == 0) {
    std::memcpy(dst, src, n * 4);
  } else if (std::strcmp(t.name, "F64") == 0) {
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, src + 8 * i, 8);
      dst[i] = static_cast<float>(d);
    }
  } else {
    const bool bf16 = std::strcmp(t.name, "BF16") == 0;
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      dst[i] = bf16 ? std::bit_cast<float>(static_cast<uint32_t>(h) << 16) : HalfToFloat(h);
    }
  }
}

}  // namespace

Result<Safetensors> ParseSafetensors(std::string_view bytes) {
  if (bytes.size() < 8)
    return InvalidArgument("safetensors: " + std::to_string(bytes.size()) +
                           " bytes is too short for the 8-byte header length");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if (n > kMaxSafetensorsHeaderBytes)
    return InvalidArgument("safetensors: header of " + std::to_string(n) + " bytes is over the limit");
  if (n > bytes.size() - 8)
    return InvalidArgument("safetensors: header of " + std::to_string(n) + " bytes runs past the end of the file (" +
                           std::to_string(bytes.size()) + " bytes)");
  const std::string_view data = bytes.substr(8 + n);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n), nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) return InvalidArgument("safetensors: the header is not a JSON object");

  Safetensors out;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return InvalidArgument("safetensors: __metadata__ is not an object");
      for (auto& [k, v] : entry.items()) {
        if (!v.is_string()) return InvalidArgument("safetensors: metadata '" + k + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "safetensors: tensor '" + name + "': ";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets") ||
        !entry["dtype"].is_string() || !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      return InvalidArgument(where + "wants {dtype: string, shape: [..], data_offsets: [begin, end]}");
    LOOM_ASSIGN_OR_RETURN(DType dtype, ParseDType(entry["dtype"].get<std::string>()));
    Tensor t;
    uint64_t count = 1;
    for (auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) return InvalidArgument(where + "shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v != 0 && count > (std::numeric_limits<uint32_t>::max() / v))
        return InvalidArgument(where + "shape is too large");
      count *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    auto& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      return InvalidArgument(where + "data_offsets must be non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data.size())
      return InvalidArgument(where + "data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                             ") lie outside the " + std::to_string(data.size()) + " data bytes");
    if (e - b != count * dtype.bytes)
      return InvalidArgument(where + "shape " + ShapeString(t.shape) + " of " + dtype.name + " needs " +
                             std::to_string(count * dtype.bytes) + " bytes, the offsets give " + std::to_string(e - b));
    t.data.resize(count);
    Convert(dtype, data.data() + b, count, t.data.data());
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

Result<Safetensors> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open safetensors file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  auto r = ParseSafetensors(ss.str());
  if (!r.ok()) return Status(r.status().code(), path + ": " + r.status().message());
  return r;
}

std::string SerializeSafetensors(const Safetensors& st) {
  nlohmann::json header = nlohmann::json::object();
  if (!st.metadata.empty()) header["__metadata__"] = st.metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : st.tensors) {
    const uint64_t bytes = t.data.size() * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const uint64_t n = h.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  out += h;
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : st.tensors) out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * 4);
  return out;
}

Status WriteSafetensors(const std::string& path, const Safetensors& st) {
  const std::string bytes = SerializeSafetensors(st);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Internal("cannot write '" + path + "'");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return Internal("cannot write '" + path + "'");
  return {};
}

Result<const Tensor*> FindTensor(const TensorMap& tensors, const std::string& name, const std::vector<int64_t>& shape) {
  auto it = tensors.find(name);
  if (it == tensors.end())
    return NotFound("weights have no tensor '" + name + "' (expected shape " + ShapeString(shape) + ")");
  if (it->second.shape != shape)
    return InvalidArgument("tensor '" + name + "' has shape " + ShapeString(it->second.shape) + ", expected " +
                           ShapeString(shape));
  return &it->second;
}

}  // namespace loom::nn
