#include "kernels/science/bitstream.h"

#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "kernels/nn/safetensors.h"
#include "kernels/science/braggnn.h"

namespace loom::science {
namespace {

std::string Sha256Hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

}  // namespace

std::string BitstreamChecksum(const std::string& network, const FloatFormat& format, const nn::TensorMap& weights) {
  std::string c = "loom-bitstream-v1\nnetwork=" + network + "\nnumber_format=" + format.Name() + "\n";
  for (const auto& [name, t] : weights) {  // std::map: name order
    c += name + "\n";
    for (size_t i = 0; i < t.shape.size(); ++i) c += (i ? "," : "") + std::to_string(t.shape[i]);
    c += "\n";
    c.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  }
  return "sha256:" + Sha256Hex(c);
}

std::string SerializeBitstream(const nn::TensorMap& weights, const FloatFormat& format) {
  nn::Safetensors st;
  st.tensors = weights;
  st.metadata = {{"loom_artifact", "bitstream"},
                 {"format_version", "1"},
                 {"network", kBitstreamNetwork},
                 {"number_format", format.Name()},
                 {"checksum", BitstreamChecksum(kBitstreamNetwork, format, weights)}};
  return nn::SerializeSafetensors(st);
}

Result<Bitstream> ParseBitstream(std::string_view bytes, const std::string& origin) {
  auto refuse = [&](const std::string& why) { return InvalidArgument("bitstream " + origin + " refused: " + why); };
  auto st = nn::ParseSafetensors(bytes);
  if (!st.ok()) return refuse("not a valid bitstream file (" + st.status().message() + ")");
  auto field = [&](const std::string& key) -> const std::string* {
    auto it = st->metadata.find(key);
    return it == st->metadata.end() ? nullptr : &it->second;
  };
  for (const char* key : {"loom_artifact", "format_version", "network", "number_format", "checksum"}) {
    if (field(key) == nullptr) return refuse(std::string("metadata field '") + key + "' is missing");
  }
  if (*field("loom_artifact") != "bitstream") {
    return refuse("loom_artifact is '" + *field("loom_artifact") + "', expected 'bitstream'");
  }
  if (*field("format_version") != "1") {
    return refuse("format_version " + *field("format_version") + " is not supported (this build reads 1)");
  }
  Bitstream b;
  b.network = *field("network");
  LOOM_ASSIGN_OR_RETURN(b.format, ParseFloatFormat(*field("number_format")));
  b.checksum = *field("checksum");
  b.weights = std::move(st->tensors);
  const std::string computed = BitstreamChecksum(b.network, b.format, b.weights);
  if (computed != b.checksum) {
    return refuse("checksum mismatch, the file is corrupt or was edited (recorded " + b.checksum + ", computed " +
                  computed + ")");
  }
  if (b.network != kBitstreamNetwork) {
    return refuse("it is built for network '" + b.network + "', this device runs '" + kBitstreamNetwork + "'");
  }
  if (Status s = CheckWeights(BraggNNFpgaArchitecture(), b.weights); !s.ok()) return refuse(s.message());
  return b;
}

Result<Bitstream> ReadBitstream(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("bitstream " + path + ": cannot open the file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseBitstream(ss.str(), path);
}

}  // namespace loom::science
