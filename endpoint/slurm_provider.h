// SlurmProvider: a block is a Slurm batch job. Submits with `sbatch --parsable`, tracks jobs
// with squeue (also jobs that just ended: --states=all) and then sacct for those squeue no
// longer shows, and cancels with scancel. A job that fails, is cancelled, runs out of time or
// loses a node is reported as such; a pending job whose reason says it can never start (a bad
// partition or account, a limit) is reported failed, so the endpoint cancels it and says why.
#pragma once

#include <chrono>

#include "endpoint/provider.h"

namespace loom::endpoint {

// The job id `sbatch --parsable` printed ("4711" or "4711;cluster").
Result<std::string> ParseSbatchOutput(const std::string& out);
// The state of a Slurm state name (squeue %T, sacct State: "RUNNING", "CANCELLED by 0", ...).
JobStatus SlurmJobStatus(const std::string& state, const std::string& reason = "");
// `squeue --noheader --format=%i|%T|%r` lines into statuses by job id.
std::map<std::string, JobStatus> ParseSqueueOutput(const std::string& out);
// `sacct --noheader --parsable2 --allocations --format=JobID,State,ExitCode` lines.
std::map<std::string, JobStatus> ParseSacctOutput(const std::string& out);

class SlurmProvider final : public Provider {
 public:
  // `runner` is borrowed and must outlive this provider.
  SlurmProvider(ProviderConfig config, CommandRunner* runner) : config_(std::move(config)), runner_(runner) {}

  std::string name() const override { return "slurm"; }
  Result<std::string> Submit(const BlockSpec& spec) override;
  Result<std::map<std::string, JobStatus>> Poll(const std::vector<std::string>& job_ids) override;
  Status Cancel(const std::vector<std::string>& job_ids) override;

 private:
  Result<CommandOutput> RunTool(const std::vector<std::string>& argv);

  ProviderConfig config_;
  CommandRunner* runner_;
};

}  // namespace loom::endpoint
