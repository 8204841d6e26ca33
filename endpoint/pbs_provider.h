// PbsProvider: a block is a PBS job (PBS Pro / OpenPBS; Torque's qstat -f reads alike).
// Submits with qsub, tracks with `qstat -x -f` (-x: also finished jobs), cancels with qdel.
// There is no PBS server in Debian, so this is tested only against recorded qsub/qstat outputs
// (tests/data/pbs), never against a live server.
#pragma once

#include "endpoint/provider.h"

namespace loom::endpoint {

// The job id qsub printed ("1234.pbs-server").
Result<std::string> ParseQsubOutput(const std::string& out);
// `qstat -x -f` output ("Job Id: ..." blocks of "key = value" lines) into statuses by job id.
std::map<std::string, JobStatus> ParseQstatFull(const std::string& out);

class PbsProvider final : public Provider {
 public:
  // `runner` is borrowed and must outlive this provider.
  PbsProvider(ProviderConfig config, CommandRunner* runner) : config_(std::move(config)), runner_(runner) {}

  std::string name() const override { return "pbs"; }
  Result<std::string> Submit(const BlockSpec& spec) override;
  Result<std::map<std::string, JobStatus>> Poll(const std::vector<std::string>& job_ids) override;
  Status Cancel(const std::vector<std::string>& job_ids) override;

 private:
  ProviderConfig config_;
  CommandRunner* runner_;
};

}  // namespace loom::endpoint
