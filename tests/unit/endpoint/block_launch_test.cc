// The command lines of a block, end to end without processes: the loom-manager command the
// endpoint puts in a block's job script (endpoint/endpoint.h BlockManagerArgv), parsed as
// loom-manager parses it, and the loom-worker command the manager then runs
// (worker/manager.h BlockWorkerLaunch): wrapped for the container runtime or bubblewrap of the
// endpoint's config, carrying the run's worker key file and the endpoint's public key.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "common/launch.h"
#include "endpoint/config.h"
#include "endpoint/endpoint.h"
#include "tests/support/test_env.h"
#include "worker/manager.h"

namespace loom::endpoint {
namespace {

using Args = std::vector<std::string>;

// A valid Z85 public key that begins with '-', as about one key in 85 does.
constexpr char kPublicKey[] = "-1ROnpvLh*Nd)0%a}!v8RwaGd?XArqf[Q>]B2N.=";

worker::ManagerFlags ParseAsManager(const Args& argv) {
  std::vector<char*> raw;
  for (const auto& a : argv) raw.push_back(const_cast<char*>(a.c_str()));
  worker::ManagerFlags f;
  auto code = worker::ParseManagerFlags(static_cast<int>(raw.size()), raw.data(), &f);
  EXPECT_FALSE(code.has_value()) << "loom-manager refused its own endpoint's command line";
  return f;
}

class BlockLaunchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.worker_binary = "/opt/loom/bin/loom-worker";
    config_.engine.workers_per_node = 2;
    config_.plugins = {"/opt/loom/lib/probe.so"};
    key_file_ = dir_.path() + "/worker-1234abcd.key";
    launch_file_ = dir_.path() + "/launch-1234abcd.yaml";
  }
  // The manager's command line, and the worker command that manager runs in slot 1, generation 3.
  Result<LaunchCommand> WorkerOfBlock(Args* manager_argv, const std::string& relay_dir = "",
                                      bool* uses_relay = nullptr) {
    std::ofstream(launch_file_) << LaunchSettingsYaml(config_.container, config_.sandbox);
    *manager_argv =
        BlockManagerArgv(config_, {"tcp://login1:40123", "b1a2b3c-1", key_file_, kPublicKey,
                                   config_.container.enabled() || config_.sandbox.enabled() ? launch_file_ : ""});
    worker::ManagerFlags f = ParseAsManager(*manager_argv);
    worker::BlockLaunch launch;
    if (!f.launch_file.empty()) {
      Status s = LoadLaunchSettingsFile(f.launch_file, &launch.container, &launch.sandbox);
      if (!s.ok()) return s;
    }
    if (uses_relay != nullptr) *uses_relay = worker::UsesRelay(launch);
    return worker::BlockWorkerLaunch(f, launch, worker::BlockWorkerId(f.block_id, "node7", 1, 3), 1000, 100,
                                     relay_dir);
  }
  Args BareWorker() const {
    return {"/opt/loom/bin/loom-worker",
            "--endpoint",
            "tcp://login1:40123",
            "--worker-id",
            "b1a2b3c-1:node7:w1.3",
            "--log-level",
            config_.log_level,
            "--max-message-bytes",
            std::to_string(config_.max_message_bytes + (1 << 20)),
            "--curve-secret-key-file",
            key_file_,
            std::string("--endpoint-public-key=") + kPublicKey,
            "--plugin",
            "/opt/loom/lib/probe.so"};
  }

  loom::testing::TempDir dir_{"block-launch"};
  EndpointConfig config_;
  std::string key_file_, launch_file_;
};

TEST_F(BlockLaunchTest, WithoutContainerOrSandboxTheWorkerRunsBareWithTheRunsKey) {
  Args manager;
  auto w = WorkerOfBlock(&manager);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(manager, (Args{"/opt/loom/bin/loom-manager", "--endpoint", "tcp://login1:40123", "--block-id", "b1a2b3c-1",
                           "--workers", "2", "--worker-binary", "/opt/loom/bin/loom-worker", "--max-message-bytes",
                           std::to_string(config_.max_message_bytes + (1 << 20)), "--log-level", config_.log_level,
                           "--curve-secret-key-file", key_file_, std::string("--endpoint-public-key=") + kPublicKey,
                           "--plugin", "/opt/loom/lib/probe.so"}));
  EXPECT_EQ(w->argv, BareWorker());
  EXPECT_TRUE(w->cleanup.empty());
}

