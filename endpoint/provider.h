// Provider: where an endpoint's blocks of workers come from. A block is one batch job (or, for
// the local provider, one process group) that runs a loom-manager on each of its nodes; each
// manager starts the node's workers, which connect back to the endpoint over TCP.
//
//   auto provider = MakeProvider(config, runner);        // local, slurm or pbs
//   auto job = provider->Submit(spec);                   // -> "4711"
//   auto states = provider->Poll({"4711"});              // -> {"4711": running}
//   provider->Cancel({"4711"});
//
// The batch providers run the scheduler's tools (sbatch/squeue/sacct/scancel, qsub/qstat/qdel)
// through a CommandRunner, so their parsing is tested against recorded outputs. Not
// thread-safe: the endpoint calls them from its one thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "endpoint/command_runner.h"
#include "endpoint/config.h"

namespace loom::endpoint {

enum class JobState {
  kPending,    // queued, held, configuring
  kRunning,    // started (also while completing)
  kCompleted,  // ended with exit code 0
  kFailed,     // ended otherwise, or will never start (rejected after submission)
  kCancelled,  // scancel / qdel / killed by us
  kTimeout,    // ran into its walltime
  kNodeFail,   // a node of the job was lost
  kUnknown,    // the scheduler no longer knows the job
};
const char* JobStateName(JobState state);
// Whether a job in this state is over (its workers are gone or going).
inline bool JobEnded(JobState s) { return s != JobState::kPending && s != JobState::kRunning; }

struct JobStatus {
  JobState state = JobState::kUnknown;
  std::string detail;  // the scheduler's own words: "NODE_FAIL", "Exit_status=271", a reason
};

// One block to submit.
struct BlockSpec {
  std::string block_id;  // unique within the endpoint, e.g. "b3"
  std::string job_name;  // the scheduler's job name
  int nodes = 1;
  std::string walltime;                      // [D-]HH:MM:SS
  std::vector<std::string> manager_command;  // what runs on each node (already wrapped for a container)
  std::vector<std::string> worker_init;      // shell lines run first
  std::string script_path;                   // where to write the job script
  std::string output_path;                   // the job's stdout and stderr
};

class Provider {
 public:
  virtual ~Provider() = default;
  // "local", "slurm", "pbs".
  virtual std::string name() const = 0;
  // Writes the block's script and submits it; returns the job id. An error says why the
  // scheduler refused it (its own message).
  virtual Result<std::string> Submit(const BlockSpec& spec) = 0;
  // The state of each job asked about; a job the scheduler no longer knows is kUnknown.
  virtual Result<std::map<std::string, JobStatus>> Poll(const std::vector<std::string>& job_ids) = 0;
  // Asks the scheduler to end the jobs (and their workers). Jobs already over are fine.
  virtual Status Cancel(const std::vector<std::string>& job_ids) = 0;
};

// The job script of a block for `provider` ("local", "slurm", "pbs"): a bash script with the
// scheduler's header (from `config`), the worker_init lines, then the manager command behind the
// launcher. Exposed for tests and `--print-block-script`-style diagnostics.
std::string RenderBlockScript(const ProviderConfig& config, const BlockSpec& spec);
// Writes a job script (mode 0700, atomically: a scheduler never reads half of one).
Status WriteBlockScript(const std::string& path, const std::string& text);
// The launcher in effect: config.launcher, or the provider's default ("" for none).
std::string EffectiveLauncher(const ProviderConfig& config, int nodes);

// The provider named by config.type. `runner` (not owned, must outlive the provider) runs the
// scheduler's tools; the local provider does not use it.
Result<std::unique_ptr<Provider>> MakeProvider(const ProviderConfig& config, CommandRunner* runner);

}  // namespace loom::endpoint
