// LocalFabric: starts a whole Loom on this host (redis-server, loom-service, loom-endpoints
// with their workers) on free loopback ports, waits until each part is ready, and stops what
// it started. Used by the integration tests, loom-bench, and `loom-local up|down`.
// Not thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/subprocess.h"

namespace loom {

struct LocalFabricOptions {
  std::string bin_dir;    // holds loom-service, loom-endpoint, loom-worker
  std::string state_dir;  // redis data, logs, ready files; created if missing
  std::string redis_server = "redis-server";
  std::string appendfsync = "everysec";  // Redis AOF fsync policy: everysec or always
  std::string log_level = "warn";
  std::vector<std::string> service_args;  // extra loom-service flags
  bool detach = false;                    // children get their own session and outlive this object
  std::chrono::milliseconds ready_timeout{20000};
  bool remove_state_dir = false;  // delete state_dir after stopping everything
  // Serve Prometheus metrics from the service and every endpoint on free loopback ports
  // (--metrics-address 127.0.0.1:0); their addresses come from the ready files.
  bool metrics = false;
  // The service's REST gateway listen address (--rest-address); port 0 picks a free one, which
  // a restart of the service keeps. Empty: no REST.
  std::string rest_address = "127.0.0.1:0";
};

class LocalFabric {
 public:
  explicit LocalFabric(LocalFabricOptions options);
  ~LocalFabric();
  LocalFabric(const LocalFabric&) = delete;
  LocalFabric& operator=(const LocalFabric&) = delete;

  Status StartRedis();
  // The first start picks free ports; a restart reuses them, as a real restart would.
  Status StartService();
  Status StartEndpoint(const std::string& id, int workers, const std::vector<std::string>& extra_args = {});
  // Convenience: redis, service and one endpoint.
  Status StartAll(const std::string& endpoint_id, int workers);

  // Sends `sig` and waits until the process is gone.
  void KillService(int sig);
  void KillEndpoint(const std::string& id, int sig);
  void KillRedis(int sig);
  void StopAll();

  Subprocess& service() { return service_; }
  Subprocess& redis() { return redis_; }
  Subprocess* endpoint(const std::string& id);

  const std::string& grpc_address() const { return grpc_address_; }
  // The service's admin bootstrap token (loom-service --bootstrap-token-file), and its file:
  // clients of the fabric authenticate with it (ClientOptions::token, or LOOM_TOKEN_FILE).
  const std::string& token() const { return token_; }
  std::string token_file() const;
  const std::string& endpoint_address() const { return endpoint_address_; }
  int redis_port() const { return redis_port_; }
  // HOST:PORT of the /metrics servers (options.metrics); empty when not serving metrics.
  const std::string& service_metrics_address() const { return service_metrics_address_; }
  // HOST:PORT of the service's REST gateway (from its ready file); empty without REST.
  const std::string& rest_address() const { return rest_address_; }
  std::string endpoint_metrics_address(const std::string& id) const;
  // The service talks to Redis over this Unix socket (cheaper than loopback TCP); tools and
  // tests may use either.
  std::string RedisSocket() const;
  const std::string& state_dir() const { return options_.state_dir; }
  std::string LogPath(const std::string& name) const;
  // The last lines of a log, for error messages.
  std::string LogTail(const std::string& name, size_t bytes = 2000) const;
  // "name pid" lines of every running child, for `loom-local down`.
  std::string PidLines();

 private:
  Status WaitForFile(const std::string& path, Subprocess& proc, const std::string& name);
  SpawnOptions Spawn(const std::string& name) const;

  LocalFabricOptions options_;
  Subprocess redis_;
  Subprocess service_;
  std::map<std::string, Subprocess> endpoints_;
  int redis_port_ = 0;
  int grpc_port_ = 0;
  int zmq_port_ = 0;
  std::string grpc_address_;
  std::string token_;
  std::string endpoint_address_;
  std::string service_metrics_address_;
  std::string rest_address_;
  std::map<std::string, std::string> endpoint_metrics_addresses_;
};

}  // namespace loom
