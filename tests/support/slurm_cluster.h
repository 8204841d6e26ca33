// SlurmCluster: a real one-node Slurm (Debian's slurm-wlm and munge) on this host for the
// Slurm provider's integration tests. Start() writes a slurm.conf for one node (this host's
// short name at 127.0.0.1, its real CPU count and memory; proctrack/linuxproc, task/none, no
// cgroups, no accounting), state and spool directories under a temp dir, free ports picked now,
// a fresh munge key; then starts munged, slurmctld and slurmd in the foreground as children and
// waits until sinfo shows the node idle. The destructor cancels every job, waits until the queue
// is empty, and stops the daemons. Sets SLURM_CONF in this process's environment, so sbatch,
// squeue, ... (also those of child processes: loom-endpoint) talk to this cluster.
//
// Needs root (slurmd runs jobs as their users) and the binaries: Unavailable() says what is
// missing, for GTEST_SKIP. Not thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "common/subprocess.h"

namespace loom::testing {

class SlurmCluster {
 public:
  // Why a Slurm cluster cannot run here (not root, a missing binary), or empty when it can.
  static std::string Unavailable();

  // Starts the cluster in `dir` (created). REQUIRES: Unavailable() is empty.
  static Result<std::unique_ptr<SlurmCluster>> Start(const std::string& dir,
                                                     std::chrono::milliseconds timeout = std::chrono::seconds(60));
  ~SlurmCluster();
  SlurmCluster(const SlurmCluster&) = delete;
  SlurmCluster& operator=(const SlurmCluster&) = delete;

  const std::string& node() const { return node_; }
  const std::string& partition() const { return partition_; }
  const std::string& conf() const { return conf_; }
  // Runs a Slurm client command (argv) against this cluster; stdout, or an error with stderr.
  Result<std::string> Run(const std::vector<std::string>& argv) const;
  // Job ids in the queue (squeue, any state it shows: pending, running, completing).
  Result<std::vector<std::string>> QueuedJobs() const;
  // Cancels every job and waits until the queue is empty.
  Status CancelAll(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // The logs' last lines, for failure messages.
  std::string LogTails() const;

 private:
  SlurmCluster() = default;
  Status WaitNodeIdle(std::chrono::milliseconds timeout);

  std::string dir_;
  std::string node_;
  std::string partition_ = "loom";
  std::string conf_;
  Subprocess munged_;
  Subprocess slurmctld_;
  Subprocess slurmd_;
};

}  // namespace loom::testing
