#include "endpoint/slurm_provider.h"

#include <spdlog/spdlog.h>

#include <set>
#include <sstream>

namespace loom::endpoint {
namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) out.push_back(item);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

std::string JoinIds(const std::vector<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ",") + id;
  return out;
}

// Pending reasons after which a job never starts without someone changing it.
const std::set<std::string>& HopelessReasons() {
  static const std::set<std::string> reasons = {"BadConstraints",  "PartitionNodeLimit", "PartitionTimeLimit",
                                                "PartitionDown",   "PartitionInactive",  "InvalidAccount",
                                                "InvalidQOS",      "AccountNotAllowed",  "QOSNotAllowed",
                                                "ReqNodeNotAvail", "JobHeldAdmin",       "DependencyNeverSatisfied"};
  return reasons;
}

}  // namespace

Result<std::string> ParseSbatchOutput(const std::string& out) {
  std::string id = TrimSpace(out);
  if (auto semi = id.find(';'); semi != std::string::npos) id = id.substr(0, semi);
  if (id.empty() || id.find_first_not_of("0123456789_") != std::string::npos) {
    return Internal("sbatch printed no job id: '" + TrimSpace(out) + "'");
  }
  return id;
}

JobStatus SlurmJobStatus(const std::string& state_in, const std::string& reason) {
  // sacct says "CANCELLED by 1000"; squeue says "CANCELLED".
  const std::string state = state_in.substr(0, state_in.find(' '));
  JobStatus s;
  s.detail = TrimSpace(state_in);
  if (state == "PENDING" || state == "CONFIGURING" || state == "REQUEUED" || state == "REQUEUE_HOLD" ||
      state == "REQUEUE_FED" || state == "RESIZING" || state == "SUSPENDED" || state == "STOPPED" ||
      state == "SIGNALING" || state == "STAGE_OUT") {
    s.state = JobState::kPending;
    if (state == "PENDING" && HopelessReasons().contains(reason)) {
      s.state = JobState::kFailed;
      s.detail = "PENDING (" + reason + "): Slurm will not start it";
    } else if (!reason.empty() && reason != "None") {
      s.detail += " (" + reason + ")";
    }
  } else if (state == "RUNNING" || state == "COMPLETING") {
    s.state = JobState::kRunning;
  } else if (state == "COMPLETED") {
    s.state = JobState::kCompleted;
  } else if (state == "CANCELLED" || state == "REVOKED") {
    s.state = JobState::kCancelled;
  } else if (state == "TIMEOUT" || state == "DEADLINE") {
    s.state = JobState::kTimeout;
  } else if (state == "NODE_FAIL") {
    s.state = JobState::kNodeFail;
  } else if (state == "FAILED" || state == "BOOT_FAIL" || state == "OUT_OF_MEMORY" || state == "PREEMPTED" ||
             state == "SPECIAL_EXIT") {
    s.state = JobState::kFailed;
  } else {
    s.state = JobState::kUnknown;
  }
  return s;
}

namespace {

// The '|'-separated fields of each non-empty line with at least two.
std::vector<std::vector<std::string>> PipeRecords(const std::string& out) {
  std::vector<std::vector<std::string>> records;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    line = TrimSpace(line);
    if (line.empty()) continue;
    auto f = Split(line, '|');
    for (auto& field : f) field = TrimSpace(field);
    if (f.size() >= 2) records.push_back(std::move(f));
  }
  return records;
}

}  // namespace

std::map<std::string, JobStatus> ParseSqueueOutput(const std::string& out) {
  std::map<std::string, JobStatus> result;
  for (const auto& f : PipeRecords(out)) result[f[0]] = SlurmJobStatus(f[1], f.size() > 2 ? f[2] : "");
  return result;
}

std::map<std::string, JobStatus> ParseSacctOutput(const std::string& out) {
  std::map<std::string, JobStatus> result;
  for (const auto& f : PipeRecords(out)) {
    if (f[0].find('.') != std::string::npos) continue;  // a step (4711.batch), not the job
    JobStatus s = SlurmJobStatus(f[1]);
    if (f.size() > 2 && !f[2].empty()) s.detail += " exit " + f[2];
    result[f[0]] = s;
  }
  return result;
}

Result<CommandOutput> SlurmProvider::RunTool(const std::vector<std::string>& argv) {
  return runner_->Run(argv, std::chrono::seconds(config_.cmd_timeout_s));
}

Result<std::string> SlurmProvider::Submit(const BlockSpec& spec) {
  LOOM_RETURN_IF_ERROR(WriteBlockScript(spec.script_path, RenderBlockScript(config_, spec)));
  LOOM_ASSIGN_OR_RETURN(auto out, RunTool({"sbatch", "--parsable", spec.script_path}));
  if (out.exit_code != 0) {
    // "sbatch: error: Batch job submission failed: Invalid partition name specified"
    return FailedPrecondition("Slurm refused block " + spec.block_id + " (sbatch exit " +
                              std::to_string(out.exit_code) + "): " + TrimSpace(out.err.empty() ? out.out : out.err));
  }
  return ParseSbatchOutput(out.out);
}

Result<std::map<std::string, JobStatus>> SlurmProvider::Poll(const std::vector<std::string>& job_ids) {
  std::map<std::string, JobStatus> result;
  if (job_ids.empty()) return result;
  LOOM_ASSIGN_OR_RETURN(
      auto sq, RunTool({"squeue", "--noheader", "--states=all", "--format=%i|%T|%r", "--jobs=" + JoinIds(job_ids)}));
  if (sq.exit_code == 0) {
    result = ParseSqueueOutput(sq.out);
  } else if (sq.err.find("Invalid job id") == std::string::npos) {
    // The controller did not answer: no news is not bad news; try again at the next poll.
    return Unavailable("squeue failed (exit " + std::to_string(sq.exit_code) + "): " + TrimSpace(sq.err));
  }
  std::vector<std::string> missing;
  for (const auto& id : job_ids) {
    if (!result.contains(id)) missing.push_back(id);
  }
  if (missing.empty()) return result;
  // Ended long enough ago that the controller forgot it: ask the accounting database.
  auto sa = RunTool({"sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State,ExitCode",
                     "--jobs=" + JoinIds(missing)});
  std::map<std::string, JobStatus> acct;
  if (sa.ok() && sa->exit_code == 0) acct = ParseSacctOutput(sa->out);
  for (const auto& id : missing) {
    auto it = acct.find(id);
    result[id] =
        it != acct.end() ? it->second : JobStatus{JobState::kUnknown, "neither squeue nor sacct knows the job"};
  }
  return result;
}

Status SlurmProvider::Cancel(const std::vector<std::string>& job_ids) {
  if (job_ids.empty()) return Status::Ok();
  std::vector<std::string> argv = {"scancel"};
  argv.insert(argv.end(), job_ids.begin(), job_ids.end());
  LOOM_ASSIGN_OR_RETURN(auto out, RunTool(argv));
  // scancel of a job that already ended says so and exits non-zero: that job is over anyway.
  if (out.exit_code != 0 && out.err.find("Invalid job id") == std::string::npos &&
      out.err.find("already completing or completed") == std::string::npos) {
    return Unavailable("scancel failed (exit " + std::to_string(out.exit_code) + "): " + TrimSpace(out.err));
  }
  return Status::Ok();
}

}  // namespace loom::endpoint
