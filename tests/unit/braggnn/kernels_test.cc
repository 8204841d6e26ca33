// braggnn and braggnn-fpga as Loom kernels: inputs, errors naming the expected shape, units,
// the emulated device's report, and bitstream files refused when corrupt or mismatched.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "kernels/nn/safetensors.h"
#include "kernels/science/bitstream.h"
#include "kernels/science/braggnn.h"
#include "kernels/science/braggnn_kernels.h"
#include "tests/unit/braggnn/braggnn_test_util.h"

namespace loom::kernels {
namespace {

using science::testing::GoldenFile;
using ::testing::HasSubstr;

const Value& Field(const Value& map, const std::string& key) {
  static const Value kNull = NullValue();
  auto it = map.map_value().entries().find(key);
  EXPECT_NE(it, map.map_value().entries().end()) << "no '" << key << "' in " << DebugString(map);
  return it == map.map_value().entries().end() ? kNull : it->second;
}

std::vector<float> Floats(const Value& v) {
  std::vector<float> out(v.tensor_value().data().size() / sizeof(float));
  std::memcpy(out.data(), v.tensor_value().data().data(), out.size() * sizeof(float));
  return out;
}

class BraggKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(RegisterBraggKernels(&registry_).ok()); }

  Result<Value> Run(const std::string& kernel, Value patches, std::map<std::string, Value> kwargs = {},
                    std::map<std::string, Value> config = {}) {
    v1::TaskSpec task;
    task.set_kernel(kernel);
    *task.add_args() = std::move(patches);
    for (auto& [k, v] : kwargs) (*task.mutable_kwargs())[k] = v;
    for (auto& [k, v] : config) (*task.mutable_config())[k] = v;
    return registry_.Run(task);
  }

  KernelRegistry registry_;
  GoldenFile golden_ = GoldenFile::Load("golden_braggnn_trained");
};

TEST_F(BraggKernelsTest, BraggnnAnswersTheGoldenBatchAndSinglePatches) {
  auto r = Run("braggnn", TensorValue({golden_.n, 11, 11}, std::span<const float>(golden_.input)));
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_THAT(r->tensor_value().shape(), ::testing::ElementsAre(golden_.n, 2));
  EXPECT_LE(science::testing::MaxAbsDiff(Floats(*r), golden_.output), 1e-5f);
  // [11, 11]: one patch, answered as [1, 2]; units "pixels" multiplies by 11.
  auto one = Run("braggnn", TensorValue({11, 11}, std::span<const float>(golden_.input).first(121)),
                 {{"units", StringValue("pixels")}});
  ASSERT_TRUE(one.ok()) << one.status().message();
  ASSERT_THAT(one->tensor_value().shape(), ::testing::ElementsAre(1, 2));
  EXPECT_NEAR(Floats(*one)[0], golden_.output[0] * 11, 1e-4);
}

TEST_F(BraggKernelsTest, WrongShapeOrDtypeNamesTheExpectedShape) {
  for (auto [shape, why] : {std::pair<std::vector<int64_t>, std::string>{{12, 12}, "float32[12, 12]"},
                            {{3, 11, 10}, "float32[3, 11, 10]"},
                            {{0, 11, 11}, "float32[0, 11, 11]"},
                            {{121}, "float32[121]"}}) {
    std::vector<float> data(static_cast<size_t>(nn::Tensor::NumElements(shape)), 1.0f);
    for (const char* k : {"braggnn", "braggnn-fpga"}) {
      auto r = Run(k, TensorValue(shape, std::span<const float>(data)));
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(r.status().message(), HasSubstr("[N, 11, 11] or [11, 11]"));
      EXPECT_THAT(r.status().message(), HasSubstr(why));
    }
  }
  std::vector<double> d(121, 1.0);
  auto f64 = Run("braggnn", TensorValue({11, 11}, std::span<const double>(d)));
  ASSERT_FALSE(f64.ok());
  EXPECT_THAT(f64.status().message(), HasSubstr("float64[11, 11]"));
  EXPECT_THAT(f64.status().message(), HasSubstr("expected a float32 tensor"));
  std::vector<float> nan(121, 1.0f);
  nan[7] = std::nanf("");
  EXPECT_THAT(Run("braggnn", TensorValue({11, 11}, std::span<const float>(nan))).status().message(),
              HasSubstr("non-finite"));
  auto units = Run("braggnn", TensorValue({11, 11}, std::span<const float>(golden_.input).first(121)),
                   {{"units", StringValue("mm")}});
  EXPECT_THAT(units.status().message(), HasSubstr("'fraction' or 'pixels'"));
}

