#include "endpoint/pbs_provider.h"

#include <cctype>
#include <sstream>

namespace loom::endpoint {
namespace {

// PBS Pro exit statuses: negative for failures to run the job (JOB_EXEC_*), 256+N (or 128+N
// under some MOMs) for a job killed by signal N.
JobStatus FromQstat(const std::string& state, const std::string& exit_status, const std::string& comment) {
  JobStatus s;
  s.detail = "job_state=" + state + (exit_status.empty() ? "" : " Exit_status=" + exit_status) +
             (comment.empty() ? "" : " (" + comment + ")");
  if (state == "Q" || state == "H" || state == "W" || state == "T" || state == "S" || state == "U" || state == "M") {
    s.state = JobState::kPending;
  } else if (state == "R" || state == "E" || state == "B") {
    s.state = JobState::kRunning;
  } else if (state == "F" || state == "C" || state == "X") {
    int code = 0;
    try {
      code = exit_status.empty() ? 0 : std::stoi(exit_status);
    } catch (const std::exception&) {
      code = -1;
    }
    if (code == 0) {
      s.state = JobState::kCompleted;
    } else if (code == 271 || code == 265 || code == 143 || code == 137) {
      // SIGTERM / SIGKILL: qdel, or the walltime (the comment says which).
      s.state = comment.find("walltime") != std::string::npos ? JobState::kTimeout : JobState::kCancelled;
    } else if (code == -3 || code == -4 || code == -2) {
      // JOB_EXEC_RETRY / JOB_EXEC_BADRESRT / JOB_EXEC_FAIL2: the node or its MOM failed.
      s.state = JobState::kNodeFail;
    } else {
      s.state = JobState::kFailed;
    }
  } else {
    s.state = JobState::kUnknown;
  }
  return s;
}

}  // namespace

Result<std::string> ParseQsubOutput(const std::string& out) {
  const std::string id = TrimSpace(out);
  if (id.empty() || id.find_first_of(" \t\n") != std::string::npos ||
      !std::isdigit(static_cast<unsigned char>(id[0]))) {
    return Internal("qsub printed no job id: '" + id + "'");
  }
  return id;
}

std::map<std::string, JobStatus> ParseQstatFull(const std::string& out) {
  std::map<std::string, JobStatus> result;
  std::string id, state, exit_status, comment;
  auto finish = [&] {
    if (!id.empty()) result[id] = FromQstat(state, exit_status, comment);
    id.clear();
    state.clear();
    exit_status.clear();
    comment.clear();
  };
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Job Id:", 0) == 0) {
      finish();
      id = TrimSpace(line.substr(7));
      continue;
    }
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    const std::string key = TrimSpace(line.substr(0, eq));
    const std::string value = TrimSpace(line.substr(eq + 3));
    if (key == "job_state") {
      state = value;
    } else if (key == "Exit_status" || key == "exit_status") {
      exit_status = value;
    } else if (key == "comment") {
      comment = value;
    }
  }
  finish();
  return result;
}

Result<std::string> PbsProvider::Submit(const BlockSpec& spec) {
  LOOM_RETURN_IF_ERROR(WriteBlockScript(spec.script_path, RenderBlockScript(config_, spec)));
  LOOM_ASSIGN_OR_RETURN(auto out,
                        runner_->Run({"qsub", spec.script_path}, std::chrono::seconds(config_.cmd_timeout_s)));
  if (out.exit_code != 0) {
    return FailedPrecondition("PBS refused block " + spec.block_id + " (qsub exit " + std::to_string(out.exit_code) +
                              "): " + TrimSpace(out.err.empty() ? out.out : out.err));
  }
  return ParseQsubOutput(out.out);
}

Result<std::map<std::string, JobStatus>> PbsProvider::Poll(const std::vector<std::string>& job_ids) {
  std::map<std::string, JobStatus> result;
  if (job_ids.empty()) return result;
  std::vector<std::string> argv = {"qstat", "-x", "-f"};
  argv.insert(argv.end(), job_ids.begin(), job_ids.end());
  LOOM_ASSIGN_OR_RETURN(auto out, runner_->Run(argv, std::chrono::seconds(config_.cmd_timeout_s)));
  // qstat exits non-zero when any id is unknown ("qstat: Unknown Job Id 12.srv") but still
  // prints the others; with nothing printed and no such message the server did not answer.
  if (out.exit_code != 0 && TrimSpace(out.out).empty() && out.err.find("Unknown Job Id") == std::string::npos) {
    return Unavailable("qstat failed (exit " + std::to_string(out.exit_code) + "): " + TrimSpace(out.err));
  }
  result = ParseQstatFull(out.out);
  for (const auto& id : job_ids) {
    if (!result.contains(id)) result[id] = {JobState::kUnknown, "qstat does not know the job"};
  }
  return result;
}

Status PbsProvider::Cancel(const std::vector<std::string>& job_ids) {
  if (job_ids.empty()) return Status::Ok();
  std::vector<std::string> argv = {"qdel"};
  argv.insert(argv.end(), job_ids.begin(), job_ids.end());
  LOOM_ASSIGN_OR_RETURN(auto out, runner_->Run(argv, std::chrono::seconds(config_.cmd_timeout_s)));
  if (out.exit_code != 0 && out.err.find("Unknown Job Id") == std::string::npos &&
      out.err.find("Job has finished") == std::string::npos) {
    return Unavailable("qdel failed (exit " + std::to_string(out.exit_code) + "): " + TrimSpace(out.err));
  }
  return Status::Ok();
}

}  // namespace loom::endpoint