TEST_F(BlockLaunchTest, ADockerBlockRunsEachWorkerThroughTheRuntimeWithItsKeyBoundReadOnly) {
  config_.container.runtime = "docker";
  config_.container.runtime_binary = "/usr/local/bin/fake-docker";
  config_.container.image = "loom-worker:test";
  config_.container.worker_binary = "/usr/local/bin/loom-worker";
  config_.container.options = {"--network", "host"};
  Args manager;
  auto w = WorkerOfBlock(&manager);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_GE(manager.size(), 2u);
  EXPECT_EQ(Args(manager.end() - 4, manager.end() - 2), (Args{"--launch-file", launch_file_}));

  Args inner = BareWorker();
  inner[0] = "/usr/local/bin/loom-worker";  // the image's worker, not the host's
  Args want = {"/usr/local/bin/fake-docker",
               "run",
               "--rm",
               "--init",
               "--name",
               "loom-b1a2b3c-1-node7-w1.3",
               "--user",
               "1000:100",
               "--volume",
               key_file_ + ":" + key_file_ + ":ro",
               "--network",
               "host",
               "loom-worker:test"};
  want.insert(want.end(), inner.begin(), inner.end());
  EXPECT_EQ(w->argv, want);
  EXPECT_EQ(w->cleanup, (Args{"/usr/local/bin/fake-docker", "rm", "--force", "loom-b1a2b3c-1-node7-w1.3"}));
}

TEST_F(BlockLaunchTest, ABubblewrapBlockKeepsTheNetworkAndBindsTheKeyAfterThePrivateTmp) {
  config_.sandbox.type = "bubblewrap";
  config_.sandbox.network = true;
  config_.sandbox.writable = {"/scratch"};
  Args manager;
  auto w = WorkerOfBlock(&manager);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  // The sandbox's own flags are endpoint_launch_test's; here what a block changes.
  const Args& argv = w->argv;
  ASSERT_FALSE(argv.empty());
  EXPECT_EQ(argv[0], "bwrap");
  EXPECT_EQ(std::find(argv.begin(), argv.end(), "--unshare-net"), argv.end()) << "the worker needs TCP to its endpoint";
  auto at = [&](const Args& part) { return std::search(argv.begin(), argv.end(), part.begin(), part.end()); };
  EXPECT_LT(at({"--tmpfs", "/tmp"}), at({"--ro-bind", key_file_, key_file_}));
  EXPECT_NE(at({"--ro-bind", key_file_, key_file_}), argv.end());
  EXPECT_NE(at({"--bind", "/scratch", "/scratch"}), argv.end());
  Args tail = {"--"};
  const Args inner = BareWorker();
  tail.insert(tail.end(), inner.begin(), inner.end());
  ASSERT_GE(argv.size(), tail.size());
  EXPECT_EQ(Args(argv.end() - static_cast<std::ptrdiff_t>(tail.size()), argv.end()), tail);
}

// Without a network the worker cannot reach the endpoint's TCP socket: it connects to the
// manager's relay (worker/relay.h) over a Unix socket in a directory bound into its sandbox, and
// never sees the key, which the relay holds.
TEST_F(BlockLaunchTest, ABubblewrapBlockWithoutNetworkReachesTheEndpointThroughTheManagersRelay) {
  config_.sandbox.type = "bubblewrap";
  config_.sandbox.network = false;
  config_.provider.type = "local";
  EXPECT_TRUE(ValidateBlocksConfig(config_).ok()) << ValidateBlocksConfig(config_).ToString();
  Args manager;
  bool relayed = false;
  auto w = WorkerOfBlock(&manager, "/tmp/loom-relay-abc123", &relayed);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE(relayed);
  const Args& argv = w->argv;
  auto at = [&](const Args& part) { return std::search(argv.begin(), argv.end(), part.begin(), part.end()); };
  EXPECT_NE(std::find(argv.begin(), argv.end(), "--unshare-net"), argv.end());
  EXPECT_LT(at({"--tmpfs", "/tmp"}), at({"--bind", "/tmp/loom-relay-abc123", "/tmp/loom-relay-abc123"}));
  EXPECT_NE(at({"--bind", "/tmp/loom-relay-abc123", "/tmp/loom-relay-abc123"}), argv.end());
  EXPECT_EQ(std::count(argv.begin(), argv.end(), key_file_), 0) << "the key stays outside the sandbox";
  Args inner = BareWorker();
  inner[2] = "ipc:///tmp/loom-relay-abc123/workers.sock";
  inner.erase(std::find(inner.begin(), inner.end(), "--curve-secret-key-file"), inner.begin() + 12);
  Args tail = {"--"};
  tail.insert(tail.end(), inner.begin(), inner.end());
  ASSERT_GE(argv.size(), tail.size());
  EXPECT_EQ(Args(argv.end() - static_cast<std::ptrdiff_t>(tail.size()), argv.end()), tail);

  // With the network kept, or in a container, the workers connect themselves.
  config_.sandbox.network = true;
  ASSERT_TRUE(WorkerOfBlock(&manager, "", &relayed).ok());
  EXPECT_FALSE(relayed);
}

}  // namespace
}  // namespace loom::endpoint
