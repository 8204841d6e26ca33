#include "endpoint_daemons.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/subprocess.h"
#include "common/util.h"

namespace loom::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string PidFile(const std::string& dir) { return dir + "/endpoint.pid"; }
std::string ConfigFile(const std::string& dir) { return dir + "/config.yaml"; }
std::string LogFile(const std::string& dir) { return dir + "/endpoint.log"; }
std::string ReadyFile(const std::string& dir) { return dir + "/ready"; }

// The process's state letter from /proc/PID/stat ('Z' zombie), and its process group; 0 when
// there is no such process.
char ProcState(pid_t pid, pid_t* pgrp = nullptr) {
  std::string stat = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/stat");
  // "pid (comm) S ppid pgrp ...": comm may hold spaces and parentheses, so parse after the last ')'.
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return 0;
  std::istringstream rest(stat.substr(close + 2));
  char state = 0;
  pid_t ppid = 0, group = 0;
  rest >> state >> ppid >> group;
  if (pgrp != nullptr) *pgrp = group;
  return state;
}

bool Alive(pid_t pid) {
  char s = ProcState(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

// Whether `pid` is the daemon started with this directory's config (a pid file may name a pid
// the system has since given to another process). Its program may be any loom-endpoint
// (--endpoint-binary), so the check is on `--config DIR/config.yaml`.
bool IsOurDaemon(pid_t pid, const std::string& dir) {
  std::string cmdline = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/cmdline");
  std::vector<std::string> args;
  std::string arg;
  for (char ch : cmdline) {
    if (ch == '\0') {
      args.push_back(std::move(arg));
      arg.clear();
    } else {
      arg += ch;
    }
  }
  for (size_t i = 1; i + 1 < args.size(); ++i) {
    if (args[i] == "--config" && args[i + 1] == ConfigFile(dir)) return true;
  }
  return false;
}

pid_t ReadPidFile(const std::string& dir) {
  std::ifstream in(PidFile(dir));
  long pid = 0;
  if (!(in >> pid) || pid <= 1) return 0;
  return static_cast<pid_t>(pid);
}

Status WritePidFile(const std::string& dir, pid_t pid) {
  const std::string tmp = PidFile(dir) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << "\n";
    if (!out.flush()) return Internal("cannot write '" + tmp + "': " + std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, PidFile(dir), ec);
  if (ec) return Internal("cannot write '" + PidFile(dir) + "': " + ec.message());
  return Status::Ok();
}

void RemoveRunFiles(const std::string& dir) {
  std::error_code ec;
  fs::remove(PidFile(dir), ec);
  fs::remove(ReadyFile(dir), ec);
}

// Every live process whose process group is `pgrp`.
std::vector<pid_t> GroupMembers(pid_t pgrp) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid <= 0) continue;
    pid_t group = 0;
    char s = ProcState(static_cast<pid_t>(pid), &group);
    if (s != 0 && s != 'Z' && s != 'X' && group == pgrp) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

// Waits until `done()` or the deadline, checking every few milliseconds (the processes waited
// for are not this process's children, so there is nothing to block on).
template <typename Pred>
bool WaitFor(Pred done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto pause = std::chrono::milliseconds(2);
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  return true;
}

std::string YamlList(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + std::string("\"") + items[i] + "\"";
  return out + "]";
}

}  // namespace

Result<std::string> EndpointsRoot() {
  if (const char* home = std::getenv("LOOM_HOME"); home != nullptr && *home != '\0') {
    return std::string(home) + "/endpoints";
  }
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') {
    return InvalidArgument("neither LOOM_HOME nor HOME is set: set LOOM_HOME to where endpoints are kept");
  }
  return std::string(home) + "/.loom/endpoints";
}

Result<std::string> EndpointDir(const std::string& name) {
  const bool ok = !name.empty() && std::isalnum(static_cast<unsigned char>(name[0])) &&
                  std::all_of(name.begin(), name.end(), [](char ch) {
                    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '-';
                  });
  if (!ok) {
    return InvalidArgument("endpoint name '" + name +
                           "' must start with a letter or digit and hold only letters, digits, '_', '.', '-'");
  }
  LOOM_ASSIGN_OR_RETURN(std::string root, EndpointsRoot());
  return root + "/" + name;
}

