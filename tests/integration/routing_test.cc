// Capability routing through a real fabric (docs/ENDPOINTS.md, "Capability routing and
// groups"): endpoints advertise devices (CPUs, GPUs from nvidia-smi, a declared emulated FPGA)
// and are pinned to GPUs; a submit the endpoint cannot run is refused at submit; a submit to a
// group spreads by load, and when a member is killed (SIGKILL) its tasks finish on the other.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <set>

#include "common/local_fabric.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::ConnectClient;
using loom::testing::MakeFabric;
using loom::testing::RegisterBuiltins;
using loom::testing::WaitFor;

// The environment of a live process, as NAME=value entries.
std::set<std::string> EnvironOf(pid_t pid) {
  std::string raw = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/environ");
  std::set<std::string> out;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    out.insert(raw.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

TEST(RoutingTest, EndpointsAdvertiseDevicesAndSubmitsTheyCannotRunAreRefusedAtSubmit) {
  auto fabric = MakeFabric("routing-caps");
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  // A stand-in nvidia-smi that reports two GPUs; one worker per GPU, each pinned.
  const std::string smi = fabric->state_dir() + "/nvidia-smi";
  std::ofstream(smi) << "#!/bin/sh\n"
                        "echo '0, NVIDIA H100 80GB HBM3, 81559 MiB, GPU-aaaa'\n"
                        "echo '1, NVIDIA H100 80GB HBM3, 81559 MiB, GPU-bbbb'\n";
  ::chmod(smi.c_str(), 0755);
  ASSERT_TRUE(fabric->StartEndpoint("gpu-box", 1, {"--nvidia-smi", smi, "--workers-per-gpu", "1"}).ok());
  ASSERT_TRUE(
      fabric->StartEndpoint("fpga-box", 1, {"--nvidia-smi", "none", "--device", "fpga:braggnn-sim:emulated"}).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  FunctionOptions gpu_only, fpga_only;
  gpu_only.required_device_classes = {"gpu"};
  fpga_only.required_device_classes = {"fpga"};
  ASSERT_TRUE(client->RegisterFunction("on_gpu", "echo@1", gpu_only).ok());
  ASSERT_TRUE(client->RegisterFunction("on_fpga", "echo@1", fpga_only).ok());
  ASSERT_TRUE(client->RegisterFunction("echo9", "echo@9").ok());

  // What each advertised, as the service stores and serves it.
  auto gpu_box = client->GetEndpoint("gpu-box");
  ASSERT_TRUE(gpu_box.ok()) << gpu_box.status().ToString();
  EXPECT_EQ(gpu_box->worker_count(), 2);  // one per GPU, in place of --workers 1
  std::map<std::string, int> kinds;
  for (const auto& d : gpu_box->devices()) ++kinds[d.kind()];
  EXPECT_EQ(kinds["cpu"], 1);
  EXPECT_EQ(kinds["gpu"], 2);
  auto fpga_box = client->GetEndpoint("fpga-box");
  ASSERT_TRUE(fpga_box.ok());
  bool emulated_fpga = false;
  for (const auto& d : fpga_box->devices()) emulated_fpga |= d.kind() == "fpga" && d.emulated();
  EXPECT_TRUE(emulated_fpga);
  for (const auto& d : fpga_box->devices()) EXPECT_NE(d.kind(), "gpu");

  // Each worker of the GPU box sees its own GPU.
  std::set<std::string> pinned;
  ASSERT_TRUE(WaitFor(
      [&] {
        pinned.clear();
        for (pid_t w : loom::testing::ChildPids(fabric->endpoint("gpu-box")->pid())) {
          for (const auto& e : EnvironOf(w)) {
            if (e.rfind("CUDA_VISIBLE_DEVICES=", 0) == 0) pinned.insert(e);
          }
        }
        return pinned.size() == 2;
      },
      10s));
  EXPECT_EQ(pinned, (std::set<std::string>{"CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"}));

  // Refused at submit, naming what is missing.
  auto no_gpu = client->Submit("fpga-box", "on_gpu", {IntValue(1)});
  ASSERT_EQ(no_gpu.status().code(), StatusCode::kFailedPrecondition) << no_gpu.status().ToString();
  EXPECT_NE(no_gpu.status().message().find("no device of class 'gpu'"), std::string::npos) << no_gpu.status().message();
  auto no_fpga = client->Submit("gpu-box", "on_fpga", {IntValue(1)});
  ASSERT_EQ(no_fpga.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(no_fpga.status().message().find("'fpga'"), std::string::npos) << no_fpga.status().message();
  auto wrong_version = client->Submit("gpu-box", "echo9", {IntValue(1)});
  ASSERT_EQ(wrong_version.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong_version.status().message().find("only at version 1, not 'echo@9'"), std::string::npos)
      << wrong_version.status().message();

  // And run where they can.
  for (auto [ep, fn] : {std::pair{"gpu-box", "on_gpu"}, std::pair{"fpga-box", "on_fpga"}}) {
    auto id = client->Submit(ep, fn, {IntValue(7)});
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    auto r = client->GetResult(*id, 20s);
    ASSERT_TRUE(r.ok() && r->has_value()) << fn;
    EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS);
    EXPECT_EQ((*r)->result().int_value(), 7);
  }
}

TEST(RoutingTest, AGroupSpreadsTasksAndAKilledMembersTasksAllFinishOnTheOther) {
  auto fabric = MakeFabric("routing-group", {"--heartbeat-period-ms", "200", "--heartbeat-misses", "3"});
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  ASSERT_TRUE(fabric->StartEndpoint("ep-a", 1, {"--group", "beamline", "--nvidia-smi", "none"}).ok());
  ASSERT_TRUE(fabric->StartEndpoint("ep-b", 1, {"--group", "beamline", "--nvidia-smi", "none"}).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  std::vector<v1::SubmitRequest> batch;
  for (int i = 0; i < 12; ++i) {
    v1::SubmitRequest r;
    r.set_endpoint("group:beamline");
    r.set_function("sleep");
    *r.add_args() = DoubleValue(0.5);
    batch.push_back(std::move(r));
  }
  auto ids = client->SubmitBatch(batch);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  // Spread by load: the two members have one worker each and nothing queued.
  std::map<std::string, std::vector<std::string>> on;
  for (const auto& id : *ids) on[client->GetStatus(id)->endpoint()].push_back(id);
  ASSERT_EQ(on["ep-a"].size(), 6u);
  ASSERT_EQ(on["ep-b"].size(), 6u);
  // Kill ep-a for real once it is running one of them: the rest it holds are queued there.
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& id : on["ep-a"]) {
          if (client->GetStatus(id)->state() == v1::TASK_STATE_RUNNING) return true;
        }
        return false;
      },
      10s));
  const int64_t killed_at = NowNanos();
  fabric->KillEndpoint("ep-a", SIGKILL);
  std::map<std::string, v1::TaskRecord> done;
  Status s = client->StreamResults(
      *ids,
      [&](const v1::TaskRecord& r) {
        done[r.id()] = r;
        return true;
      },
      60s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(done.size(), 12u);
  int moved = 0;
  for (const auto& [id, r] : done) {
    EXPECT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << id << ": " << r.error();
    bool failover = false;
    for (const auto& t : r.timestamps()) failover |= t.stage() == "failover";
    moved += failover ? 1 : 0;
    if (r.endpoint() == "ep-a") {
      // Only a task ep-a finished (and the service committed) before it died stays its own.
      EXPECT_FALSE(failover) << id;
      EXPECT_LT(r.timestamps(r.timestamps_size() - 1).unix_nanos(), killed_at) << id;
    } else {
      EXPECT_EQ(r.endpoint(), "ep-b") << id;
    }
  }
  // ep-a held six and ran one at a time: at least the five it had not started moved.
  EXPECT_GE(moved, 5);
  // Once ep-a is seen offline, a new group submit goes to the live member.
  ASSERT_TRUE(WaitFor([&] { return client->GetEndpoint("ep-a")->status() == v1::ENDPOINT_STATUS_OFFLINE; }, 10s));
  auto next = client->Submit("group:beamline", "echo", {IntValue(5)});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(client->GetStatus(*next)->endpoint(), "ep-b");
}

}  // namespace
}  // namespace loom
