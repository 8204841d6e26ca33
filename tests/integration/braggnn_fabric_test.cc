// The BraggNN kernels (braggnn, braggnn-fpga) end to end: real redis-server, loom-service,
// loom-endpoint and loom-worker processes (which loads libloom_braggnn.so on first use), driven
// through the C++ SDK and the `loom` CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "common/local_fabric.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "kernels/science/bragg_synth.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
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

// Median distance in pixels between centres [n, 2] / 11 and the truth.
double MedianError(const std::vector<float>& centres, const std::vector<science::PeakParams>& truth) {
  std::vector<double> e;
  for (size_t i = 0; i < truth.size(); ++i) {
    e.push_back(std::hypot(centres[i * 2] * 11 - truth[i].cx, centres[i * 2 + 1] * 11 - truth[i].cy));
  }
  std::sort(e.begin(), e.end());
  return e[e.size() / 2];
}

class BraggFabricTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fabric_ = loom::testing::MakeFabric("braggnn").release();
    // The endpoint advertises the emulated FPGA beside its CPU.
    Status s = fabric_->StartRedis();
    if (s.ok()) s = fabric_->StartService();
    if (s.ok()) s = fabric_->StartEndpoint("ep", 1, {"--device", "fpga:emulated-braggnn-fpga:emulated"});
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto client = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client, nullptr);
    ASSERT_TRUE(client->RegisterFunction("braggnn", "braggnn@1").ok());
    ASSERT_TRUE(client->RegisterFunction("braggnn-fpga", "braggnn-fpga@1").ok());
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

  v1::TaskRecord Run(const std::string& fn, std::vector<Value> args, const Kwargs& kwargs = {}) {
    return loom::testing::SubmitAndWait(*client_, "ep", fn, std::move(args), kwargs);
  }

  // Runs `loom --service ... args`; returns the exit code and the output.
  std::pair<int, std::string> Cli(std::vector<std::string> args) {
    return loom::testing::RunCli(*fabric_, LOOM_CLI_PATH, std::move(args));
  }

  static LocalFabric* fabric_;
  std::unique_ptr<Client> client_;
};
LocalFabric* BraggFabricTest::fabric_ = nullptr;

TEST_F(BraggFabricTest, EndpointAdvertisesBothKernelsAndAnEmulatedFpgaDevice) {
  auto ep = client_->GetEndpoint("ep");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  std::set<std::string> kernels;
  for (const auto& k : ep->kernels()) kernels.insert(k.name() + "@" + k.version());
  EXPECT_TRUE(kernels.contains("braggnn@1"));
  EXPECT_TRUE(kernels.contains("braggnn-fpga@1"));
  bool fpga = false;
  for (const auto& d : ep->devices()) {
    if (d.kind() != "fpga") continue;
    fpga = true;
    EXPECT_EQ(d.name(), "emulated-braggnn-fpga");
    EXPECT_TRUE(d.emulated()) << "emulation must never be advertised as hardware";
  }
  EXPECT_TRUE(fpga) << "no fpga device advertised";
  auto [code, out] = Cli({"endpoint", "status", "ep"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("fpga emulated-braggnn-fpga x1"));
  EXPECT_THAT(out, HasSubstr("(emulated)"));
}

TEST_F(BraggFabricTest, BatchesOfPeaksAreLocatedThroughTheFabric) {
  const auto peaks = science::GeneratePeaks(64, 31337);
  const Value patches = TensorValue({64, 11, 11}, std::span<const float>(peaks.patches));
  auto r = Run("braggnn", {patches});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  ASSERT_THAT(r.result().tensor_value().shape(), ::testing::ElementsAre(64, 2));
  EXPECT_LT(MedianError(Floats(r.result()), peaks.truth), 0.15);

  auto f = Run("braggnn-fpga", {patches});
  ASSERT_EQ(f.state(), v1::TASK_STATE_SUCCESS) << f.error();
  const Value& dev = Field(f.result(), "device");
  EXPECT_EQ(Field(dev, "class").string_value(), "fpga");
  EXPECT_TRUE(Field(dev, "emulated").bool_value()) << "emulation must never be reported as hardware";
  EXPECT_EQ(Field(dev, "number_format").string_value(), "e5m4");
  EXPECT_LT(MedianError(Floats(Field(f.result(), "centres")), peaks.truth), 0.4);
  auto f32 = Run("braggnn-fpga", {patches}, {{"precision", StringValue("float32")}});
  ASSERT_EQ(f32.state(), v1::TASK_STATE_SUCCESS) << f32.error();
  EXPECT_LT(MedianError(Floats(Field(f32.result(), "centres")), peaks.truth), 0.15);
}

TEST_F(BraggFabricTest, WrongShapeOrDtypeFailsNamingTheExpectedShape) {
  std::vector<float> wrong(2 * 9 * 9, 1.0f);
  auto r = Run("braggnn", {TensorValue({2, 9, 9}, std::span<const float>(wrong))});
  EXPECT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(r.error(), HasSubstr("expected a float32 tensor of shape [N, 11, 11] or [11, 11], got float32[2, 9, 9]"));
  std::vector<double> f64(121, 1.0);
  auto d = Run("braggnn-fpga", {TensorValue({11, 11}, std::span<const double>(f64))});
  EXPECT_EQ(d.state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(d.error(), HasSubstr("got float64[11, 11]"));
}

TEST_F(BraggFabricTest, CliLocatesAPeakGivenAsAJsonLiteral) {
  // One bright pixel at column 7, row 3 on a flat background.
  std::string patch = "[";
  for (int r = 0; r < 11; ++r) {
    patch += r ? ",[" : "[";
    for (int c = 0; c < 11; ++c) patch += std::string(c ? "," : "") + (r == 3 && c == 7 ? "500" : "2");
    patch += "]";
  }
  patch += "]";
  auto [code, out] =
      Cli({"run", "--endpoint", "ep", "--function", "braggnn", patch, "--kwarg", "units=\"pixels\"", "--json"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr(R"("dtype":"DTYPE_FLOAT32","shape":["1","2"])"));
  auto [fcode, fout] = Cli({"run", "--endpoint", "ep", "--function", "braggnn-fpga", patch, "--json"});
  EXPECT_EQ(fcode, 0) << fout;
  EXPECT_THAT(fout, HasSubstr("\"emulated\""));
  EXPECT_THAT(fout, HasSubstr("true"));
  auto [bad_code, bad_out] = Cli({"run", "--endpoint", "ep", "--function", "braggnn", "[[1,2],[3,4]]"});
  EXPECT_EQ(bad_code, 1) << bad_out;  // the task failed
  EXPECT_THAT(bad_out, HasSubstr("[N, 11, 11] or [11, 11], got a list of shape [2, 2]"));
}

}  // namespace
}  // namespace loom
