// Blocks and autoscaling. DecideScaling is the policy, a pure function of the load; BlockPool
// applies it: it submits blocks through a Provider, polls their jobs, releases blocks that
// stayed idle, and reports blocks whose jobs ended so the endpoint can re-run their tasks.
//
// The policy (as Parsl's "simple" strategy, which Globus Compute uses):
//   - target blocks = ceil(demand / worker slots per block), within [min_blocks, max_blocks];
//   - below target: submit the difference (blocks still queued at the scheduler count, so a
//     slow queue does not make the endpoint submit more and more);
//   - above target: release blocks that ran no task for max_idletime, the longest idle first,
//     never below min_blocks.
// Demand is every task the endpoint holds without a result: queued here or in a worker's hands.
//
// Time comes in as an argument (tests use a fake clock). Not thread-safe: the endpoint's thread.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/log_limiter.h"
#include "endpoint/provider.h"

namespace loom::endpoint {

using SteadyTime = std::chrono::steady_clock::time_point;

struct ScalingPolicy {
  int min_blocks = 0;
  int max_blocks = 1;
  int slots_per_block = 1;  // nodes_per_block * workers_per_node
  std::chrono::milliseconds max_idletime{120000};
};

struct BlockLoad {
  std::string block_id;
  std::chrono::milliseconds idle_for{0};  // since a worker of the block last held a task (or since submit)
};

struct ScalingDecision {
  int add = 0;
  std::vector<std::string> release;
};

// `active`: the blocks submitted and not being released (queued or running).
ScalingDecision DecideScaling(const ScalingPolicy& policy, int64_t demand, const std::vector<BlockLoad>& active);

struct BlockPoolOptions {
  ProviderConfig provider;
  ScalingPolicy policy;
  int init_blocks = 1;
  std::chrono::milliseconds poll_period{5000};
  std::string walltime = "01:00:00";
  std::string job_name_prefix = "loom";  // jobs are named PREFIX-BLOCK
  std::string script_dir;                // block scripts and outputs
  std::string block_id_prefix = "b";     // block ids are PREFIX<n>
  // The command each node runs for a block (the manager, wrapped for a container if configured).
  std::function<std::vector<std::string>(const std::string& block_id)> manager_command;
};

// A block whose job is over.
struct EndedBlock {
  std::string block_id;
  std::string job_id;
  JobStatus status;
  bool released = false;  // we ended it (idle, or the endpoint stopping)
};

class BlockPool {
 public:
  BlockPool(BlockPoolOptions options, std::unique_ptr<Provider> provider);

  struct TickResult {
    std::vector<EndedBlock> ended;       // their workers are gone: re-run their tasks
    std::vector<std::string> released;   // being ended now: give their workers no more tasks
    std::vector<std::string> submitted;  // new blocks
  };
  // Polls the provider (at most once per poll period, and at once when `force_poll`), then
  // scales. `busy_blocks`: blocks with a worker holding a task now.
  TickResult Tick(SteadyTime now, int64_t demand, const std::set<std::string>& busy_blocks, bool force_poll = false);

  // Cancels every block and waits (up to `timeout`, polling) until the scheduler reports each job
  // over, so that no job outlives the endpoint. Returns the jobs still not over.
  std::vector<std::string> Shutdown(std::chrono::milliseconds timeout,
                                    const std::function<void(std::chrono::milliseconds)>& wait);

  // A block submitted and not ended (possibly being released).
  bool Knows(const std::string& block_id) const { return blocks_.contains(block_id); }
  bool Releasing(const std::string& block_id) const;
  // Blocks submitted and not being released (queued or running).
  int ActiveBlocks() const;
  int RunningBlocks() const;
  int SubmitFailures() const { return submit_failures_; }
  const std::string& last_error() const { return last_error_; }
  Provider& provider() { return *provider_; }

 private:
  struct Block {
    std::string job_id;
    JobState state = JobState::kPending;
    SteadyTime idle_since{};
    bool releasing = false;
  };
  void Poll(SteadyTime now, TickResult* result);
  void SubmitOne(SteadyTime now, TickResult* result);

  BlockPoolOptions options_;
  std::unique_ptr<Provider> provider_;
  std::map<std::string, Block> blocks_;  // by block id
  int next_block_ = 0;
  bool started_ = false;
  SteadyTime next_poll_{};
  SteadyTime next_submit_{};  // after a refused submission: back off
  int submit_failures_ = 0;   // in a row
  std::string last_error_;
  LogLimiter log_limit_{5};
};

}  // namespace loom::endpoint
