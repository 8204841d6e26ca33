// What an endpoint advertises: GPUs parsed from nvidia-smi's CSV (recorded files in
// tests/data/nvidia-smi), nvidia-smi absent or failing, declared devices (an emulated FPGA),
// and the CUDA_VISIBLE_DEVICES each pinned worker gets.
#include "endpoint/devices.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "common/util.h"
#include "endpoint/config.h"
#include "tests/support/test_env.h"

namespace loom::endpoint {
namespace {

std::string Data(const std::string& name) {
  return ReadFileOrEmpty(std::string(LOOM_SOURCE_DIR) + "/tests/data/nvidia-smi/" + name);
}

v1::Device Gpu(int index) {
  v1::Device d;
  d.set_kind("gpu");
  d.set_index(index);
  return d;
}

TEST(DevicesTest, ParsesEveryGpuOfNvidiaSmiOutput) {
  auto gpus = ParseNvidiaSmiGpus(Data("two-h100.csv"));
  ASSERT_TRUE(gpus.ok()) << gpus.status().ToString();
  ASSERT_EQ(gpus->size(), 2u);
  EXPECT_EQ((*gpus)[0].kind(), "gpu");
  EXPECT_EQ((*gpus)[0].index(), 0);
  EXPECT_EQ((*gpus)[0].name(), "NVIDIA H100 80GB HBM3");
  EXPECT_EQ((*gpus)[0].memory_bytes(), int64_t{81559} << 20);
  EXPECT_EQ((*gpus)[0].uuid(), "GPU-9d1b4f2e-6c3a-4e1b-8f0a-2b7c5d9e1a34");
  EXPECT_EQ((*gpus)[0].count(), 1);
  EXPECT_EQ((*gpus)[1].index(), 1);
  EXPECT_EQ((*gpus)[1].uuid(), "GPU-3f8a2c71-0b9d-4d6e-a1c2-7e5f4b3a2d10");
}

TEST(DevicesTest, ParsesMemoryWithoutUnitsAsMiB) {
  auto gpus = ParseNvidiaSmiGpus(Data("v100-nounits.csv"));
  ASSERT_TRUE(gpus.ok()) << gpus.status().ToString();
  ASSERT_EQ(gpus->size(), 1u);
  EXPECT_EQ((*gpus)[0].name(), "Tesla V100-SXM2-16GB");
  EXPECT_EQ((*gpus)[0].memory_bytes(), int64_t{16160} << 20);
}

TEST(DevicesTest, EmptyOutputIsNoGpuAndMalformedLinesAreNamed) {
  auto none = ParseNvidiaSmiGpus("\n");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto short_line = ParseNvidiaSmiGpus("0, NVIDIA H100, 81559 MiB\n");
  ASSERT_FALSE(short_line.ok());
  EXPECT_NE(short_line.status().message().find("line 1"), std::string::npos) << short_line.status().message();
  auto bad_index = ParseNvidiaSmiGpus("x, NVIDIA H100, 81559 MiB, GPU-1\n");
  ASSERT_FALSE(bad_index.ok());
  EXPECT_NE(bad_index.status().message().find("index 'x'"), std::string::npos);
  auto bad_unit = ParseNvidiaSmiGpus("0, NVIDIA H100, 81559 parsecs, GPU-1\n");
  ASSERT_FALSE(bad_unit.ok());
  EXPECT_NE(bad_unit.status().message().find("parsecs"), std::string::npos);
}

TEST(DevicesTest, AbsentNvidiaSmiMeansNoGpusWithoutAWarning) {
  std::string warning;
  EXPECT_TRUE(DiscoverGpus("loom-no-such-nvidia-smi", &warning).empty());
  EXPECT_TRUE(DiscoverGpus("/nonexistent/nvidia-smi", &warning).empty());
  EXPECT_EQ(warning, "");
}

// A stand-in nvidia-smi (a shell script) exercises the real discovery path: spawn, read, parse.
class FakeNvidiaSmi {
 public:
  explicit FakeNvidiaSmi(const std::string& body) : dir_("fake-nvidia-smi") {
    path_ = dir_.path() + "/nvidia-smi";
    std::ofstream(path_) << "#!/bin/sh\n" << body;
    ::chmod(path_.c_str(), 0755);
  }
  const std::string& path() const { return path_; }

