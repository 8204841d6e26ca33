// The ptychonn and ptychonn-edge kernels (kernels/science/ptychonn_kernels.h) called through a
// KernelRegistry, as a worker calls them: shapes, raw frames, weights files, bad arguments.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/value.h"
#include "kernels/nn/safetensors.h"
#include "kernels/science/ptychonn_kernels.h"

namespace loom::kernels {
namespace {

using ::testing::HasSubstr;

const std::string kData = LOOM_PTYCHONN_DATA_DIR;
const std::string kModels = LOOM_PTYCHONN_MODEL_DIR;

class PtychoKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(RegisterPtychoKernels(&registry_).ok()); }

  Result<Value> Run(const std::string& kernel, Value frames, const std::string& weights) {
    v1::TaskSpec task;
    task.set_kernel(kernel);
    *task.add_args() = std::move(frames);
    if (!weights.empty()) (*task.mutable_kwargs())["weights"] = StringValue(weights);
    return registry_.Run(task);
  }

  static const Tensor& Field(const Value& v, const std::string& key) {
    return v.map_value().entries().at(key).tensor_value();
  }

  static std::vector<float> Floats(const Tensor& t) {
    std::vector<float> out(t.data().size() / sizeof(float));
    std::memcpy(out.data(), t.data().data(), t.data().size());
    return out;
  }

  KernelRegistry registry_;
};

TEST_F(PtychoKernelsTest, RegistersBothKernels) {
  EXPECT_NE(registry_.Find("ptychonn@1"), nullptr);
  EXPECT_NE(registry_.Find("ptychonn-edge@1"), nullptr);
  EXPECT_EQ(PtychoKernelInfos().size(), 2u);
}

TEST_F(PtychoKernelsTest, BatchesGiveThePyTorchGoldenAndA2dFrameGives2dOutputs) {
  auto golden = nn::ReadSafetensors(kData + "/golden_ptychonn.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status().ToString();
  const nn::Tensor& in = golden->tensors.at("input");
  auto r =
      Run("ptychonn", TensorValue({2, 64, 64}, std::span<const float>(in.data)), kModels + "/ptychonn.safetensors");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Tensor& phase = Field(*r, "phase");
  EXPECT_EQ(std::vector<int64_t>(phase.shape().begin(), phase.shape().end()), (std::vector<int64_t>{2, 64, 64}));
  const auto got = Floats(phase);
  const auto& want = golden->tensors.at("trained_phase").data;
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << i;
  const auto amp = Floats(Field(*r, "amplitude"));
  const auto& want_amp = golden->tensors.at("trained_amplitude").data;
  for (size_t i = 0; i < want_amp.size(); ++i) ASSERT_NEAR(amp[i], want_amp[i], 1e-5) << i;

  auto one = Run("ptychonn", TensorValue({64, 64}, std::span<const float>(in.data).first(64 * 64)),
                 kModels + "/ptychonn.safetensors");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(Field(*one, "phase").shape_size(), 2);
  const auto one_phase = Floats(Field(*one, "phase"));
  for (size_t i = 0; i < one_phase.size(); ++i) ASSERT_NEAR(one_phase[i], want[i], 1e-5) << i;
}

TEST_F(PtychoKernelsTest, EdgeTakesRawFramesThroughCropAndBinAndOnnxWeights) {
  auto golden = nn::ReadSafetensors(kData + "/golden_ptychonn_edge.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status().ToString();
  const nn::Tensor& in = golden->tensors.at("input");
  // A 516x516 raw frame whose 4x4 blocks of the central 512x512 each hold expm1(input) counts
  // (a 2-pixel border of junk around them) preprocesses to the golden input.
  std::vector<float> raw(516 * 516, 1e6f);
  for (int r = 0; r < 512; ++r)
    for (int c = 0; c < 512; ++c) raw[(r + 2) * 516 + c + 2] = std::expm1(in.data[(r / 4) * 128 + c / 4]);
  auto r = Run("ptychonn-edge", TensorValue({516, 516}, std::span<const float>(raw)), kData + "/ptychonn_edge.onnx");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const auto got = Floats(Field(*r, "phase"));
  ASSERT_EQ(got.size(), 128u * 128u);
  const auto& want = golden->tensors.at("trained_phase").data;
  float err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]));
  EXPECT_LE(err, 1e-4f);  // expm1 then log1p round trip in float
  EXPECT_FALSE(r->map_value().entries().contains("amplitude"));
}

