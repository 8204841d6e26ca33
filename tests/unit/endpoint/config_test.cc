#include "endpoint/config.h"

#include <gtest/gtest.h>

#include <fstream>

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
}

TEST(EndpointConfigTest, DevicesParseWithCountAndEmulatedFlagAndBadOnesAreRefused) {
  auto d = ParseDevices({"fpga:emulated-braggnn-fpga:1:emulated", "gpu:a100:4", "fpga:u280"});
  ASSERT_TRUE(d.ok()) << d.status().message();
  ASSERT_EQ(d->size(), 3u);
  EXPECT_EQ((*d)[0].kind(), "fpga");
  EXPECT_EQ((*d)[0].name(), "emulated-braggnn-fpga");
  EXPECT_TRUE((*d)[0].emulated());
  EXPECT_EQ((*d)[1].count(), 4);
  EXPECT_FALSE((*d)[1].emulated());
  EXPECT_EQ((*d)[2].count(), 1);
  for (const char* bad : {"fpga", ":x", "fpga:x:0", "fpga:x:two", "fpga:x:1:real", "fpga:x:1:emulated:y"}) {
    auto r = ParseDevices({bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("KIND:NAME[:COUNT][:emulated]"), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace loom::endpoint