std::string EndpointConfigTemplate(const ConfigTemplateValues& v) {
  std::ostringstream o;
  o << "# loom-endpoint configuration for endpoint '" << v.id << "' (written by `loom endpoint configure`).\n"
    << "# Start it with `loom endpoint start " << v.id << "`; every key is documented in docs/ENDPOINTS.md.\n"
    << "# Flags given to loom-endpoint override the values here.\n\n"
    << "id: " << v.id << "\n"
    << "# The service's ZeroMQ address for endpoints.\n"
    << "service: " << (v.service_address.empty() ? "tcp://SERVICE-HOST:50052" : v.service_address) << "\n"
    << "# Worker processes this endpoint runs itself (without a provider).\n"
    << "workers: 2\n"
    << "# Tasks handed to one worker ahead of time, and held here beyond what the workers hold.\n"
    << "prefetch: 16\n"
    << "queue_capacity: 256\n"
    << "heartbeat_period_ms: 1000\n"
    << "heartbeat_misses: 3\n"
    << "log_level: info\n"
    << "# Kernel plugins for the workers to load.\n"
    << "# plugins: [/opt/loom/plugins/libmy_kernels.so]\n"
    << "# plugin_dirs: [/opt/loom/plugins]\n"
    << "# Prometheus metrics at http://HOST:PORT/metrics.\n"
    << "# metrics_address: 127.0.0.1:9465\n\n";
  if (!v.secret_key_file.empty()) {
    o << "# CURVE: this endpoint's key pair (made by `loom endpoint configure`) and the service's public key\n"
      << "# (the curve_public_key= line of the service's ready file).\n"
      << "curve_secret_key_file: " << v.secret_key_file << "\n"
      << "service_public_key: \"" << (v.service_public_key.empty() ? "SERVICE-PUBLIC-KEY" : v.service_public_key)
      << "\"\n\n";
  }
  if (!v.owner.empty()) {
    o << "# The endpoint's own allow-list, checked on every task whatever the service sent.\n"
      << "owner: " << v.owner << "\n"
      << "allowed_users: " << YamlList(v.allowed_users) << "\n"
      << "allowed_functions: " << YamlList(v.allowed_functions) << "\n\n";
  }
  o << "# Run every worker in a bubblewrap sandbox: read-only root, private /tmp, no network.\n"
    << "# sandbox:\n"
    << "#   type: bubblewrap          # or none\n"
    << "#   writable: [/var/cache/loom]  # directories the workers may write\n"
    << "#   network: false            # true keeps the host's network\n"
    << "#   options: []               # extra bwrap arguments, e.g. [--dev-bind, /dev/nvidia0, /dev/nvidia0]\n\n"
    << "# Or run every worker in a container (images: containers/ in the Loom sources).\n"
    << "# container:\n"
    << "#   runtime: docker           # docker, podman or apptainer\n"
    << "#   image: loom-worker:latest # apptainer: a .sif file, e.g. /shared/images/loom-worker.sif\n"
    << "#   worker_binary: loom-worker\n"
    << "#   binds: [/data:ro]         # HOST, HOST:CONTAINER, with :ro for read-only\n"
    << "#   options: [--network, none]\n"
    << "#   # The run command; placeholders {runtime} {image} {name} {uid} {gid} {binds} {env} {options} {command}.\n"
    << "#   command: [\"{runtime}\", run, --rm, --init, --name, \"{name}\", --user, \"{uid}:{gid}\",\n"
    << "#             \"{binds}\", \"{env}\", \"{options}\", \"{image}\", \"{command}\"]\n";
  return o.str();
}

Status WriteConfigTemplate(const std::string& path, const ConfigTemplateValues& v, bool* written) {
  *written = false;
  std::error_code ec;
  if (fs::exists(path, ec)) return Status::Ok();
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return Internal("cannot create '" + fs::path(path).parent_path().string() + "': " + ec.message());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << EndpointConfigTemplate(v);
    if (!out.flush()) return Internal("cannot write '" + tmp + "'");
  }
  fs::rename(tmp, path, ec);
  if (ec) return Internal("cannot write '" + path + "': " + ec.message());
  *written = true;
  return Status::Ok();
}

const char* DaemonStateName(DaemonState s) {
  switch (s) {
    case DaemonState::kRunning:
      return "running";
    case DaemonState::kStale:
      return "stopped (stale pid file)";
    case DaemonState::kStopped:
      break;
  }
  return "stopped";
}

DaemonInfo InspectDaemon(const std::string& name, const std::string& dir) {
  DaemonInfo info;
  info.name = name;
  info.dir = dir;
  std::error_code ec;
  if (!fs::exists(PidFile(dir), ec)) return info;
  info.pid = ReadPidFile(dir);
  if (info.pid > 0 && Alive(info.pid) && IsOurDaemon(info.pid, dir)) {
    info.state = DaemonState::kRunning;
    info.registered = fs::exists(ReadyFile(dir), ec);
  } else {
    info.state = DaemonState::kStale;
  }
  return info;
}

