// Blocks of workers from a provider, with autoscaling, through a real fabric (redis-server,
// loom-service, loom-endpoint; loom-manager and loom-worker in the blocks):
//   - local blocks (process groups on this host): scale up under load, down when idle; a block
//     killed mid-task has its task re-run and is replaced; stopping the endpoint leaves nothing;
//   - Slurm blocks on a real one-node Slurm (tests/support/slurm_cluster.h): the same life cycle
//     with sbatch/squeue/scancel, skipped (with the reason) when not root or Slurm is missing;
//   - a local block whose workers run under bubblewrap (the config's sandbox: section), probed
//     with the kernels of tests/support/probe_plugin;
//   - the block link's CURVE: a process that connects to the endpoint's worker port without
//     the run's worker key (none, or another) gets no task, while the real block keeps working.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/local_fabric.h"
#include "common/util.h"
#include "common/value.h"
#include "common/wire.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/slurm_cluster.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::ChildPids;
using loom::testing::RegisterBuiltins;
using loom::testing::WaitFor;

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Writes an endpoint config with blocks from `provider_yaml` (the provider section's lines),
// and `extra_yaml` (whole top-level sections).
std::string WriteConfig(const std::string& dir, const std::string& provider_yaml, const std::string& engine_yaml,
                        const std::string& extra_yaml = "") {
  const std::string path = dir + "/endpoint-blocks.yaml";
  std::ofstream(path) << "prefetch: 1\n" << extra_yaml << "engine:\n" << engine_yaml << "provider:\n" << provider_yaml;
  return path;
}

std::vector<std::string> SubmitSleeps(Client& c, int n, double seconds) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    auto id = c.Submit("ep", "sleep", {DoubleValue(seconds)});
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (id.ok()) ids.push_back(*id);
  }
  return ids;
}

void ExpectAllSucceed(Client& c, const std::vector<std::string>& ids, std::chrono::milliseconds timeout) {
  for (const auto& id : ids) {
    auto r = c.GetResult(id, timeout);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(r->has_value()) << "task " << id << " did not finish in time";
    EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
  }
}

// Processes in the process groups of the endpoint's local blocks: the managers (its children)
// and their workers.
std::set<pid_t> BlockProcesses(pid_t endpoint) {
  std::set<pid_t> out;
  for (pid_t manager : ChildPids(endpoint)) {
    out.insert(manager);
    for (pid_t w : ChildPids(manager)) out.insert(w);
  }
  return out;
}

class LocalBlocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fabric_ = loom::testing::MakeFabric("local-blocks");
    ASSERT_TRUE(fabric_->StartRedis().ok());
    ASSERT_TRUE(fabric_->StartService().ok());
  }
  Status StartEndpoint(const std::string& provider, const std::string& engine, const std::string& extra = "") {
    const std::string config = WriteConfig(fabric_->state_dir(), provider, engine, extra);
    return fabric_->StartEndpoint("ep", 1, {"--config", config});
  }
  pid_t EndpointPid() { return fabric_->endpoint("ep")->pid(); }
  // Runs `fn` on the endpoint and waits for its record (empty when it did not finish).
  v1::TaskRecord Run(Client& client, const std::string& fn, std::vector<Value> args) {
    auto id = client.Submit("ep", fn, std::move(args));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    auto r = client.GetResult(id.ok() ? *id : "", 30s);
    EXPECT_TRUE(r.ok() && r->has_value()) << fabric_->LogTail("endpoint-ep");
    return r.ok() && r->has_value() ? **r : v1::TaskRecord();
  }
  std::unique_ptr<LocalFabric> fabric_;
};

