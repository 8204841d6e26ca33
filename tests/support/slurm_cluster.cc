#include "tests/support/slurm_cluster.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "common/util.h"
#include "endpoint/command_runner.h"

namespace loom::testing {
namespace fs = std::filesystem;

namespace {

bool OnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return true;
  }
  for (const char* sbin : {"/usr/sbin/", "/sbin/"}) {
    if (::access((std::string(sbin) + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string Which(const std::string& name) {
  for (const char* sbin : {"/usr/sbin/", "/sbin/", "/usr/bin/"}) {
    if (::access((std::string(sbin) + name).c_str(), X_OK) == 0) return std::string(sbin) + name;
  }
  return name;
}

std::string Tail(const std::string& path, size_t bytes = 1500) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

}  // namespace

std::string SlurmCluster::Unavailable() {
  if (::geteuid() != 0) return "the Slurm tests need root (slurmd runs jobs as their users); run them as root";
  for (const char* bin : {"munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel"}) {
    if (!OnPath(bin)) return std::string("'") + bin + "' is not installed (Debian: slurm-wlm and munge)";
  }
  return "";
}

Result<std::unique_ptr<SlurmCluster>> SlurmCluster::Start(const std::string& dir, std::chrono::milliseconds timeout) {
  std::unique_ptr<SlurmCluster> c(new SlurmCluster());
  c->dir_ = dir;
  std::error_code ec;
  for (const char* sub : {"munge", "state", "spool", "log"}) fs::create_directories(dir + "/" + sub, ec);
  // munged insists that its directories are not writable by others.
  ::chmod(dir.c_str(), 0755);
  ::chmod((dir + "/munge").c_str(), 0700);

  // A fresh munge key: 1 KiB of randomness, readable by its owner only.
  const std::string key = dir + "/munge/munge.key";
  {
    std::random_device rd;
    std::string bytes(1024, '\0');
    for (auto& b : bytes) b = static_cast<char>(rd());
    std::ofstream(key, std::ios::binary) << bytes;
    ::chmod(key.c_str(), 0400);
  }
  const std::string socket = dir + "/munge/munge.socket";
  SpawnOptions mo;
  mo.log_path = dir + "/log/munged.out";
  LOOM_ASSIGN_OR_RETURN(c->munged_, Subprocess::Spawn({Which("munged"), "--foreground", "--force", "--socket=" + socket,
                                                       "--key-file=" + key, "--pid-file=" + dir + "/munge/munged.pid",
                                                       "--log-file=" + dir + "/log/munged.log",
                                                       "--seed-file=" + dir + "/munge/munged.seed"},
                                                      mo));
  const auto socket_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!fs::exists(socket)) {
    if (!c->munged_.Running()) return Internal("munged exited at start:\n" + c->LogTails());
    if (std::chrono::steady_clock::now() > socket_deadline) return Internal("munged made no socket:\n" + c->LogTails());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  c->node_ = std::string(host).substr(0, std::string(host).find('.'));
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  const long mem_mb = ::sysconf(_SC_PHYS_PAGES) / 1024 * ::sysconf(_SC_PAGE_SIZE) / 1024;
  const int ctld_port = FreeLoopbackPort();
  int slurmd_port = FreeLoopbackPort();
  while (slurmd_port == ctld_port) slurmd_port = FreeLoopbackPort();
  c->conf_ = dir + "/slurm.conf";
  {
    std::ofstream conf(c->conf_);
    conf << "# One-node Slurm for Loom's tests (tests/support/slurm_cluster.h)\n"
         << "ClusterName=loomtest\n"
         << "SlurmctldHost=" << c->node_ << "(127.0.0.1)\n"
         << "SlurmUser=root\nSlurmdUser=root\n"
         << "SlurmctldPort=" << ctld_port << "\nSlurmdPort=" << slurmd_port << "\n"
         << "AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket=" << socket << "\n"
         << "StateSaveLocation=" << dir << "/state\n"
         << "SlurmdSpoolDir=" << dir << "/spool\n"
         << "SlurmctldPidFile=" << dir << "/slurmctld.pid\nSlurmdPidFile=" << dir << "/slurmd.pid\n"
         << "SlurmctldLogFile=" << dir << "/log/slurmctld.log\nSlurmdLogFile=" << dir << "/log/slurmd.log\n"
         << "SlurmctldDebug=info\nSlurmdDebug=info\n"
         << "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
         << "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
         << "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n"
         << "MpiDefault=none\nReturnToService=2\nSwitchType=switch/none\n"
         // Short intervals keep the tests fast: the scheduler runs on every event and at least
         // each second, a killed job's processes get 2 s after SIGTERM.
         << "SchedulerType=sched/builtin\nSchedulerParameters=sched_interval=1,sched_min_interval=100000\n"
         << "MessageTimeout=10\nSlurmctldTimeout=30\nSlurmdTimeout=30\nInactiveLimit=0\nKillWait=2\n"
         << "MinJobAge=300\nWaittime=0\nUnkillableStepTimeout=30\n"
         << "NodeName=" << c->node_ << " NodeAddr=127.0.0.1 CPUs=" << cpus << " RealMemory=" << mem_mb
         << " State=UNKNOWN\n"
         // Several blocks share the node's CPUs (blocks mostly wait on tasks).
         << "PartitionName=" << c->partition_ << " Nodes=" << c->node_
         << " Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8\n";
  }
  ::setenv("SLURM_CONF", c->conf_.c_str(), 1);
  SpawnOptions so;
  so.log_path = dir + "/log/slurmctld.out";
  LOOM_ASSIGN_OR_RETURN(c->slurmctld_, Subprocess::Spawn({Which("slurmctld"), "-D", "-i", "-f", c->conf_}, so));
  SpawnOptions dopt;
  dopt.log_path = dir + "/log/slurmd.out";
  LOOM_ASSIGN_OR_RETURN(c->slurmd_, Subprocess::Spawn({Which("slurmd"), "-D", "-N", c->node_, "-f", c->conf_}, dopt));
  LOOM_RETURN_IF_ERROR(c->WaitNodeIdle(timeout));
  return c;
}

Status SlurmCluster::WaitNodeIdle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!slurmctld_.Running()) return Internal("slurmctld exited at start:\n" + LogTails());
    if (!slurmd_.Running()) return Internal("slurmd exited at start:\n" + LogTails());
    auto out = Run({"sinfo", "--noheader", "--format=%T", "--nodes=" + node_});
    if (out.ok()) {
      last = *out;
      if (last.rfind("idle", 0) == 0) return Status::Ok();
    } else {
      last = out.status().message();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return DeadlineExceeded("the Slurm node did not become idle (sinfo: " + last + "):\n" + LogTails());
}

Result<std::string> SlurmCluster::Run(const std::vector<std::string>& argv) const {
  endpoint::SystemCommandRunner runner;
  LOOM_ASSIGN_OR_RETURN(auto out, runner.Run(argv, std::chrono::seconds(20)));
  if (out.exit_code != 0) {
    return ::loom::Unavailable(endpoint::DescribeCommand(argv) + " failed (exit " + std::to_string(out.exit_code) +
                               "): " + out.err);
  }
  return out.out;
}

Result<std::vector<std::string>> SlurmCluster::QueuedJobs() const {
  LOOM_ASSIGN_OR_RETURN(auto out, Run({"squeue", "--noheader", "--format=%i"}));
  std::vector<std::string> ids;
  std::stringstream ss(out);
  std::string line;
  while (std::getline(ss, line)) {
    if (!line.empty()) ids.push_back(line);
  }
  return ids;
}

Status SlurmCluster::CancelAll(std::chrono::milliseconds timeout) {
  (void)Run({"scancel", "--partition=" + partition_});
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto jobs = QueuedJobs();
    if (jobs.ok() && jobs->empty()) return Status::Ok();
    if (std::chrono::steady_clock::now() >= deadline) return DeadlineExceeded("Slurm jobs still queued");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string SlurmCluster::LogTails() const {
  std::string s;
  for (const char* name : {"munged.log", "munged.out", "slurmctld.log", "slurmctld.out", "slurmd.log", "slurmd.out"}) {
    const std::string t = Tail(dir_ + "/log/" + name);
    if (!t.empty()) s += "--- " + std::string(name) + "\n" + t + "\n";
  }
  return s;
}

SlurmCluster::~SlurmCluster() {
  if (slurmctld_.Running() && slurmd_.Running()) (void)CancelAll();
  slurmd_.Stop(std::chrono::milliseconds(5000));
  slurmctld_.Stop(std::chrono::milliseconds(5000));
  munged_.Stop(std::chrono::milliseconds(3000));
  ::unsetenv("SLURM_CONF");
}

}  // namespace loom::testing
