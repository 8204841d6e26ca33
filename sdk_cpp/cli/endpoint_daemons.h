// Endpoint daemons on this host, for `loom endpoint configure NAME | start | stop | status | list`.
//
// Each endpoint has a directory, $LOOM_HOME/endpoints/NAME (LOOM_HOME defaults to ~/.loom):
//   config.yaml   the loom-endpoint config (`configure` writes a commented template)
//   endpoint.key  endpoint.pub   its CURVE key pair (`configure`)
//   endpoint.pid  the daemon's pid while it runs (written by `start`, removed by `stop`)
//   endpoint.log  its stdout and stderr (appended)
//   ready         written by the daemon once registered with the service
// A pid file whose process is gone, or is not this endpoint's loom-endpoint, is stale.
//
// `start` runs loom-endpoint in a session of its own (setsid), so the daemon and its workers
// form one process group that `stop` can sweep: SIGTERM (the endpoint stops its workers), a
// deadline, then SIGKILL to the whole group. Not thread-safe; for one CLI invocation.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace loom::cli {

// $LOOM_HOME/endpoints (LOOM_HOME default: $HOME/.loom).
Result<std::string> EndpointsRoot();
// EndpointsRoot()/NAME, after checking NAME ([A-Za-z0-9][A-Za-z0-9_.-]*).
Result<std::string> EndpointDir(const std::string& name);

struct ConfigTemplateValues {
  std::string id;
  std::string service_address;     // tcp://HOST:PORT; empty: a placeholder to fill in
  std::string secret_key_file;     // empty: no CURVE lines
  std::string service_public_key;  // empty: a placeholder
  std::string owner;
  std::vector<std::string> allowed_users;
  std::vector<std::string> allowed_functions;
};
// A commented loom-endpoint YAML config; every optional section is present but commented out.
std::string EndpointConfigTemplate(const ConfigTemplateValues& v);
// Writes the template to `path` unless a file is there (an edited config is never overwritten);
// `written` says which.
Status WriteConfigTemplate(const std::string& path, const ConfigTemplateValues& v, bool* written);

enum class DaemonState { kStopped, kRunning, kStale };
const char* DaemonStateName(DaemonState s);

struct DaemonInfo {
  std::string name;
  std::string dir;
  DaemonState state = DaemonState::kStopped;
  pid_t pid = 0;            // kRunning: the daemon; kStale: the pid the file names
  bool registered = false;  // kRunning and its ready file exists
};
DaemonInfo InspectDaemon(const std::string& name, const std::string& dir);
// Every endpoint directory holding a config.yaml, by name.
Result<std::vector<DaemonInfo>> ListDaemons();

struct StartOptions {
  std::string endpoint_binary;            // loom-endpoint
  std::chrono::milliseconds wait{30000};  // for the daemon to register; 0: do not wait
};
// Starts NAME's daemon detached. Errors: no config (NOT_FOUND), already running
// (ALREADY_EXISTS), the daemon exited at once (UNAVAILABLE, with its log's tail), or it did not
// register in time (DEADLINE_EXCEEDED; it keeps running and retrying). A stale pid file is
// replaced. On success `info` describes the running daemon.
Status StartDaemon(const std::string& name, const StartOptions& options, DaemonInfo* info);

struct StopReport {
  bool was_running = false;
  bool stale_pid_file = false;  // removed
  bool killed = false;          // the daemon outlived the grace period: SIGKILL
  int leftovers_killed = 0;     // processes of its group still there after it ended
};
// Stops NAME's daemon: SIGTERM, up to `grace` for it to end, then SIGKILL to its process group;
// then kills whatever of its group remains, and removes the pid and ready files.
Result<StopReport> StopDaemon(const std::string& name, std::chrono::milliseconds grace);

// The last `bytes` of a file ("" if it cannot be read).
std::string FileTail(const std::string& path, size_t bytes = 2000);

}  // namespace loom::cli
