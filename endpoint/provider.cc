#include "endpoint/provider.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "endpoint/local_provider.h"
#include "endpoint/pbs_provider.h"
#include "endpoint/slurm_provider.h"

namespace loom::endpoint {

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kPending:
      return "pending";
    case JobState::kRunning:
      return "running";
    case JobState::kCompleted:
      return "completed";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
    case JobState::kTimeout:
      return "timeout";
    case JobState::kNodeFail:
      return "node_fail";
    case JobState::kUnknown:
      return "unknown";
  }
  return "unknown";
}

std::string EffectiveLauncher(const ProviderConfig& config, int nodes) {
  if (config.launcher == "none") return "";
  if (!config.launcher.empty()) return config.launcher;
  // One manager per node: Slurm's srun starts one task on each node of the allocation (also
  // when there is one node, so that scancel reaches the manager through the step).
  if (config.type == "slurm") return "srun --ntasks=" + std::to_string(nodes) + " --ntasks-per-node=1";
  // PBS has no portable per-node launcher; pbsdsh -u runs one copy per node where present.
  if (config.type == "pbs" && nodes > 1) return "pbsdsh -u";
  return "";
}

std::string RenderBlockScript(const ProviderConfig& config, const BlockSpec& spec) {
  std::string s = "#!/bin/bash\n";
  if (config.type == "slurm") {
    s += "#SBATCH --job-name=" + spec.job_name + "\n";
    s += "#SBATCH --nodes=" + std::to_string(spec.nodes) + "\n";
    s += "#SBATCH --ntasks-per-node=1\n";
    s += "#SBATCH --time=" + spec.walltime + "\n";
    s += "#SBATCH --output=" + spec.output_path + "\n";
    if (!config.partition.empty()) s += "#SBATCH --partition=" + config.partition + "\n";
    if (!config.account.empty()) s += "#SBATCH --account=" + config.account + "\n";
  } else if (config.type == "pbs") {
    s += "#PBS -N " + spec.job_name + "\n";
    s += "#PBS -l select=" + std::to_string(spec.nodes) + "\n";
    s += "#PBS -l place=scatter\n";
    s += "#PBS -l walltime=" + spec.walltime + "\n";
    s += "#PBS -j oe\n";
    s += "#PBS -o " + spec.output_path + "\n";
    if (!config.partition.empty()) s += "#PBS -q " + config.partition + "\n";
    if (!config.account.empty()) s += "#PBS -A " + config.account + "\n";
  }
  for (const auto& line : config.scheduler_options) s += line + "\n";
  s += "# Loom block " + spec.block_id + ": worker_init, then one loom-manager per node.\n";
  s += "export LOOM_BLOCK_ID=" + ShellQuote(spec.block_id) + "\n";
  if (!spec.worker_init.empty()) {
    // worker_init runs in this shell (so `module load` and `source` take effect); a failing
    // line ends the block, with the line in its output.
    s += "set -e\n";
    for (const auto& line : spec.worker_init) s += line + "\n";
    s += "set +e\n";
  }
  const std::string launcher = EffectiveLauncher(config, spec.nodes);
  std::string command = DescribeCommand(spec.manager_command);
  // With no launcher the manager replaces the shell, so a signal to the job reaches it directly.
  s += launcher.empty() ? "exec " + command + "\n" : launcher + " " + command + "\n";
  return s;
}

Status WriteBlockScript(const std::string& path, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) return Internal("cannot write the block script " + tmp);
  }
  if (::chmod(tmp.c_str(), 0700) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Internal("cannot install the block script " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

Result<std::unique_ptr<Provider>> MakeProvider(const ProviderConfig& config, CommandRunner* runner) {
  if (config.type == "local") return std::unique_ptr<Provider>(std::make_unique<LocalProvider>(config));
  if (config.type == "slurm") return std::unique_ptr<Provider>(std::make_unique<SlurmProvider>(config, runner));
  if (config.type == "pbs") return std::unique_ptr<Provider>(std::make_unique<PbsProvider>(config, runner));
  return InvalidArgument("provider.type '" + config.type + "' is not known: use local, slurm or pbs");
}

}  // namespace loom::endpoint
