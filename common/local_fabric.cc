#include "common/local_fabric.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/redis.h"
#include "common/util.h"

namespace loom {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

LocalFabric::LocalFabric(LocalFabricOptions options) : options_(std::move(options)) {
  std::error_code ec;
  fs::create_directories(options_.state_dir, ec);
}

LocalFabric::~LocalFabric() {
  if (options_.detach) {
    redis_.Release();
    service_.Release();
    for (auto& [id, p] : endpoints_) p.Release();
    return;
  }
  StopAll();
  if (options_.remove_state_dir) {
    std::error_code ec;
    fs::remove_all(options_.state_dir, ec);
  }
}

std::string LocalFabric::RedisSocket() const {
  // A Unix socket path must fit in sun_path (108 bytes); a deep state dir falls back to /tmp.
  std::string path = (fs::path(options_.state_dir) / "redis" / "redis.sock").string();
  if (path.size() < 100) return path;
  return (fs::temp_directory_path() /
          ("loom-redis-" + std::to_string(::getpid()) + "-" +
           std::to_string(std::hash<std::string>{}(options_.state_dir) % 1000000) + ".sock"))
      .string();
}

std::string LocalFabric::LogPath(const std::string& name) const {
  return (fs::path(options_.state_dir) / (name + ".log")).string();
}

std::string LocalFabric::LogTail(const std::string& name, size_t bytes) const {
  std::string all = ReadFileOrEmpty(LogPath(name));
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

namespace {
// The value of `key` in a ready file of KEY=VALUE lines, or "".
std::string ReadyValue(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}
}  // namespace

std::string LocalFabric::endpoint_metrics_address(const std::string& id) const {
  auto it = endpoint_metrics_addresses_.find(id);
  return it == endpoint_metrics_addresses_.end() ? "" : it->second;
}

SpawnOptions LocalFabric::Spawn(const std::string& name) const {
  SpawnOptions o;
  o.log_path = LogPath(name);
  o.new_process_group = options_.detach;
  return o;
}

Status LocalFabric::WaitForFile(const std::string& path, Subprocess& proc, const std::string& name) {
  const auto deadline = Clock::now() + options_.ready_timeout;
  auto pause = std::chrono::milliseconds(2);
  while (!fs::exists(path)) {
    if (!proc.Running()) {
      return Unavailable(name + " exited during start-up (" +
                         (proc.exit_status() ? DescribeWaitStatus(*proc.exit_status()) : std::string("?")) +
                         "); log tail:\n" + LogTail(name));
    }
    if (Clock::now() > deadline) return DeadlineExceeded(name + " was not ready in time; log tail:\n" + LogTail(name));
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  return Status::Ok();
}

Status LocalFabric::StartRedis() {
  const std::string dir = (fs::path(options_.state_dir) / "redis").string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  Status last = Internal("no attempt");
  // The port was free a moment ago; if another process took it meanwhile, pick again.
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (redis_port_ == 0 || attempt > 0) redis_port_ = FreeLoopbackPort();
    std::vector<std::string> argv = {options_.redis_server,
                                     "--port",
                                     std::to_string(redis_port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--dir",
                                     dir,
                                     "--appendonly",
                                     "yes",
                                     "--appendfsync",
                                     options_.appendfsync,
                                     "--save",
                                     "",
                                     // A task's hash stays a compact listpack while every value
                                     // fits (kHashMaxListpackValue in common/redis.h).
                                     "--hash-max-listpack-value",
                                     std::to_string(kHashMaxListpackValue),
                                     "--daemonize",
                                     "no",
                                     "--unixsocket",
                                     RedisSocket(),
                                     "--unixsocketperm",
                                     "700"};
    LOOM_ASSIGN_OR_RETURN(redis_, Subprocess::Spawn(argv, Spawn("redis")));
    RedisOptions ro;
    ro.port = redis_port_;
    const auto deadline = Clock::now() + options_.ready_timeout;
    while (Clock::now() < deadline && redis_.Running()) {
      auto conn = RedisConnection::Connect(ro);
      if (conn.ok() && (*conn)->Command({"PING"}).ok()) return Status::Ok();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    last = Unavailable("redis-server did not start on port " + std::to_string(redis_port_) + "; log tail:\n" +
                       LogTail("redis"));
    redis_.Stop();
  }
  return last;
}

Status LocalFabric::StartService() {
  if (grpc_port_ == 0) {
    grpc_port_ = FreeLoopbackPort();
    zmq_port_ = FreeLoopbackPort();
    grpc_address_ = "127.0.0.1:" + std::to_string(grpc_port_);
    endpoint_address_ = "tcp://127.0.0.1:" + std::to_string(zmq_port_);
  }
  const std::string ready = (fs::path(options_.state_dir) / "service.ready").string();
  std::error_code ec;
  fs::remove(ready, ec);
  std::vector<std::string> argv = {(fs::path(options_.bin_dir) / "loom-service").string(),
                                   "--grpc-address",
                                   grpc_address_,
                                   "--endpoint-address",
                                   endpoint_address_,
                                   "--redis-port",
                                   std::to_string(redis_port_),
                                   "--redis-socket",
                                   RedisSocket(),
                                   "--ready-file",
                                   ready,
                                   "--bootstrap-token-file",
                                   token_file(),
                                   "--log-level",
                                   options_.log_level};
  if (options_.metrics) argv.insert(argv.end(), {"--metrics-address", "127.0.0.1:0"});
  // A restart keeps the REST port it picked, as it keeps the others.
  if (!options_.rest_address.empty()) {
    argv.insert(argv.end(), {"--rest-address", rest_address_.empty() ? options_.rest_address : rest_address_});
  }
  if (curve()) {
    // Kept in the state dir, so a restarted service keeps its key and its endpoints trust it.
    argv.insert(argv.end(), {"--endpoint-auth", "curve", "--curve-secret-key-file",
                             (fs::path(options_.state_dir) / "service.key").string()});
  } else {
    argv.insert(argv.end(), {"--endpoint-auth", "none"});
  }
  argv.insert(argv.end(), options_.service_args.begin(), options_.service_args.end());
  LOOM_ASSIGN_OR_RETURN(service_, Subprocess::Spawn(argv, Spawn("service")));
  LOOM_RETURN_IF_ERROR(WaitForFile(ready, service_, "service"));
  // Written before the ready file: the service checks or creates it first thing.
  token_ = ReadFileOrEmpty(token_file());
  while (!token_.empty() && (token_.back() == '\n' || token_.back() == '\r')) token_.pop_back();
  if (token_.empty()) return Internal("loom-service wrote no admin token to " + token_file());
  service_metrics_address_ = ReadyValue(ready, "metrics");
  rest_address_ = ReadyValue(ready, "rest");
  service_public_key_ = ReadyValue(ready, "curve_public_key");
  if (curve() && service_public_key_.empty()) {
    return Internal("the service runs with --endpoint-auth curve but its ready file has no curve_public_key");
  }
  return Status::Ok();
}

std::string LocalFabric::EndpointKeyFile(const std::string& id) const {
  return (fs::path(options_.state_dir) / ("endpoint-" + id + "-keys") / "endpoint.key").string();
}

std::vector<std::string> LocalFabric::EndpointAuthArgs(const std::string& id) const {
  if (!curve()) return {};
  return {"--curve-secret-key-file", EndpointKeyFile(id), "--service-public-key", service_public_key_};
}

Status LocalFabric::EnrollEndpoint(const std::string& id) {
  if (enrolled_.contains(id)) return Status::Ok();
  const std::string name = "enroll-" + id;
  std::vector<std::string> argv = {(fs::path(options_.bin_dir) / "loom").string(),
                                   "--service",
                                   grpc_address_,
                                   "endpoint",
                                   "configure",
                                   id,
                                   "--key-dir",
                                   fs::path(EndpointKeyFile(id)).parent_path().string(),
                                   "--service-public-key",
                                   service_public_key_,
                                   "--endpoint-address",
                                   endpoint_address_};
  SpawnOptions o = Spawn(name);
  o.env.push_back("LOOM_TOKEN_FILE=" + token_file());
  LOOM_ASSIGN_OR_RETURN(auto proc, Subprocess::Spawn(argv, o));
  auto status = proc.Wait(options_.ready_timeout);
  if (!status || *status != 0) {
    if (!status) proc.Stop();
    return Unavailable("`loom endpoint configure " + id + "` failed (" +
                       (status ? DescribeWaitStatus(*status) : std::string("timed out")) + "); log tail:\n" +
                       LogTail(name));
  }
  enrolled_.insert(id);
  return Status::Ok();
}

std::string LocalFabric::token_file() const { return (fs::path(options_.state_dir) / "admin.token").string(); }

Status LocalFabric::StartEndpoint(const std::string& id, int workers, const std::vector<std::string>& extra_args) {
  const std::string ready = (fs::path(options_.state_dir) / ("endpoint-" + id + ".ready")).string();
  std::error_code ec;
  fs::remove(ready, ec);
  std::vector<std::string> argv = {(fs::path(options_.bin_dir) / "loom-endpoint").string(),
                                   "--id",
                                   id,
                                   "--service",
                                   endpoint_address_,
                                   "--workers",
                                   std::to_string(workers),
                                   "--ready-file",
                                   ready,
                                   "--log-level",
                                   options_.log_level};
  // The worker socket lives in the state dir, so a killed endpoint leaves nothing behind;
  // a path too long for a Unix socket keeps the endpoint's own temp dir.
  const std::string run_dir = (fs::path(options_.state_dir) / ("endpoint-" + id + "-run")).string();
  if (run_dir.size() + std::string("/workers.sock").size() < 100) argv.insert(argv.end(), {"--run-dir", run_dir});
  // Unacknowledged results survive a restart of this endpoint in its state dir.
  argv.insert(argv.end(), {"--spool-dir", (fs::path(options_.state_dir) / ("endpoint-" + id + "-spool")).string()});
  if (options_.metrics) argv.insert(argv.end(), {"--metrics-address", "127.0.0.1:0"});
  if (curve() && std::find(extra_args.begin(), extra_args.end(), "--curve-secret-key-file") == extra_args.end()) {
    LOOM_RETURN_IF_ERROR(EnrollEndpoint(id));
    const auto auth = EndpointAuthArgs(id);
    argv.insert(argv.end(), auth.begin(), auth.end());
  }
  // Extra arguments may point the endpoint elsewhere (e.g. through a fault proxy).
  if (std::find(extra_args.begin(), extra_args.end(), "--service") != extra_args.end())
    argv.erase(argv.begin() + 3, argv.begin() + 5);
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  const std::string name = "endpoint-" + id;
  LOOM_ASSIGN_OR_RETURN(auto proc, Subprocess::Spawn(argv, Spawn(name)));
  endpoints_[id] = std::move(proc);
  LOOM_RETURN_IF_ERROR(WaitForFile(ready, endpoints_[id], name));
  endpoint_metrics_addresses_[id] = ReadyValue(ready, "metrics");
  return Status::Ok();
}

Status LocalFabric::StartAll(const std::string& endpoint_id, int workers) {
  LOOM_RETURN_IF_ERROR(StartRedis());
  LOOM_RETURN_IF_ERROR(StartService());
  return StartEndpoint(endpoint_id, workers);
}

Subprocess* LocalFabric::endpoint(const std::string& id) {
  auto it = endpoints_.find(id);
  return it == endpoints_.end() ? nullptr : &it->second;
}

void LocalFabric::KillService(int sig) {
  service_.Signal(sig);
  service_.Wait(std::chrono::seconds(10));
}

void LocalFabric::KillEndpoint(const std::string& id, int sig) {
  if (auto* p = endpoint(id)) {
    p->Signal(sig);
    p->Wait(std::chrono::seconds(10));
  }
}

void LocalFabric::KillRedis(int sig) {
  redis_.Signal(sig);
  redis_.Wait(std::chrono::seconds(10));
}

void LocalFabric::StopAll() {
  for (auto& [id, p] : endpoints_) p.Stop();
  service_.Stop();
  redis_.Stop();
}

std::string LocalFabric::PidLines() {
  std::string out;
  if (redis_.Running()) out += "redis " + std::to_string(redis_.pid()) + "\n";
  if (service_.Running()) out += "service " + std::to_string(service_.pid()) + "\n";
  for (auto& [id, p] : endpoints_) {
    if (p.Running()) out += "endpoint-" + id + " " + std::to_string(p.pid()) + "\n";
  }
  return out;
}

}  // namespace loom