TEST_F(LocalBlocksTest, ScalesUpUnderLoadAndDownWhenIdle) {
  Status s = StartEndpoint("  type: local\n  init_blocks: 1\n  min_blocks: 0\n  max_blocks: 3\n",
                           "  workers_per_node: 1\n  max_idletime_s: 1.5\n  poll_period_ms: 200\n");
  ASSERT_TRUE(s.ok()) << s.ToString() << fabric_->LogTail("endpoint-ep");
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  EXPECT_EQ(ChildPids(EndpointPid()).size(), 1u) << "init_blocks: one block at start";

  auto ids = SubmitSleeps(*client, 6, 1.5);
  // Six tasks on one-worker blocks: the endpoint adds blocks up to max_blocks.
  EXPECT_TRUE(WaitFor([&] { return ChildPids(EndpointPid()).size() == 3; }, 15s))
      << "blocks now: " << ChildPids(EndpointPid()).size() << "\n"
      << fabric_->LogTail("endpoint-ep");
  // Three managers and their workers.
  EXPECT_TRUE(WaitFor([&] { return BlockProcesses(EndpointPid()).size() >= 6; }, 10s));
  const auto during = BlockProcesses(EndpointPid());
  ExpectAllSucceed(*client, ids, 30s);

  // Idle for max_idletime: every block is released (min_blocks 0), with all its processes.
  EXPECT_TRUE(WaitFor([&] { return ChildPids(EndpointPid()).empty(); }, 15s))
      << "blocks left: " << ChildPids(EndpointPid()).size() << "\n"
      << fabric_->LogTail("endpoint-ep");
  EXPECT_TRUE(WaitFor(
      [&] {
        for (pid_t p : during) {
          if (Alive(p)) return false;
        }
        return true;
      },
      10s))
      << "a manager or worker outlived its released block";

  // Work after scaling to zero brings a block back.
  auto again = SubmitSleeps(*client, 1, 0.1);
  ExpectAllSucceed(*client, again, 30s);
}

TEST_F(LocalBlocksTest, KilledBlockHasItsTaskRerunAndIsReplacedAndStopLeavesNothing) {
  Status s = StartEndpoint("  type: local\n  init_blocks: 1\n  min_blocks: 1\n  max_blocks: 1\n",
                           "  workers_per_node: 1\n  max_idletime_s: 60\n  poll_period_ms: 200\n");
  ASSERT_TRUE(s.ok()) << s.ToString() << fabric_->LogTail("endpoint-ep");
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  auto managers = ChildPids(EndpointPid());
  ASSERT_EQ(managers.size(), 1u);
  const pid_t first = *managers.begin();

  auto ids = SubmitSleeps(*client, 1, 3);
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = client->GetStatus(ids[0]);
        return st.ok() && st->state() == v1::TASK_STATE_RUNNING;
      },
      15s));
  // The whole block dies at once (as a node would): kill -9 its process group.
  ASSERT_EQ(::kill(-first, SIGKILL), 0);
  auto r = client->GetResult(ids[0], 30s);
  ASSERT_TRUE(r.ok() && r->has_value()) << fabric_->LogTail("endpoint-ep");
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
  EXPECT_EQ((*r)->attempts(), 2);
  ASSERT_EQ((*r)->attempt_history_size(), 1);
  EXPECT_EQ((*r)->attempt_history(0).failure(), v1::FAILURE_KIND_WORKER_LOST);
  EXPECT_NE((*r)->attempt_history(0).error().find("block"), std::string::npos) << (*r)->attempt_history(0).error();
  // A new block replaced it.
  managers = ChildPids(EndpointPid());
  ASSERT_EQ(managers.size(), 1u);
  EXPECT_NE(*managers.begin(), first);

  // Stopping the endpoint ends its blocks: no manager or worker is left.
  const auto processes = BlockProcesses(EndpointPid());
  ASSERT_FALSE(processes.empty());
  fabric_->KillEndpoint("ep", SIGTERM);
  for (pid_t p : processes) EXPECT_FALSE(Alive(p)) << "process " << p << " outlived the endpoint";
}

// The command line of a process, its arguments split.
std::vector<std::string> CommandLine(pid_t pid) {
  std::vector<std::string> out;
  const std::string raw = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/cmdline");
  for (size_t start = 0; start < raw.size();) {
    const size_t end = raw.find('\0', start);
    out.push_back(raw.substr(start, end - start));
    start = end == std::string::npos ? raw.size() : end + 1;
  }
  return out;
}

// The value of `--flag VALUE` or `--flag=VALUE` in `argv`, or "".
std::string FlagValue(const std::vector<std::string>& argv, const std::string& flag) {
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == flag && i + 1 < argv.size()) return argv[i + 1];
    if (argv[i].starts_with(flag + "=")) return argv[i].substr(flag.size() + 1);
  }
  return "";
}

// One block of one worker that lives as long as the endpoint.
constexpr char kOneBlock[] = "  type: local\n  init_blocks: 1\n  min_blocks: 1\n  max_blocks: 1\n";
constexpr char kOneWorker[] = "  workers_per_node: 1\n  max_idletime_s: 60\n  poll_period_ms: 200\n";