 private:
  testing::TempDir dir_;
  std::string path_;
};

TEST(DevicesTest, DiscoversGpusByRunningNvidiaSmi) {
  FakeNvidiaSmi smi("cat '" + std::string(LOOM_SOURCE_DIR) + "/tests/data/nvidia-smi/two-h100.csv'\n");
  std::string warning;
  auto gpus = DiscoverGpus(smi.path(), &warning);
  EXPECT_EQ(warning, "");
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[1].name(), "NVIDIA H100 80GB HBM3");
}

TEST(DevicesTest, AFailingNvidiaSmiMeansNoGpusAndSaysWhy) {
  FakeNvidiaSmi smi("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n");
  std::string warning;
  EXPECT_TRUE(DiscoverGpus(smi.path(), &warning).empty());
  EXPECT_NE(warning.find("exit code 9"), std::string::npos) << warning;
  EXPECT_NE(warning.find("could not communicate"), std::string::npos) << warning;
}

TEST(DevicesTest, HostCpuCountsCoresAndMemory) {
  v1::Device cpu = HostCpu();
  EXPECT_EQ(cpu.kind(), "cpu");
  EXPECT_GE(cpu.count(), 1);
  EXPECT_GT(cpu.memory_bytes(), 0);
}

TEST(DevicesTest, DeviceFlagDeclaresAnEmulatedFpga) {
  auto d = ParseDeviceFlag("fpga:braggnn-sim:emulated");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  v1::Device dev = ToDevice(*d);
  EXPECT_EQ(dev.kind(), "fpga");
  EXPECT_EQ(dev.name(), "braggnn-sim");
  EXPECT_TRUE(dev.emulated());
  auto real = ParseDeviceFlag("fpga:xcu250");
  ASSERT_TRUE(real.ok());
  EXPECT_FALSE(real->emulated);
  EXPECT_FALSE(ParseDeviceFlag("fpga:x:maybe").ok());
  EXPECT_FALSE(ParseDeviceFlag("FPGA!").ok());
  EXPECT_FALSE(ParseDeviceFlag("").ok());
}

TEST(DevicesTest, ConfigFileDeclaresDevicesAndPinning) {
  testing::TempDir dir("endpoint-devices");
  const std::string path = dir.path() + "/endpoint.yaml";
  std::ofstream(path) << R"(
id: fpga-box
devices:
  - {class: fpga, model: braggnn-sim, emulated: true}
  - {class: fpga, model: xcu250, count: 2, memory_bytes: 1024}
workers_per_gpu: 2
nvidia_smi: none
)";
  EndpointConfig c;
  Status s = LoadEndpointConfigFile(path, &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(c.devices.size(), 2u);
  EXPECT_EQ(c.devices[0].kind, "fpga");
  EXPECT_EQ(c.devices[0].model, "braggnn-sim");
  EXPECT_TRUE(c.devices[0].emulated);
  EXPECT_EQ(c.devices[1].count, 2);
  EXPECT_EQ(c.devices[1].memory_bytes, 1024);
  EXPECT_EQ(c.workers_per_gpu, 2);
  EXPECT_EQ(c.nvidia_smi, "none");

  std::ofstream(path) << "devices:\n  - {class: fpga, colour: red}\n";
  EndpointConfig bad;
  Status b = LoadEndpointConfigFile(path, &bad);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.message().find("colour"), std::string::npos) << b.message();
  std::ofstream(path) << "devices:\n  - {class: fpga, count: 0}\n";
  EXPECT_FALSE(LoadEndpointConfigFile(path, &bad).ok());
}

TEST(DevicesTest, EachPinnedWorkerSeesItsOwnGpu) {
  std::vector<v1::Device> devices = {HostCpu(), Gpu(0), Gpu(1)};
  EXPECT_EQ(PinnedWorkerCount(devices, 2), 4);
  auto env = WorkerEnvironments(devices, 2, 4);
  ASSERT_EQ(env.size(), 4u);
  EXPECT_EQ(env[0], std::vector<std::string>{"CUDA_VISIBLE_DEVICES=0"});
  EXPECT_EQ(env[1], std::vector<std::string>{"CUDA_VISIBLE_DEVICES=0"});
  EXPECT_EQ(env[2], std::vector<std::string>{"CUDA_VISIBLE_DEVICES=1"});
  EXPECT_EQ(env[3], std::vector<std::string>{"CUDA_VISIBLE_DEVICES=1"});
}

TEST(DevicesTest, PinningFollowsTheGpuIndexesNotTheirPositions) {
  // nvidia-smi may list a subset (e.g. the host's other GPUs belong to another job).
  std::vector<v1::Device> devices = {Gpu(3), Gpu(5)};
  auto env = WorkerEnvironments(devices, 1, 3);
  ASSERT_EQ(env.size(), 3u);
  EXPECT_EQ(env[0], std::vector<std::string>{"CUDA_VISIBLE_DEVICES=3"});
  EXPECT_EQ(env[1], std::vector<std::string>{"CUDA_VISIBLE_DEVICES=5"});
  // A worker beyond the GPUs' share sees none rather than sharing one unasked.
  EXPECT_EQ(env[2], std::vector<std::string>{"CUDA_VISIBLE_DEVICES="});
}

TEST(DevicesTest, NoPinningWithoutGpusOrWhenOff) {
  std::vector<v1::Device> cpu_only = {HostCpu()};
  EXPECT_EQ(PinnedWorkerCount(cpu_only, 2), 0);
  for (const auto& e : WorkerEnvironments(cpu_only, 2, 3)) EXPECT_TRUE(e.empty());
  std::vector<v1::Device> gpus = {Gpu(0)};
  EXPECT_EQ(PinnedWorkerCount(gpus, 0), 0);
  auto env = WorkerEnvironments(gpus, 0, 2);
  ASSERT_EQ(env.size(), 2u);
  for (const auto& e : env) EXPECT_TRUE(e.empty());
}

}  // namespace
}  // namespace loom::endpoint
