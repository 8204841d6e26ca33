#include "kernels/nn/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

namespace loom::nn {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A file built by hand: header length, JSON header, data.
std::string File(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

template <typename T>
std::string Bytes(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

TEST(SafetensorsTest, WrittenTensorsAndMetadataReadBack) {
  Safetensors st;
  st.tensors["b"] = Tensor({3}, {1.5f, -2.0f, 3.25f});
  st.tensors["a.weight"] = Tensor({2, 2}, {1, 2, 3, 4});
  st.tensors["empty"] = Tensor({0, 4});
  st.metadata["format"] = "pt";
  const std::string path = ::testing::TempDir() + "/roundtrip.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, st).ok());

  auto back = ReadSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->metadata, st.metadata);
  ASSERT_EQ(back->tensors.size(), 3u);
  EXPECT_THAT(back->tensors["a.weight"].shape, ElementsAre(2, 2));
  EXPECT_THAT(back->tensors["a.weight"].data, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(back->tensors["b"].data, ElementsAre(1.5f, -2.0f, 3.25f));
  EXPECT_EQ(back->tensors["empty"].numel(), 0);
  // The data starts 8-byte aligned, as the format asks.
  const std::string bytes = SerializeSafetensors(st);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
}

TEST(SafetensorsTest, OtherFloatTypesAreConvertedToFloat32) {
  // F64 2.5; F16 0x3c00 = 1, 0xc000 = -2, 0x0001 = 2^-24 (subnormal); BF16 0x4049 = 3.140625.
  const std::string data = Bytes<double>({2.5}) + Bytes<uint16_t>({0x3c00, 0xc000, 0x0001}) + Bytes<uint16_t>({0x4049});
  const std::string header = R"({"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
                             R"("h":{"dtype":"F16","shape":[3],"data_offsets":[8,14]},)"
                             R"("b":{"dtype":"BF16","shape":[1],"data_offsets":[14,16]}})";
  auto st = ParseSafetensors(File(header, data));
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_THAT(st->tensors["d"].data, ElementsAre(2.5f));
  EXPECT_THAT(st->tensors["h"].data, ElementsAre(1.0f, -2.0f, std::ldexp(1.0f, -24)));
  EXPECT_THAT(st->tensors["b"].data, ElementsAre(3.140625f));
}

TEST(SafetensorsTest, DamagedFilesAreErrorsThatSayWhatIsWrong) {
  const std::string four = Bytes<float>({1, 2, 3, 4});
  struct Case {
    std::string bytes, expect;
  } cases[] = {
      {"abc", "too short"},
      {std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8), "over the limit"},
      {File(std::string(100, ' '), "").substr(0, 8) + "{}", "runs past the end"},
      {File("[1,2]", ""), "not a JSON object"},
      {File("{not json", ""), "not a JSON object"},
      {File(R"({"t":{"dtype":"F32","shape":[4]}})", four), "wants {dtype"},
      {File(R"({"t":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", four), "dtype 'I8' is not supported"},
      {File(R"({"t":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", four), "non-negative"},
      {File(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}})", four), "lie outside"},
      {File(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", four), "needs 12 bytes"},
      {File(R"({"t":{"dtype":"F32","shape":[65536,65536,65536],"data_offsets":[0,16]}})", four), "too large"},
      {File(R"({"__metadata__":{"k":1}})", ""), "not a string"},
  };
  for (const auto& c : cases) {
    auto st = ParseSafetensors(c.bytes);
    ASSERT_FALSE(st.ok()) << c.expect;
    EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(st.status().message(), HasSubstr(c.expect));
  }
  auto missing = ReadSafetensors(::testing::TempDir() + "/no-such.safetensors");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(SafetensorsTest, FindTensorNamesTheExpectedShape) {
  TensorMap m;
  m["w"] = Tensor({2, 3});
  EXPECT_TRUE(FindTensor(m, "w", {2, 3}).ok());
  auto wrong = FindTensor(m, "w", {3, 2});
  EXPECT_THAT(wrong.status().message(), HasSubstr("has shape [2, 3], expected [3, 2]"));
  auto absent = FindTensor(m, "v", {1});
  EXPECT_EQ(absent.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(absent.status().message(), HasSubstr("no tensor 'v'"));
}

}  // namespace
}  // namespace loom::nn
