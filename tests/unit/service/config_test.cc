#include "service/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/test_env.h"

namespace loom::service {
namespace {

class ServiceConfigTest : public ::testing::Test {
 protected:
  std::string WriteFile(const std::string& text) {
    std::string path = dir_.path() + "/service" + std::to_string(++n_) + ".yaml";
    std::ofstream(path) << text;
    return path;
  }
  loom::testing::TempDir dir_{"service-config"};
  int n_ = 0;
};

TEST_F(ServiceConfigTest, ReadsEveryKeyFromYaml) {
  ServiceConfig c;
  Status s = LoadServiceConfigFile(WriteFile(R"(
grpc_address: 127.0.0.1:6000
endpoint_address: tcp://127.0.0.1:6001
redis: {host: 127.0.0.2, port: 7000, timeout_ms: 500}
max_message_bytes: 2048
max_batch: 7
max_queue_depth: 99
heartbeat_period_ms: 250
heartbeat_misses: 5
log_level: debug
ready_file: /tmp/x
metrics_address: 127.0.0.1:9464
metrics_sample_ms: 5000
metrics_max_endpoints: 20
endpoint_auth: none
curve_secret_key_file: /etc/loom/service.key
unclaimed_results_bytes: 1024
remembered_tasks: 0
result_ack_hold_ms: 20
)"),
                                   &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.grpc_address, "127.0.0.1:6000");
  EXPECT_EQ(c.endpoint_address, "tcp://127.0.0.1:6001");
  EXPECT_EQ(c.redis_host, "127.0.0.2");
  EXPECT_EQ(c.redis_port, 7000);
  EXPECT_EQ(c.redis_timeout_ms, 500);
  EXPECT_EQ(c.max_message_bytes, 2048);
  EXPECT_EQ(c.max_batch, 7);
  EXPECT_EQ(c.max_queue_depth, 99);
  EXPECT_EQ(c.heartbeat_period_ms, 250);
  EXPECT_EQ(c.heartbeat_misses, 5);
  EXPECT_EQ(c.result_ack_hold_ms, 20);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.ready_file, "/tmp/x");
  EXPECT_EQ(c.metrics_address, "127.0.0.1:9464");
  EXPECT_EQ(c.metrics_sample_ms, 5000);
  EXPECT_EQ(c.metrics_max_endpoints, 20);
  EXPECT_EQ(c.endpoint_auth, "none");
  EXPECT_EQ(c.curve_secret_key_file, "/etc/loom/service.key");
  EXPECT_EQ(c.unclaimed_results_bytes, 1024);
  EXPECT_EQ(c.remembered_tasks, 0);
}

TEST_F(ServiceConfigTest, RejectsUnknownKeysBadValuesAndMissingFiles) {
  ServiceConfig c;
  Status unknown = LoadServiceConfigFile(WriteFile("grpc_adress: x\n"), &c);
  EXPECT_EQ(unknown.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.message().find("grpc_adress"), std::string::npos);
  EXPECT_EQ(LoadServiceConfigFile(WriteFile("max_batch: lots\n"), &c).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadServiceConfigFile(WriteFile("- a list\n"), &c).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadServiceConfigFile("/nonexistent/loom.yaml", &c).code(), StatusCode::kInvalidArgument);
}

TEST_F(ServiceConfigTest, ReadsTheRestGatewaySettings) {
  ServiceConfig c;
  EXPECT_TRUE(c.rest_address.empty()) << "no REST unless asked for";
  Status s = LoadServiceConfigFile(WriteFile(R"(
rest_address: 127.0.0.1:8080
rest_tls_cert: /etc/loom/rest.crt
rest_tls_key: /etc/loom/rest.key
rest_max_body_bytes: 1048576
rest_max_json_depth: 20
rest_threads: 4
rest_max_wait_ms: 5000
)"),
                                   &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.rest_address, "127.0.0.1:8080");
  EXPECT_EQ(c.rest_tls_cert, "/etc/loom/rest.crt");
  EXPECT_EQ(c.rest_tls_key, "/etc/loom/rest.key");
  EXPECT_EQ(c.rest_max_body_bytes, 1048576);
  EXPECT_EQ(c.rest_max_json_depth, 20);
  EXPECT_EQ(c.rest_threads, 4);
  EXPECT_EQ(c.rest_max_wait_ms, 5000);
  EXPECT_EQ(LoadServiceConfigFile(WriteFile("rest_threads: many\n"), &c).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom::service

namespace loom::service {
namespace {

TEST_F(ServiceConfigTest, ReadsAuthTlsAndPerUserQuotas) {
  ServiceConfig c;
  Status s = LoadServiceConfigFile(WriteFile(R"(
bootstrap_token_file: /var/lib/loom/admin.token
bootstrap_user: root
token_cache_ms: 500
tls_cert: cert.pem
tls_key: key.pem
quotas:
  users:
    alice: {max_in_flight: 50}
  default: {requests_per_second: 100, burst: 10, max_in_flight: 1000}
)"),
                                   &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.bootstrap_token_file, "/var/lib/loom/admin.token");
  EXPECT_EQ(c.bootstrap_user, "root");
  EXPECT_EQ(c.token_cache_ms, 500);
  EXPECT_EQ(c.tls_cert, "cert.pem");
  EXPECT_EQ(c.tls_key, "key.pem");
  EXPECT_EQ(c.quotas.defaults.requests_per_second, 100);
  EXPECT_EQ(c.quotas.defaults.max_in_flight, 1000);
  // A user's quota starts from the default one, whatever the order in the file.
  ASSERT_TRUE(c.quotas.users.contains("alice"));
  EXPECT_EQ(c.quotas.users["alice"].max_in_flight, 50);
  EXPECT_EQ(c.quotas.users["alice"].requests_per_second, 100);

  for (const char* bad : {"quotas: {default: {requests_per_second: -1}}\n", "quotas: {default: {rps: 1}}\n",
                          "quotas: {others: {}}\n", "quotas: 3\n"}) {
    ServiceConfig b;
    Status e = LoadServiceConfigFile(WriteFile(bad), &b);
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace loom::service