TEST_F(PtychoKernelsTest, WrongShapeOrDtypeNamesTheExpectedShape) {
  const std::string w = kModels + "/ptychonn.safetensors";
  auto shape = Run("ptychonn", TensorValue({2, 32, 32}, std::span<const float>(std::vector<float>(2048))), w);
  ASSERT_FALSE(shape.ok());
  EXPECT_EQ(shape.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(shape.status().message(), HasSubstr("must be float32 [N,64,64] or [64,64], got float32[2x32x32]"));

  auto dtype = Run("ptychonn", TensorValue({64, 64}, std::span<const double>(std::vector<double>(4096))), w);
  ASSERT_FALSE(dtype.ok());
  EXPECT_THAT(dtype.status().message(), HasSubstr("got float64[64x64]"));

  auto edge = Run("ptychonn-edge", TensorValue({300, 300}, std::span<const float>(std::vector<float>(90000))), "");
  ASSERT_FALSE(edge.ok());
  EXPECT_THAT(edge.status().message(), HasSubstr("[N,128,128] or [128,128] (network input), or raw frames"));

  auto not_tensor = Run("ptychonn", IntValue(3), w);
  EXPECT_FALSE(not_tensor.ok());

  auto bad_weights = Run("ptychonn", TensorValue({64, 64}, std::span<const float>(std::vector<float>(4096))),
                         kModels + "/ptychonn_edge.safetensors");
  ASSERT_FALSE(bad_weights.ok());
  EXPECT_THAT(bad_weights.status().message(),
              HasSubstr("ptychonn weights: tensor 'encoder.0.weight' has shape [16, 1, 3, 3], expected [32, 1, 3, 3]"));
}

// A .npy file (version 1.0) of float32 values with the given shape.
std::string Npy(const std::string& shape, const std::vector<float>& data, const std::string& descr = "<f4") {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + shape + "), }\n";
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return out;
}

TEST_F(PtychoKernelsTest, NpyBytesAreTheSameAsATensorAndBadOnesAreNamed) {
  const std::string w = kModels + "/ptychonn.safetensors";
  std::vector<float> x(64 * 64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 13) * 0.5f;
  auto from_tensor = Run("ptychonn", TensorValue({64, 64}, std::span<const float>(x)), w);
  ASSERT_TRUE(from_tensor.ok()) << from_tensor.status().ToString();
  auto from_npy = Run("ptychonn", BytesValue(Npy("64, 64", x)), w);
  ASSERT_TRUE(from_npy.ok()) << from_npy.status().ToString();
  EXPECT_EQ(Field(*from_npy, "phase").data(), Field(*from_tensor, "phase").data());

  auto f8 = Run("ptychonn", BytesValue(Npy("64, 64", x, "<f8")), w);
  ASSERT_FALSE(f8.ok());
  EXPECT_THAT(f8.status().message(), HasSubstr("descr is not '<f4'"));
  auto truncated = Run("ptychonn", BytesValue(Npy("64, 65", x)), w);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(), HasSubstr("needs 16640 bytes of data, the file has 16384"));
  auto junk = Run("ptychonn", BytesValue("not numpy"), w);
  ASSERT_FALSE(junk.ok());
  EXPECT_THAT(junk.status().message(), HasSubstr("no .npy magic"));
}

}  // namespace
}  // namespace loom::kernels
