#include "endpoint/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "tests/support/test_env.h"

namespace loom::endpoint {
namespace {

TEST(EndpointConfigTest, ReadsEveryKeyFromYaml) {
  loom::testing::TempDir dir("endpoint-config");
  std::string path = dir.path() + "/endpoint.yaml";
  std::ofstream(path) << R"(
id: gpu-box
name: GPU box by the detector
service: tcp://10.0.0.1:5000
workers: 8
prefetch: 4
queue_capacity: 64
queue_bytes: 1048576
pack_tasks_under_us: 200
pack_prefetch: 32
worker_link: zmq
worker_binary: /opt/loom/loom-worker
plugins: [/opt/a.so, /opt/b.so]
plugin_dirs: [/opt/plugins]
heartbeat_period_ms: 500
heartbeat_misses: 4
max_message_bytes: 1000
run_dir: /run/loom
ready_file: /run/loom/ready
log_level: warn
metrics_address: 0.0.0.0:9465
curve_secret_key_file: /etc/loom/gpu-box.key
service_public_key_file: /etc/loom/service.pub
service_public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
owner: alice
allowed_users: [bob, carol]
allowed_functions: [echo, bob/add]
)";
  EndpointConfig c;
  Status s = LoadEndpointConfigFile(path, &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.id, "gpu-box");
  EXPECT_EQ(c.name, "GPU box by the detector");
  EXPECT_EQ(c.service, "tcp://10.0.0.1:5000");
  EXPECT_EQ(c.workers, 8);
  EXPECT_EQ(c.prefetch, 4);
  EXPECT_EQ(c.queue_capacity, 64);
  EXPECT_EQ(c.queue_bytes, 1048576);
  EXPECT_EQ(c.pack_tasks_under_us, 200);
  EXPECT_EQ(c.pack_prefetch, 32);
  EXPECT_EQ(c.worker_link, "zmq");
  EXPECT_EQ(c.worker_binary, "/opt/loom/loom-worker");
  EXPECT_EQ(c.plugins, (std::vector<std::string>{"/opt/a.so", "/opt/b.so"}));
  EXPECT_EQ(c.plugin_dirs, (std::vector<std::string>{"/opt/plugins"}));
  EXPECT_EQ(c.heartbeat_period_ms, 500);
  EXPECT_EQ(c.heartbeat_misses, 4);
  EXPECT_EQ(c.max_message_bytes, 1000);
  EXPECT_EQ(c.run_dir, "/run/loom");
  EXPECT_EQ(c.ready_file, "/run/loom/ready");
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.metrics_address, "0.0.0.0:9465");
  EXPECT_EQ(c.curve_secret_key_file, "/etc/loom/gpu-box.key");
  EXPECT_EQ(c.service_public_key_file, "/etc/loom/service.pub");
  EXPECT_EQ(c.service_public_key, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
  EXPECT_EQ(c.owner, "alice");
  EXPECT_EQ(c.allowed_users, (std::vector<std::string>{"bob", "carol"}));
  EXPECT_EQ(c.allowed_functions, (std::vector<std::string>{"echo", "bob/add"}));
}

TEST(EndpointConfigTest, RejectsUnknownKeysAndBadValues) {
  loom::testing::TempDir tmp("endpoint-config");
  const std::string dir = tmp.path();
  std::ofstream(dir + "/a.yaml") << "wokers: 3\n";
  std::ofstream(dir + "/b.yaml") << "workers: many\n";
  EndpointConfig c;
  Status typo = LoadEndpointConfigFile(dir + "/a.yaml", &c);
  EXPECT_EQ(typo.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(typo.message().find("wokers"), std::string::npos);
  EXPECT_EQ(LoadEndpointConfigFile(dir + "/b.yaml", &c).code(), StatusCode::kInvalidArgument);
  std::ofstream(dir + "/c.yaml") << "pack_tasks_under_us: -5\n";
  Status negative = LoadEndpointConfigFile(dir + "/c.yaml", &c);
  EXPECT_EQ(negative.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(negative.message().find("pack_tasks_under_us is -5"), std::string::npos) << negative.message();
  std::ofstream(dir + "/e.yaml") << "pack_prefetch: -1\n";
  EndpointConfig fresh;
  Status pack = LoadEndpointConfigFile(dir + "/e.yaml", &fresh);
  EXPECT_EQ(pack.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(pack.message().find("pack_prefetch is -1"), std::string::npos) << pack.message();
  std::ofstream(dir + "/f.yaml") << "worker_link: pipe\n";
  EndpointConfig link;
  Status bad_link = LoadEndpointConfigFile(dir + "/f.yaml", &link);
  EXPECT_EQ(bad_link.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_link.message().find("worker_link is 'pipe'; it is 'socket' or 'zmq'"), std::string::npos)
      << bad_link.message();
  EXPECT_EQ(EndpointConfig{}.worker_link, "socket");
  std::ofstream(dir + "/d.yaml") << "queue_bytes: -1\n";
  Status bytes = LoadEndpointConfigFile(dir + "/d.yaml", &c);
  EXPECT_EQ(bytes.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bytes.message().find("queue_bytes (-1)"), std::string::npos) << bytes.message();
}

TEST(EndpointConfigTest, ReadsTheEngineAndProviderSections) {
  loom::testing::TempDir dir("endpoint-config");
  std::string path = dir.path() + "/endpoint.yaml";
  std::ofstream(path) << R"(
id: cluster
engine:
  workers_per_node: 16
  workers_per_accelerator: 1
  listen: tcp://0.0.0.0:0
  address: login1.example.org
  max_idletime_s: 300
  poll_period_ms: 2000
provider:
  type: slurm
  nodes_per_block: 2
  init_blocks: 1
  min_blocks: 0
  max_blocks: 8
  walltime: "1-02:00:00"
  partition: gpu
  account: proj42
  scheduler_options: |
    #SBATCH --gres=gpu:4
    #SBATCH --exclusive
  worker_init:
    - module load cuda
    - source /opt/venv/bin/activate
  launcher: srun --mpi=none
  script_dir: /scratch/loom/blocks
  cmd_timeout_s: 60
)";
  EndpointConfig c;
  Status s = LoadEndpointConfigFile(path, &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(c.uses_blocks());
  EXPECT_EQ(c.engine.workers_per_node, 16);
  EXPECT_EQ(c.engine.workers_per_accelerator, 1);
  EXPECT_EQ(c.engine.listen, "tcp://0.0.0.0:0");
  EXPECT_EQ(c.engine.address, "login1.example.org");
  EXPECT_EQ(c.engine.max_idletime_s, 300);
  EXPECT_EQ(c.engine.poll_period_ms, 2000);
  EXPECT_EQ(c.provider.type, "slurm");
  EXPECT_EQ(c.provider.nodes_per_block, 2);
  EXPECT_EQ(c.provider.max_blocks, 8);
  EXPECT_EQ(c.provider.walltime, "1-02:00:00");
  EXPECT_EQ(c.provider.partition, "gpu");
  EXPECT_EQ(c.provider.account, "proj42");
  EXPECT_EQ(c.provider.scheduler_options, (std::vector<std::string>{"#SBATCH --gres=gpu:4", "#SBATCH --exclusive"}));
  EXPECT_EQ(c.provider.worker_init, (std::vector<std::string>{"module load cuda", "source /opt/venv/bin/activate"}));
  EXPECT_EQ(c.provider.launcher, "srun --mpi=none");
  EXPECT_EQ(c.provider.script_dir, "/scratch/loom/blocks");
  EXPECT_EQ(c.provider.cmd_timeout_s, 60);
  EXPECT_TRUE(ValidateBlocksConfig(c).ok()) << ValidateBlocksConfig(c).ToString();
}

TEST(EndpointConfigTest, RejectsBadEngineAndProviderSettingsWithClearErrors) {
  loom::testing::TempDir dir("endpoint-config");
  std::ofstream(dir.path() + "/typo.yaml") << "provider:\n  type: slurm\n  max_block: 3\n";
  EndpointConfig typo;
  Status s = LoadEndpointConfigFile(dir.path() + "/typo.yaml", &typo);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("provider.max_block"), std::string::npos) << s.message();

  auto invalid = [](const std::function<void(EndpointConfig&)>& change) {
    EndpointConfig c;
    c.provider.type = "slurm";
    change(c);
    return ValidateBlocksConfig(c);
  };
  EXPECT_TRUE(invalid([](EndpointConfig&) {}).ok());
  EXPECT_TRUE(invalid([](EndpointConfig& c) { c.provider.type = ""; }).ok()) << "no provider: nothing to check";
  struct Case {
    std::function<void(EndpointConfig&)> change;
    const char* says;
  };
  std::vector<Case> cases = {
      {[](EndpointConfig& c) { c.provider.type = "lsf"; }, "use local, slurm or pbs"},
      {[](EndpointConfig& c) { c.provider.max_blocks = 0; }, "provider.max_blocks"},
      {[](EndpointConfig& c) { c.provider.min_blocks = 2; }, "provider.min_blocks is 2: use 0 to 1"},
      {[](EndpointConfig& c) { c.provider.init_blocks = 5; }, "provider.init_blocks"},
      {[](EndpointConfig& c) { c.provider.init_blocks = 0; }, "init_blocks to at least 1"},
      {[](EndpointConfig& c) { c.provider.nodes_per_block = 0; }, "provider.nodes_per_block"},
      {[](EndpointConfig& c) {
         c.provider.type = "local";
         c.provider.nodes_per_block = 2;
       },
       "a local block is one process group"},
      {[](EndpointConfig& c) { c.provider.walltime = "90 minutes"; }, "HH:MM:SS"},
      {[](EndpointConfig& c) { c.provider.walltime = "00:61:00"; }, "HH:MM:SS"},
      {[](EndpointConfig& c) { c.provider.walltime = "00:00:00"; }, "longer than zero"},
      {[](EndpointConfig& c) { c.engine.workers_per_node = -1; }, "engine.workers_per_node"},
      {[](EndpointConfig& c) { c.engine.max_idletime_s = -1; }, "engine.max_idletime_s"},
      {[](EndpointConfig& c) { c.engine.poll_period_ms = 0; }, "engine.poll_period_ms"},
      {[](EndpointConfig& c) { c.engine.listen = "ipc:///tmp/x"; }, "tcp://IP:PORT"},
  };
  for (const auto& k : cases) {
    Status v = invalid(k.change);
    EXPECT_EQ(v.code(), StatusCode::kInvalidArgument) << k.says;
    EXPECT_NE(v.message().find(k.says), std::string::npos) << v.message();
  }
  EXPECT_EQ(*ParseWalltime("01:30:00"), 5400);
  EXPECT_EQ(*ParseWalltime("2-00:00:10"), 2 * 86400 + 10);
}

}  // namespace
}  // namespace loom::endpoint
