// The PtychoNN kernels (ptychonn, ptychonn-edge) end to end: real redis-server, loom-service,
// loom-endpoint and loom-worker processes (the worker loads libloom_ptychonn.so on first use and
// the trained weights installed beside it), driven through the C++ SDK and the `loom` CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <vector>

#include "common/local_fabric.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "kernels/nn/safetensors.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

const std::string kData = LOOM_PTYCHONN_DATA_DIR;

std::vector<float> Floats(const Tensor& t) {
  std::vector<float> out(t.data().size() / sizeof(float));
  std::memcpy(out.data(), t.data().data(), t.data().size());
  return out;
}

// A .npy file (version 1.0) of float32 values with the given shape.
std::string Npy(const std::vector<int64_t>& shape, const std::vector<float>& data) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return out;
}

class PtychoFabricTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fabric_ = loom::testing::MakeFabric("ptychonn").release();
    Status s = fabric_->StartAll("ep", 1);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto client = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client, nullptr);
    ASSERT_TRUE(client->RegisterFunction("ptychonn", "ptychonn@1").ok());
    ASSERT_TRUE(client->RegisterFunction("ptychonn-edge", "ptychonn-edge@1").ok());
    // The same network from the committed ONNX export, chosen by the function's configuration.
    ASSERT_TRUE(client
                    ->RegisterFunction("ptychonn-edge-onnx", "ptychonn-edge@1", "",
                                       {{"weights", StringValue(kData + "/ptychonn_edge.onnx")}})
                    .ok());
  }
  static void TearDownTestSuite() {
    delete fabric_;
    fabric_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(fabric_, nullptr);
    client_ = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client_, nullptr);
  }

  v1::TaskRecord Run(const std::string& fn, std::vector<Value> args) {
    return loom::testing::SubmitAndWait(*client_, "ep", fn, std::move(args));
  }

  std::pair<int, std::string> Cli(std::vector<std::string> args) {
    return loom::testing::RunCli(*fabric_, LOOM_CLI_PATH, std::move(args));
  }

  std::string TempFile(const std::string& name, const std::string& bytes) {
    const std::string path = ::testing::TempDir() + name + "_" + std::to_string(getpid());
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  static LocalFabric* fabric_;
  std::unique_ptr<Client> client_;
};
LocalFabric* PtychoFabricTest::fabric_ = nullptr;

TEST_F(PtychoFabricTest, EndpointAdvertisesBothKernels) {
  auto ep = client_->GetEndpoint("ep");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  std::set<std::string> kernels;
  for (const auto& k : ep->kernels()) kernels.insert(k.name() + "@" + k.version());
  EXPECT_TRUE(kernels.contains("ptychonn@1"));
  EXPECT_TRUE(kernels.contains("ptychonn-edge@1"));
}

TEST_F(PtychoFabricTest, SdkBatchesGiveThePyTorchOutputsOfTheTrainedNetworks) {
  for (const std::string name : {"ptychonn", "ptychonn_edge"}) {
    SCOPED_TRACE(name);
    auto golden = nn::ReadSafetensors(kData + "/golden_" + name + ".safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status().ToString();
    const nn::Tensor& in = golden->tensors.at("input");
    const int64_t side = in.shape[2];
    const std::string fn = name == "ptychonn" ? "ptychonn" : "ptychonn-edge";
    for (const std::string& f : {fn, name == "ptychonn" ? fn : "ptychonn-edge-onnx"}) {
      auto r = Run(f, {TensorValue({in.shape[0], side, side}, std::span<const float>(in.data))});
      ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
      const auto& entries = r.result().map_value().entries();
      const auto phase = Floats(entries.at("phase").tensor_value());
      const auto& want = golden->tensors.at("trained_phase").data;
      ASSERT_EQ(phase.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(phase[i], want[i], 1e-5) << f << " " << i;
      EXPECT_EQ(entries.contains("amplitude"), name == "ptychonn");
    }
  }
}

TEST_F(PtychoFabricTest, BadShapesAndDtypesFailWithTheExpectedShape) {
  auto shape = Run("ptychonn", {TensorValue({3, 32, 32}, std::span<const float>(std::vector<float>(3 * 32 * 32)))});
  EXPECT_EQ(shape.state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(shape.error(), HasSubstr("must be float32 [N,64,64] or [64,64], got float32[3x32x32]"));
  EXPECT_EQ(shape.attempts(), 1);

  auto dtype = Run("ptychonn-edge", {TensorValue({128, 128}, std::span<const double>(std::vector<double>(128 * 128)))});
  EXPECT_EQ(dtype.state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(dtype.error(), HasSubstr("[N,128,128] or [128,128]"));
  EXPECT_THAT(dtype.error(), HasSubstr("got float64[128x128]"));
}

TEST_F(PtychoFabricTest, CliRunsANpyFileAndReportsABadOne) {
  auto golden = nn::ReadSafetensors(kData + "/golden_ptychonn.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status().ToString();
  const std::string npy = TempFile("frames.npy", Npy({2, 64, 64}, golden->tensors.at("input").data));
  auto [code, out] = Cli({"run", "--endpoint", "ep", "--function", "ptychonn", "--arg-file", npy, "--json"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("\"phase\""));
  EXPECT_THAT(out, HasSubstr("\"amplitude\""));

  const std::string bad = TempFile("bad.npy", Npy({2, 60, 64}, std::vector<float>(2 * 60 * 64)));
  auto [bad_code, bad_out] = Cli({"run", "--endpoint", "ep", "--function", "ptychonn", "--arg-file", bad});
  EXPECT_EQ(bad_code, 1) << bad_out;
  EXPECT_THAT(bad_out, HasSubstr("must be float32 [N,64,64] or [64,64], got float32[2x60x64]"));
  std::remove(npy.c_str());
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace loom
