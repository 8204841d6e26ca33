// A child process started with fork/exec: used by the endpoint to supervise workers and by
// tests, benchmarks and the local launcher to start redis-server, the service and endpoints.
// Move-only; the destructor kills (SIGKILL) and reaps a child that is still running unless
// Release() was called.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace loom {

struct SpawnOptions {
  std::string log_path;            // stdout and stderr go here (appended); empty: inherit
  bool new_process_group = false;  // setsid(): the child survives its parent's terminal
  std::vector<std::string> env;    // extra "NAME=value" entries
  // Descriptors the child keeps, at the same numbers, though they are close-on-exec here (so no
  // other child inherits them). REQUIRES: above 2 (0 to 2 are the child's stdio).
  std::vector<int> inherit_fds;
};

class Subprocess {
 public:
  static Result<Subprocess> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});
  Subprocess() = default;
  Subprocess(Subprocess&& o) noexcept;
  Subprocess& operator=(Subprocess&& o) noexcept;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // Reaps without blocking; true while the child runs.
  bool Running();
  void Signal(int sig) const;
  // Waits up to `timeout` for the child to end; returns its wait status (see waitpid), or
  // nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  // Forget the child: it keeps running after this object is gone.
  void Release() { pid_ = -1; }
  std::optional<int> exit_status() const { return status_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// "exit code 3", "signal 9 (Killed)".
std::string DescribeWaitStatus(int status);

}  // namespace loom
