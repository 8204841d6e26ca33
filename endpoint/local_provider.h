// LocalProvider: a block is a process group on this host. Submit runs the block script with
// bash in a new session (setsid), so the manager and its workers form one process group; Cancel
// signals the whole group (SIGTERM, then SIGKILL after a grace period), so no worker outlives its
// block. The job id is the group leader's pid.
#pragma once

#include <chrono>
#include <map>

#include "common/subprocess.h"
#include "endpoint/provider.h"

namespace loom::endpoint {

class LocalProvider final : public Provider {
 public:
  explicit LocalProvider(ProviderConfig config, std::chrono::milliseconds grace = std::chrono::milliseconds(3000))
      : config_(std::move(config)), grace_(grace) {}
  ~LocalProvider() override;

  std::string name() const override { return "local"; }
  Result<std::string> Submit(const BlockSpec& spec) override;
  Result<std::map<std::string, JobStatus>> Poll(const std::vector<std::string>& job_ids) override;
  Status Cancel(const std::vector<std::string>& job_ids) override;

 private:
  struct Job {
    Subprocess leader;
    bool cancelled = false;
  };
  // Signals the group, waits up to the grace for its leader, then kills what is left.
  void EndGroup(Job& job);

  ProviderConfig config_;
  std::chrono::milliseconds grace_;
  std::map<std::string, Job> jobs_;
};

}  // namespace loom::endpoint