Result<std::vector<DaemonInfo>> ListDaemons() {
  LOOM_ASSIGN_OR_RETURN(std::string root, EndpointsRoot());
  std::vector<DaemonInfo> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (!e.is_directory() || !fs::exists(ConfigFile(e.path().string()), ec)) continue;
    out.push_back(InspectDaemon(e.path().filename().string(), e.path().string()));
  }
  std::sort(out.begin(), out.end(), [](const DaemonInfo& a, const DaemonInfo& b) { return a.name < b.name; });
  return out;
}

Status StartDaemon(const std::string& name, const StartOptions& options, DaemonInfo* info) {
  LOOM_ASSIGN_OR_RETURN(std::string dir, EndpointDir(name));
  std::error_code ec;
  if (!fs::exists(ConfigFile(dir), ec)) {
    return NotFound("endpoint '" + name + "' has no config (" + ConfigFile(dir) + "): run `loom endpoint configure " +
                    name + "` first");
  }
  DaemonInfo now = InspectDaemon(name, dir);
  if (now.state == DaemonState::kRunning) {
    return AlreadyExists("endpoint '" + name + "' already runs (pid " + std::to_string(now.pid) + ")");
  }
  RemoveRunFiles(dir);  // a stale pid file, an old ready file
  const std::vector<std::string> argv = {options.endpoint_binary, "--config", ConfigFile(dir), "--ready-file",
                                         ReadyFile(dir)};
  SpawnOptions spawn;
  spawn.log_path = LogFile(dir);
  spawn.new_process_group = true;  // its own session: outlives this command, one group to sweep at stop
  LOOM_ASSIGN_OR_RETURN(Subprocess proc, Subprocess::Spawn(argv, spawn));
  if (Status s = WritePidFile(dir, proc.pid()); !s.ok()) {
    proc.Stop();
    return s;
  }
  info->name = name;
  info->dir = dir;
  info->pid = proc.pid();
  info->state = DaemonState::kRunning;
  if (options.wait.count() > 0) {
    const bool settled = WaitFor([&] { return fs::exists(ReadyFile(dir)) || !proc.Running(); }, options.wait);
    if (!proc.Running()) {
      RemoveRunFiles(dir);
      info->state = DaemonState::kStopped;
      return Unavailable("loom-endpoint for '" + name + "' exited (" +
                         (proc.exit_status() ? DescribeWaitStatus(*proc.exit_status()) : std::string("unknown")) +
                         "); the end of " + LogFile(dir) + ":\n" + FileTail(LogFile(dir)));
    }
    if (!settled) {
      proc.Release();
      return DeadlineExceeded("endpoint '" + name + "' (pid " + std::to_string(info->pid) +
                              ") has not registered with the service within " +
                              std::to_string(options.wait.count() / 1000) + " s; it keeps trying (see " + LogFile(dir) +
                              ", `loom endpoint stop " + name + "` to stop it)");
    }
    info->registered = true;
  }
  proc.Release();  // the daemon runs on after this command
  return Status::Ok();
}

Result<StopReport> StopDaemon(const std::string& name, std::chrono::milliseconds grace) {
  LOOM_ASSIGN_OR_RETURN(std::string dir, EndpointDir(name));
  std::error_code ec;
  if (!fs::exists(ConfigFile(dir), ec) && !fs::exists(PidFile(dir), ec)) {
    return NotFound("no endpoint '" + name + "' on this host (looked in " + dir + ")");
  }
  StopReport report;
  DaemonInfo info = InspectDaemon(name, dir);
  if (info.state != DaemonState::kRunning) {
    report.stale_pid_file = info.state == DaemonState::kStale;
    RemoveRunFiles(dir);
    return report;
  }
  report.was_running = true;
  const pid_t pid = info.pid;
  // `start` made the daemon a session and process-group leader; its workers share its group.
  ::kill(pid, SIGTERM);
  if (!WaitFor([&] { return !Alive(pid); }, grace)) {
    report.killed = true;
    ::kill(-pid, SIGKILL);
    if (!WaitFor([&] { return !Alive(pid); }, std::chrono::milliseconds(5000))) {
      return Internal("endpoint '" + name + "' (pid " + std::to_string(pid) + ") survived SIGKILL for 5 s");
    }
  }
  // The endpoint stops its workers before it exits; anything of its group still here is a
  // leftover (a worker that ignored SIGTERM, a kernel's child): kill it.
  std::vector<pid_t> left = GroupMembers(pid);
  report.leftovers_killed = static_cast<int>(left.size());
  if (!left.empty()) {
    ::kill(-pid, SIGKILL);
    WaitFor([&] { return GroupMembers(pid).empty(); }, std::chrono::milliseconds(5000));
  }
  RemoveRunFiles(dir);
  return report;
}

std::string FileTail(const std::string& path, size_t bytes) {
  std::string all = ReadFileOrEmpty(path);
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

}  // namespace loom::cli
