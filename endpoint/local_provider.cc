#include "endpoint/local_provider.h"

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>

namespace loom::endpoint {

LocalProvider::~LocalProvider() {
  for (auto& [id, job] : jobs_) EndGroup(job);
}

Result<std::string> LocalProvider::Submit(const BlockSpec& spec) {
  LOOM_RETURN_IF_ERROR(WriteBlockScript(spec.script_path, RenderBlockScript(config_, spec)));
  SpawnOptions o;
  o.log_path = spec.output_path;
  o.new_process_group = true;
  LOOM_ASSIGN_OR_RETURN(auto leader, Subprocess::Spawn({"/bin/bash", spec.script_path}, o));
  std::string id = std::to_string(leader.pid());
  jobs_[id] = Job{std::move(leader), false};
  return id;
}

Result<std::map<std::string, JobStatus>> LocalProvider::Poll(const std::vector<std::string>& job_ids) {
  std::map<std::string, JobStatus> out;
  for (const auto& id : job_ids) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      out[id] = {JobState::kUnknown, "not a block of this endpoint"};
      continue;
    }
    Job& job = it->second;
    if (job.leader.Running()) {
      out[id] = {JobState::kRunning, ""};
      continue;
    }
    // The leader is gone: make sure nothing of its group is left behind.
    ::kill(-job.leader.pid(), SIGKILL);
    const int st = job.leader.exit_status().value_or(-1);
    JobStatus s;
    s.detail = DescribeWaitStatus(st);
    s.state = job.cancelled                                ? JobState::kCancelled
              : WIFEXITED(st) && WEXITSTATUS(st) == 0      ? JobState::kCompleted
              : WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? JobState::kCancelled
                                                           : JobState::kFailed;
    out[id] = s;
    jobs_.erase(it);
  }
  return out;
}

void LocalProvider::EndGroup(Job& job) {
  const pid_t pgid = job.leader.pid();
  if (pgid <= 0) return;
  job.cancelled = true;
  ::kill(-pgid, SIGTERM);
  (void)job.leader.Wait(grace_);
  // Whatever of the group is still alive (a worker that ignored SIGTERM) goes now. The group id
  // cannot have been reused: a live member keeps it, and with none left the kill is a no-op.
  ::kill(-pgid, SIGKILL);
  (void)job.leader.Wait(std::chrono::milliseconds(5000));
}

Status LocalProvider::Cancel(const std::vector<std::string>& job_ids) {
  for (const auto& id : job_ids) {
    auto it = jobs_.find(id);
    if (it != jobs_.end()) EndGroup(it->second);
  }
  return Status::Ok();
}

}  // namespace loom::endpoint