TEST_F(LocalBlocksTest, ABlocksWorkersRunUnderBubblewrapAsTheSandboxSectionSays) {
  loom::testing::TempDir writable("block-sandbox-writable");
  // Not under /tmp (the sandbox has its own): a directory of the build tree, on the read-only root.
  const std::string outside =
      std::filesystem::weakly_canonical(loom::testing::BinDir() + "/../block-outside-" + NewId());
  std::filesystem::create_directories(outside);
  Status s =
      StartEndpoint(kOneBlock, kOneWorker,
                    std::string("plugins: [") + LOOM_PROBE_PLUGIN + "]\n" +
                        "sandbox:\n  type: bubblewrap\n  network: true\n  writable: [" + writable.path() + "]\n");
  ASSERT_TRUE(s.ok()) << s.ToString() << fabric_->LogTail("endpoint-ep");
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  ASSERT_TRUE(client->RegisterFunction("probe_write", "probe_write@1").ok());
  auto run = [&](const std::string& fn, std::vector<Value> args) { return Run(*client, fn, std::move(args)); };
  auto r = run("add", {IntValue(2), IntValue(40)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(r.result().int_value(), 42);

  // The manager started its worker through bwrap, with the run's key readable inside.
  auto managers = ChildPids(EndpointPid());
  ASSERT_EQ(managers.size(), 1u);
  const auto manager_argv = CommandLine(*managers.begin());
  const std::string key_file = FlagValue(manager_argv, "--curve-secret-key-file");
  ASSERT_FALSE(key_file.empty());
  auto workers = ChildPids(*managers.begin());
  ASSERT_EQ(workers.size(), 1u);
  const auto worker_argv = CommandLine(*workers.begin());
  ASSERT_FALSE(worker_argv.empty());
  EXPECT_EQ(std::filesystem::path(worker_argv[0]).filename(), "bwrap");
  const std::vector<std::string> ro = {"--ro-bind", key_file, key_file};
  EXPECT_NE(std::search(worker_argv.begin(), worker_argv.end(), ro.begin(), ro.end()), worker_argv.end());

  // Its kernels cannot write outside the sandbox; the control is the test itself writing there.
  const std::string target = outside + "/from-block";
  r = run("probe_write", {StringValue(target)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(r.error().find("Read-only file system"), std::string::npos) << r.error();
  EXPECT_FALSE(std::filesystem::exists(target));
  std::ofstream(outside + "/from-test") << "x";
  EXPECT_TRUE(std::filesystem::exists(outside + "/from-test"));
  // The allow-listed directory is writable; /tmp is the sandbox's own.
  r = run("probe_write", {StringValue(writable.path() + "/result.txt")});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(ReadFileOrEmpty(writable.path() + "/result.txt"), "written by probe_write\n");
  const std::string in_tmp = "/tmp/loom-block-probe-" + NewId();
  r = run("probe_write", {StringValue(in_tmp)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_FALSE(std::filesystem::exists(in_tmp));
  std::error_code ec;
  std::filesystem::remove_all(outside, ec);
}

// sandbox.network: false for a block: the workers have no network, so they reach the endpoint
// through their manager's relay (a Unix socket bound into the sandbox; worker/relay.h), and a
// kernel's own connection to a host port fails.
TEST_F(LocalBlocksTest, ABlocksWorkersWithoutNetworkReachTheEndpointThroughTheManagersRelay) {
  Status s = StartEndpoint(kOneBlock, kOneWorker,
                           std::string("plugins: [") + LOOM_PROBE_PLUGIN + "]\n" +
                               "sandbox:\n  type: bubblewrap\n  network: false\n");
  ASSERT_TRUE(s.ok()) << s.ToString() << fabric_->LogTail("endpoint-ep");
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  ASSERT_TRUE(client->RegisterFunction("probe_connect", "probe_connect@1").ok());
  auto r = Run(*client, "add", {IntValue(2), IntValue(40)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(r.result().int_value(), 42);

  auto managers = ChildPids(EndpointPid());
  ASSERT_EQ(managers.size(), 1u);
  const std::string address = FlagValue(CommandLine(*managers.begin()), "--endpoint");
  ASSERT_TRUE(address.starts_with("tcp://127.0.0.1:")) << address;
  auto workers = ChildPids(*managers.begin());
  ASSERT_EQ(workers.size(), 1u);
  const auto worker_argv = CommandLine(*workers.begin());
  EXPECT_NE(std::find(worker_argv.begin(), worker_argv.end(), "--unshare-net"), worker_argv.end());
  EXPECT_TRUE(FlagValue(worker_argv, "--endpoint").starts_with("ipc://")) << FlagValue(worker_argv, "--endpoint");
  EXPECT_EQ(FlagValue(worker_argv, "--curve-secret-key-file"), "") << "the relay holds the key, not the worker";

  // The endpoint's own TCP port, open on the host, is out of the kernel's reach.
  const std::string port = address.substr(address.rfind(':') + 1);
  r = Run(*client, "probe_connect", {StringValue("127.0.0.1"), IntValue(std::stoi(port))});
  ASSERT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(r.error().find("Connection refused"), std::string::npos) << r.error();

  // The relay's directory goes with the block.
  const std::string relay = FlagValue(worker_argv, "--endpoint");
  const std::string relay_dir = std::filesystem::path(relay.substr(std::string("ipc://").size())).parent_path();
  EXPECT_TRUE(std::filesystem::exists(relay_dir)) << relay_dir;
  fabric_->KillEndpoint("ep", SIGTERM);
  EXPECT_TRUE(WaitFor([&] { return !std::filesystem::exists(relay_dir); }, 10s)) << relay_dir << " was left behind";
}

// A DEALER that poses as worker `id` of a live block and says hello, as a real worker does.
zmq::socket_t Impostor(zmq::context_t& ctx, const std::string& address, const std::string& id,
                       const std::optional<curve::KeyPair>& keys, const std::string& server_key) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::routing_id, id);
  s.set(zmq::sockopt::linger, 0);
  if (keys) {
    Status st = curve::MakeClient(s, *keys, server_key);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  s.connect(address);
  v1::WorkerEnvelope hello;
  hello.mutable_hello()->set_pid(::getpid());
  (void)s.send(ToMessage(hello), zmq::send_flags::dontwait);
  return s;
}

TEST_F(LocalBlocksTest, AConnectionWithoutTheRunsWorkerKeyGetsNoTaskWhileTheBlockWorks) {
  Status s = StartEndpoint(kOneBlock, kOneWorker);
  ASSERT_TRUE(s.ok()) << s.ToString() << fabric_->LogTail("endpoint-ep");
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  auto managers = ChildPids(EndpointPid());
  ASSERT_EQ(managers.size(), 1u);
  const auto argv = CommandLine(*managers.begin());
  const std::string address = FlagValue(argv, "--endpoint");
  const std::string block = FlagValue(argv, "--block-id");
  const std::string server_key = FlagValue(argv, "--endpoint-public-key");
  const std::string key_file = FlagValue(argv, "--curve-secret-key-file");
  ASSERT_TRUE(address.starts_with("tcp://")) << address;
  ASSERT_TRUE(curve::IsValidKey(server_key)) << server_key;
  // The workers' key is on disk for the job only: nobody else may read it.
  struct stat st {};
  ASSERT_EQ(::stat(key_file.c_str(), &st), 0) << key_file;
  EXPECT_EQ(st.st_mode & 0077, 0u) << std::oct << st.st_mode;

  // Two processes pose as workers of the live block: one without CURVE, one with a key of its own.
  zmq::context_t ctx;
  auto other = curve::GenerateKeyPair();
  ASSERT_TRUE(other.ok());
  zmq::socket_t plain = Impostor(ctx, address, block + ":evil:w0.1", std::nullopt, "");
  zmq::socket_t wrong = Impostor(ctx, address, block + ":evil:w1.1", *other, server_key);
  EXPECT_TRUE(WaitFor(
      [&] {
        return fabric_->LogTail("endpoint-ep", 20000).find("refused a block worker connection") != std::string::npos;
      },
      10s))
      << fabric_->LogTail("endpoint-ep");

  // With one real worker and prefetch 1, an admitted impostor would be handed some of these.
  auto ids = SubmitSleeps(*client, 4, 0.2);
  ExpectAllSucceed(*client, ids, 30s);
  zmq::pollitem_t items[] = {{plain.handle(), 0, ZMQ_POLLIN, 0}, {wrong.handle(), 0, ZMQ_POLLIN, 0}};
  EXPECT_EQ(zmq::poll(items, 2, std::chrono::milliseconds(0)), 0) << "an impostor was sent something";
  const std::string log = fabric_->LogTail("endpoint-ep", 50000);
  EXPECT_EQ(log.find(":evil:"), std::string::npos) << "the endpoint took an impostor for a worker:\n" << log;
}

// ------------------------------------------------------------------------------- real Slurm

class SlurmBlocksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = loom::testing::SlurmCluster::Unavailable();
    if (!skip_reason_.empty()) return;
    dir_ = new loom::testing::TempDir("slurm");
    auto c = loom::testing::SlurmCluster::Start(dir_->path());
    if (!c.ok()) {
      start_error_ = c.status().ToString();
      return;
    }
    cluster_ = std::move(c).value().release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_NE(cluster_, nullptr) << "the Slurm cluster did not start: " << start_error_;
    ASSERT_TRUE(cluster_->CancelAll().ok());
    fabric_ = loom::testing::MakeFabric("slurm-blocks");
    ASSERT_TRUE(fabric_->StartRedis().ok());
    ASSERT_TRUE(fabric_->StartService().ok());
  }
  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      std::cerr << "endpoint log:\n" << fabric_->LogTail("endpoint-ep", 4000) << "\n" << cluster_->LogTails();
    }
  }
  Status StartEndpoint(int min_blocks, int max_blocks, double max_idletime_s) {
    const std::string provider = "  type: slurm\n  partition: " + cluster_->partition() +
                                 "\n  init_blocks: 1\n  min_blocks: " + std::to_string(min_blocks) +
                                 "\n  max_blocks: " + std::to_string(max_blocks) +
                                 "\n  walltime: \"00:10:00\"\n  worker_init:\n    - export LOOM_TEST_INIT=1\n";
    const std::string engine =
        "  workers_per_node: 1\n  max_idletime_s: " + std::to_string(max_idletime_s) + "\n  poll_period_ms: 250\n";
    return fabric_->StartEndpoint("ep", 1, {"--config", WriteConfig(fabric_->state_dir(), provider, engine)});
  }
  size_t Jobs() {
    auto j = cluster_->QueuedJobs();
    return j.ok() ? j->size() : 0;
  }

  static std::string skip_reason_;
  static std::string start_error_;
  static loom::testing::TempDir* dir_;
  static loom::testing::SlurmCluster* cluster_;
  std::unique_ptr<LocalFabric> fabric_;
};
std::string SlurmBlocksTest::skip_reason_;
std::string SlurmBlocksTest::start_error_;
loom::testing::TempDir* SlurmBlocksTest::dir_ = nullptr;
loom::testing::SlurmCluster* SlurmBlocksTest::cluster_ = nullptr;

TEST_F(SlurmBlocksTest, BlockRunsTasksScalesUpUnderLoadAndDownWhenIdle) {
  Status s = StartEndpoint(0, 2, 2);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Jobs(), 1u) << "init_blocks: one Slurm job";
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  auto ids = SubmitSleeps(*client, 4, 1.5);
  EXPECT_TRUE(WaitFor([&] { return Jobs() == 2; }, 20s)) << "jobs: " << Jobs();
  ExpectAllSucceed(*client, ids, 40s);
  EXPECT_TRUE(WaitFor([&] { return Jobs() == 0; }, 20s)) << "idle blocks were not released; jobs: " << Jobs();
}

TEST_F(SlurmBlocksTest, ScancelMidTaskRerunsItsTaskAndReplacesTheBlock) {
  Status s = StartEndpoint(1, 1, 60);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto jobs = cluster_->QueuedJobs();
  ASSERT_TRUE(jobs.ok() && jobs->size() == 1u);
  const std::string first = (*jobs)[0];
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  // Longer than KillWait (2 s in the test slurm.conf): scancel's SIGTERM lets a worker finish
  // its task, the SIGKILL after KillWait does not.
  auto ids = SubmitSleeps(*client, 1, 6);
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = client->GetStatus(ids[0]);
        return st.ok() && st->state() == v1::TASK_STATE_RUNNING;
      },
      20s));
  ASSERT_TRUE(cluster_->Run({"scancel", first}).ok());
  auto r = client->GetResult(ids[0], 40s);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
  EXPECT_EQ((*r)->attempts(), 2);
  ASSERT_EQ((*r)->attempt_history_size(), 1);
  EXPECT_EQ((*r)->attempt_history(0).failure(), v1::FAILURE_KIND_WORKER_LOST);
  jobs = cluster_->QueuedJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 1u) << "the block was not replaced";
  EXPECT_NE((*jobs)[0], first);
}

TEST_F(SlurmBlocksTest, EndpointStopLeavesNoJob) {
  Status s = StartEndpoint(2, 2, 60);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(WaitFor([&] { return Jobs() == 2; }, 10s));
  fabric_->KillEndpoint("ep", SIGTERM);
  EXPECT_EQ(Jobs(), 0u) << "the endpoint left Slurm jobs behind";
}

}  // namespace
}  // namespace loom