TEST_F(BraggKernelsTest, NestedListsOfNumbersAreAcceptedAndCheckedLikeTensors) {
  auto row = [](int n, double v) { return ListValue(std::vector<Value>(n, DoubleValue(v))); };
  std::vector<Value> rows(11, row(11, 1.0));
  rows[5] = ListValue({IntValue(1), IntValue(1), IntValue(1), IntValue(1), IntValue(1), IntValue(90), IntValue(1),
                       IntValue(1), IntValue(1), IntValue(1), IntValue(1)});
  auto r = Run("braggnn", ListValue(rows), {{"units", StringValue("pixels")}});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_THAT(r->tensor_value().shape(), ::testing::ElementsAre(1, 2));
  EXPECT_NEAR(Floats(*r)[0], 5.0, 0.5);  // one bright pixel at (column 5, row 5)
  EXPECT_NEAR(Floats(*r)[1], 5.0, 0.5);
  rows[3] = row(10, 1.0);
  auto ragged = Run("braggnn", ListValue(rows));
  ASSERT_FALSE(ragged.ok());
  EXPECT_THAT(ragged.status().message(), HasSubstr("[N, 11, 11] or [11, 11]"));
  auto wrong = Run("braggnn", ListValue(std::vector<Value>(3, row(3, 1.0))));
  EXPECT_THAT(wrong.status().message(), HasSubstr("got a list of shape [3, 3]"));
  EXPECT_THAT(Run("braggnn", StringValue("x")).status().message(), HasSubstr("[N, 11, 11] or [11, 11]"));
}

TEST_F(BraggKernelsTest, BatchLimitIsConfigurable) {
  std::vector<float> data(3 * 121, 1.0f);
  auto r = Run("braggnn", TensorValue({3, 11, 11}, std::span<const float>(data)), {}, {{"max_patches", IntValue(2)}});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("more than the limit of 2"));
  EXPECT_TRUE(
      Run("braggnn", TensorValue({3, 11, 11}, std::span<const float>(data)), {}, {{"max_patches", IntValue(3)}}).ok());
}

TEST_F(BraggKernelsTest, FpgaKernelReportsAnEmulatedDeviceInEachFormat) {
  const GoldenFile fpga = GoldenFile::Load("golden_braggnn_fpga_trained");
  const Value patches = TensorValue({fpga.n, 11, 11}, std::span<const float>(fpga.input));
  auto f32 = Run("braggnn-fpga", patches, {{"precision", StringValue("float32")}});
  ASSERT_TRUE(f32.ok()) << f32.status().message();
  EXPECT_LE(science::testing::MaxAbsDiff(Floats(Field(*f32, "centres")), fpga.output), 1e-5f);
  EXPECT_EQ(Field(Field(*f32, "device"), "precision").string_value(), "float32");
  for (const char* format : {"e5m4", "e5m3"}) {
    auto r = Run("braggnn-fpga", patches, {{"number_format", StringValue(format)}});
    ASSERT_TRUE(r.ok()) << r.status().message();
    const Value& dev = Field(*r, "device");
    EXPECT_EQ(Field(dev, "class").string_value(), "fpga");
    EXPECT_TRUE(Field(dev, "emulated").bool_value());
    EXPECT_EQ(Field(dev, "number_format").string_value(), format);
    EXPECT_THAT(Field(dev, "checksum").string_value(), HasSubstr("sha256:"));
    EXPECT_LE(science::testing::MaxAbsDiff(Floats(Field(*r, "centres")), fpga.output), 0.1f);
  }
  EXPECT_THAT(Run("braggnn-fpga", patches, {{"number_format", StringValue("e4m3")}}).status().message(),
              HasSubstr("'e5m4' or 'e5m3'"));
}

TEST_F(BraggKernelsTest, BitstreamFilesAreRefusedWhenCorruptOrMismatched) {
  const auto dir = std::filesystem::temp_directory_path() / ("braggnn_kernels_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const GoldenFile fpga = GoldenFile::Load("golden_braggnn_fpga_trained");
  const std::string good = science::SerializeBitstream(fpga.weights, science::kE5M3);
  std::string bad = good;
  bad[bad.size() - 5] ^= 0x01;
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream((dir / name).string(), std::ios::binary) << bytes;
    return StringValue((dir / name).string());
  };
  const Value good_path = write("good.bitstream", good), bad_path = write("bad.bitstream", bad);
  const Value patches = TensorValue({fpga.n, 11, 11}, std::span<const float>(fpga.input));
  auto corrupt = Run("braggnn-fpga", patches, {}, {{"bitstream", bad_path}});
  ASSERT_FALSE(corrupt.ok());
  EXPECT_THAT(corrupt.status().message(), HasSubstr("checksum mismatch"));
  auto ok = Run("braggnn-fpga", patches, {}, {{"bitstream", good_path}});
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(Field(Field(*ok, "device"), "number_format").string_value(), "e5m3");
  auto mismatch = Run("braggnn-fpga", patches, {{"number_format", StringValue("e5m4")}}, {{"bitstream", good_path}});
  ASSERT_FALSE(mismatch.ok());
  EXPECT_THAT(mismatch.status().message(), HasSubstr("computes in e5m3, but number_format e5m4"));
  auto missing = Run("braggnn", patches, {}, {{"weights", StringValue((dir / "none.safetensors").string())}});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("none.safetensors"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace loom::kernels
