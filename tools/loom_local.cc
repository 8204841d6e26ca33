// loom-local: starts a whole Loom on this host (redis-server, loom-service, one loom-endpoint
// with workers) on free loopback ports.
//   loom-local up      start it in the background and leave it running (addresses in STATE/fabric.env)
//   loom-local down    stop what `up` started
//   loom-local run -- CMD ARGS...   start it, run CMD with {grpc} replaced by the service's gRPC
//                                   address and {rest} by its REST address (and LOOM_SERVICE,
//                                   LOOM_REST set), then stop everything
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/local_fabric.h"
#include "common/util.h"

namespace fs = std::filesystem;
using namespace loom;  // NOLINT

namespace {

struct Options {
  std::string state_dir = ".loom";
  std::string endpoint_id = "local";
  int workers = 2;
  std::string appendfsync = "everysec";
  std::string log_level = "warn";
  std::vector<std::string> command;
};

LocalFabricOptions FabricOptions(const Options& o, bool detach) {
  LocalFabricOptions f;
  f.bin_dir = ExecutableDir();
  f.state_dir = fs::absolute(o.state_dir).string();
  f.appendfsync = o.appendfsync;
  f.log_level = o.log_level;
  f.detach = detach;
  return f;
}

int Up(const Options& o) {
  const fs::path pids = fs::path(o.state_dir) / "pids";
  if (fs::exists(pids)) {
    std::cerr << "error: a fabric seems to be running already (" << pids.string()
              << " exists); run `loom-local down` first\n";
    return 2;
  }
  LocalFabric fabric(FabricOptions(o, /*detach=*/true));
  Status s = fabric.StartAll(o.endpoint_id, o.workers);
  if (!s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    fabric.StopAll();
    return 1;
  }
  std::ofstream(pids) << fabric.PidLines();
  std::ofstream(fs::path(o.state_dir) / "fabric.env")
      << "LOOM_SERVICE=" << fabric.grpc_address() << "\nLOOM_ENDPOINT_ADDRESS=" << fabric.endpoint_address()
      << "\nLOOM_REDIS_PORT=" << fabric.redis_port() << "\nLOOM_ENDPOINT_ID=" << o.endpoint_id
      << "\nLOOM_TOKEN_FILE=" << fs::absolute(fabric.token_file()).string() << "\nLOOM_REST=" << fabric.rest_address()
      << "\n";
  std::cout << "Loom is running: service " << fabric.grpc_address() << ", endpoint '" << o.endpoint_id << "' with "
            << o.workers << " workers, redis on 127.0.0.1:" << fabric.redis_port() << ", REST at http://"
            << fabric.rest_address() << "/v1\n"
            << "  use it:  LOOM_SERVICE=" << fabric.grpc_address()
            << " LOOM_TOKEN_FILE=" << fs::absolute(fabric.token_file()).string() << " loom endpoint list\n"
            << "  logs:    " << fabric.state_dir() << "/*.log\n"
            << "  stop it: loom-local down --state-dir " << o.state_dir << "\n";
  return 0;
}

int Down(const Options& o) {
  const fs::path pids = fs::path(o.state_dir) / "pids";
  std::ifstream in(pids);
  if (!in) {
    std::cerr << "nothing to stop: " << pids.string() << " does not exist\n";
    return 0;
  }
  // Endpoints first (they stop their workers), then the service, then Redis.
  std::vector<std::pair<std::string, pid_t>> procs;
  std::string name;
  pid_t pid;
  while (in >> name >> pid) procs.emplace_back(name, pid);
  auto rank = [](const std::string& n) { return n.rfind("endpoint", 0) == 0 ? 0 : n == "service" ? 1 : 2; };
  std::stable_sort(procs.begin(), procs.end(),
                   [&](const auto& a, const auto& b) { return rank(a.first) < rank(b.first); });
  for (const auto& [n, p] : procs) {
    if (::kill(p, SIGTERM) != 0) continue;
    for (int i = 0; i < 100 && ::kill(p, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (::kill(p, 0) == 0) ::kill(p, SIGKILL);
    std::cout << "stopped " << n << " (pid " << p << ")\n";
  }
  fs::remove(pids);
  fs::remove(fs::path(o.state_dir) / "fabric.env");
  return 0;
}

int Run(const Options& o) {
  if (o.command.empty()) {
    std::cerr << "error: give the command to run after --\n";
    return 2;
  }
  LocalFabricOptions fo = FabricOptions(o, /*detach=*/false);
  fo.remove_state_dir = true;
  fo.state_dir = (fs::path(fo.state_dir) / ("run-" + std::to_string(::getpid()))).string();
  LocalFabric fabric(fo);
  std::cout << "starting redis-server, loom-service and endpoint '" << o.endpoint_id << "' with " << o.workers
            << " workers on free loopback ports...\n";
  Status s = fabric.StartAll(o.endpoint_id, o.workers);
  if (!s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  std::cout << "fabric ready: service " << fabric.grpc_address() << ", REST at http://" << fabric.rest_address()
            << "/v1\n"
            << std::flush;
  std::vector<std::string> argv;
  for (auto a : o.command) {
    for (size_t p; (p = a.find("{grpc}")) != std::string::npos;) a.replace(p, 6, fabric.grpc_address());
    for (size_t p; (p = a.find("{rest}")) != std::string::npos;) a.replace(p, 6, fabric.rest_address());
    argv.push_back(a);
  }
  SpawnOptions so;
  so.env = {"LOOM_SERVICE=" + fabric.grpc_address(), "LOOM_REST=" + fabric.rest_address(),
            "LOOM_TOKEN_FILE=" + fs::absolute(fabric.token_file()).string()};
  auto child = Subprocess::Spawn(argv, so);
  if (!child.ok()) {
    std::cerr << "error: " << child.status().message() << "\n";
    return 2;
  }
  auto st = child->Wait(std::chrono::hours(24 * 365));
  int rc = st && WIFEXITED(*st) ? WEXITSTATUS(*st) : 1;
  std::cout << "stopping the fabric\n";
  fabric.StopAll();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"loom-local: run a whole Loom (redis-server, loom-service, loom-endpoint) on this host"};
  app.require_subcommand(1);
  auto add_common = [&](CLI::App* c) {
    c->add_option("--state-dir", o.state_dir, "directory for Redis data, logs and pid files");
  };
  auto add_start = [&](CLI::App* c) {
    c->add_option("--endpoint-id", o.endpoint_id, "id of the local endpoint");
    c->add_option("--workers", o.workers, "worker processes of the endpoint");
    c->add_option("--appendfsync", o.appendfsync, "Redis AOF fsync policy: everysec or always");
    c->add_option("--log-level", o.log_level, "log level of the processes");
  };
  auto* up = app.add_subcommand("up", "start a local fabric in the background");
  add_common(up);
  add_start(up);
  auto* down = app.add_subcommand("down", "stop the fabric that `up` started");
  add_common(down);
  auto* run = app.add_subcommand("run", "start a fabric, run a command against it, stop the fabric");
  add_common(run);
  add_start(run);
  run->add_option(
         "command", o.command,
         "the command; {grpc} is replaced by the service's gRPC address, {rest} by its REST address (HOST:PORT)")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  InitLogging("warn", "loom-local");
  if (*up) return Up(o);
  if (*down) return Down(o);
  return Run(o);
}
