// The providers' script generation and their parsing of the schedulers' outputs, through a fake
// CommandRunner that replays recorded outputs (tests/data/slurm: captured from the single-node
// Slurm of tests/support/slurm_cluster.sh; tests/data/pbs: PBS Pro's format, see its README).
#include "endpoint/provider.h"

#include <gtest/gtest.h>

#include <deque>
#include <fstream>
#include <sstream>

#include "endpoint/pbs_provider.h"
#include "endpoint/slurm_provider.h"
#include "tests/support/test_env.h"

namespace loom::endpoint {
namespace {

std::string ReadData(const std::string& name) {
  std::ifstream in(std::string(LOOM_TEST_DATA_DIR) + "/" + name);
  EXPECT_TRUE(in.good()) << "missing test data " << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Replays canned outputs in order and records each command line it was asked to run.
class FakeRunner final : public CommandRunner {
 public:
  void Expect(CommandOutput out) { outputs_.push_back(std::move(out)); }
  Result<CommandOutput> Run(const std::vector<std::string>& argv, std::chrono::milliseconds) override {
    calls.push_back(argv);
    if (outputs_.empty()) return Unavailable("no canned output for " + DescribeCommand(argv));
    auto out = outputs_.front();
    outputs_.pop_front();
    return out;
  }
  std::vector<std::vector<std::string>> calls;

 private:
  std::deque<CommandOutput> outputs_;
};

BlockSpec Spec(const std::string& dir) {
  BlockSpec s;
  s.block_id = "b7";
  s.job_name = "loom-ep-b7";
  s.nodes = 2;
  s.walltime = "00:10:00";
  s.manager_command = {"/opt/loom/bin/loom-manager", "--endpoint", "tcp://login1:4000", "--block-id", "b7", "--plugin",
                       "/opt/my plugins/x.so"};
  s.worker_init = {"module load cuda", "source /opt/venv/bin/activate"};
  s.script_path = dir + "/b7.sh";
  s.output_path = dir + "/b7.out";
  return s;
}

TEST(BlockScriptTest, SlurmScriptHasTheHeaderWorkerInitAndOneManagerPerNode) {
  ProviderConfig c;
  c.type = "slurm";
  c.partition = "gpu";
  c.account = "proj42";
  c.scheduler_options = {"#SBATCH --gres=gpu:4", "#SBATCH --exclusive"};
  const std::string s = RenderBlockScript(c, Spec("/scratch/blocks"));
  EXPECT_EQ(s.rfind("#!/bin/bash\n", 0), 0u);
  for (const char* want : {"#SBATCH --job-name=loom-ep-b7\n", "#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=1\n",
                           "#SBATCH --time=00:10:00\n", "#SBATCH --partition=gpu\n", "#SBATCH --account=proj42\n",
                           "#SBATCH --output=/scratch/blocks/b7.out\n", "#SBATCH --gres=gpu:4\n",
                           "#SBATCH --exclusive\n", "module load cuda\n", "source /opt/venv/bin/activate\n"}) {
    EXPECT_NE(s.find(want), std::string::npos) << "missing '" << want << "' in\n" << s;
  }
  // worker_init runs before the manager; the path with a space is quoted; srun starts one per node.
  EXPECT_LT(s.find("module load cuda"), s.find("/opt/loom/bin/loom-manager"));
  EXPECT_NE(s.find("srun --ntasks=2 --ntasks-per-node=1 /opt/loom/bin/loom-manager --endpoint tcp://login1:4000 "
                   "--block-id b7 --plugin '/opt/my plugins/x.so'\n"),
            std::string::npos)
      << s;
  // Every #SBATCH line comes before the first command, or sbatch ignores it.
  EXPECT_LT(s.rfind("#SBATCH"), s.find("export LOOM_BLOCK_ID"));
}

TEST(BlockScriptTest, PbsAndLocalScripts) {
  ProviderConfig pbs;
  pbs.type = "pbs";
  pbs.partition = "workq";
  pbs.account = "proj42";
  BlockSpec one = Spec("/scratch");
  one.nodes = 1;
  const std::string p = RenderBlockScript(pbs, one);
  for (const char* want : {"#PBS -N loom-ep-b7\n", "#PBS -l select=1\n", "#PBS -l walltime=00:10:00\n",
                           "#PBS -q workq\n", "#PBS -A proj42\n", "#PBS -o /scratch/b7.out\n", "#PBS -j oe\n"}) {
    EXPECT_NE(p.find(want), std::string::npos) << "missing '" << want << "' in\n" << p;
  }
  EXPECT_NE(p.find("\nexec /opt/loom/bin/loom-manager"), std::string::npos) << p;
  EXPECT_NE(RenderBlockScript(pbs, Spec("/scratch")).find("\npbsdsh -u /opt/loom/bin/loom-manager"), std::string::npos);

  ProviderConfig local;
  local.type = "local";
  const std::string l = RenderBlockScript(local, one);
  EXPECT_EQ(l.find("#SBATCH"), std::string::npos);
  EXPECT_EQ(l.find("#PBS"), std::string::npos);
  EXPECT_NE(l.find("\nexec /opt/loom/bin/loom-manager"), std::string::npos) << l;

  ProviderConfig custom;
  custom.type = "slurm";
  custom.launcher = "mpiexec -n 2 -ppn 1";
  EXPECT_NE(RenderBlockScript(custom, Spec("/s")).find("\nmpiexec -n 2 -ppn 1 /opt/loom/bin/loom-manager"),
            std::string::npos);
  custom.launcher = "none";
  EXPECT_NE(RenderBlockScript(custom, Spec("/s")).find("\nexec /opt/loom/bin/loom-manager"), std::string::npos);
}

TEST(SlurmParseTest, SbatchOutput) {
  EXPECT_EQ(*ParseSbatchOutput("4711\n"), "4711");
  EXPECT_EQ(*ParseSbatchOutput("4711;cluster-a\n"), "4711");
  EXPECT_FALSE(ParseSbatchOutput("").ok());
  EXPECT_FALSE(ParseSbatchOutput("Submitted batch job 12\n").ok());
}

TEST(SlurmParseTest, StatesAndHopelessPendingReasons) {
  EXPECT_EQ(SlurmJobStatus("PENDING", "Resources").state, JobState::kPending);
  EXPECT_EQ(SlurmJobStatus("PENDING", "PartitionTimeLimit").state, JobState::kFailed);
  EXPECT_NE(SlurmJobStatus("PENDING", "PartitionTimeLimit").detail.find("will not start"), std::string::npos);
  EXPECT_EQ(SlurmJobStatus("RUNNING").state, JobState::kRunning);
  EXPECT_EQ(SlurmJobStatus("COMPLETING").state, JobState::kRunning);
  EXPECT_EQ(SlurmJobStatus("COMPLETED").state, JobState::kCompleted);
  EXPECT_EQ(SlurmJobStatus("CANCELLED by 0").state, JobState::kCancelled);
  EXPECT_EQ(SlurmJobStatus("TIMEOUT").state, JobState::kTimeout);
  EXPECT_EQ(SlurmJobStatus("NODE_FAIL").state, JobState::kNodeFail);
  EXPECT_EQ(SlurmJobStatus("FAILED").state, JobState::kFailed);
  EXPECT_EQ(SlurmJobStatus("OUT_OF_MEMORY").state, JobState::kFailed);
  EXPECT_EQ(SlurmJobStatus("SOMETHING_NEW").state, JobState::kUnknown);
}

TEST(SlurmProviderTest, SubmitsPollsWithSqueueThenSacctAndCancels) {
  loom::testing::TempDir dir("slurm-provider");
  ProviderConfig c;
  c.type = "slurm";
  FakeRunner runner;
  SlurmProvider p(c, &runner);
  runner.Expect({0, ReadData("slurm/sbatch.out"), ""});
  auto job = p.Submit(Spec(dir.path()));
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(runner.calls.back(), (std::vector<std::string>{"sbatch", "--parsable", dir.path() + "/b7.sh"}));
  std::ifstream script(dir.path() + "/b7.sh");
  EXPECT_TRUE(script.good()) << "the script is written before sbatch reads it";

  // squeue knows two of three jobs; the third is asked of sacct.
  runner.Expect({0, ReadData("slurm/squeue.out"), ""});
  runner.Expect({0, ReadData("slurm/sacct.out"), ""});
  auto states = p.Poll({"2", "5", "1"});
  ASSERT_TRUE(states.ok()) << states.status().ToString();
  ASSERT_EQ(runner.calls.size(), 3u);
  EXPECT_EQ(runner.calls[1][0], "squeue");
  EXPECT_EQ(runner.calls[1].back(), "--jobs=2,5,1");
  EXPECT_EQ(runner.calls[2][0], "sacct");
  EXPECT_EQ(runner.calls[2].back(), "--jobs=1");
  EXPECT_EQ(states->at("2").state, JobState::kRunning);
  EXPECT_EQ(states->at("5").state, JobState::kPending);  // held by its user
  EXPECT_NE(states->at("5").detail.find("JobHeldUser"), std::string::npos);
  EXPECT_EQ(states->at("1").state, JobState::kNodeFail);

  // A job neither knows any more (no accounting here) is unknown: over.
  runner.Expect({1, "", ReadData("slurm/squeue_invalid.err")});
  runner.Expect({1, "", ReadData("slurm/sacct_disabled.err")});
  states = p.Poll({"9"});
  ASSERT_TRUE(states.ok()) << states.status().ToString();
  EXPECT_EQ(states->at("9").state, JobState::kUnknown);
  EXPECT_TRUE(JobEnded(states->at("9").state));

  runner.Expect({0, "", ""});
  EXPECT_TRUE(p.Cancel({"2", "3"}).ok());
  EXPECT_EQ(runner.calls.back(), (std::vector<std::string>{"scancel", "2", "3"}));
}

TEST(SlurmProviderTest, ReportsWhySlurmRefusedAJobAndWhenTheControllerIsDown) {
  loom::testing::TempDir dir("slurm-provider");
  ProviderConfig c;
  c.type = "slurm";
  FakeRunner runner;
  SlurmProvider p(c, &runner);
  runner.Expect({1, "", ReadData("slurm/sbatch_rejected.err")});
  auto job = p.Submit(Spec(dir.path()));
  ASSERT_FALSE(job.ok());
  EXPECT_NE(job.status().message().find("Invalid partition name specified"), std::string::npos)
      << job.status().message();
  EXPECT_NE(job.status().message().find("block b7"), std::string::npos);

  runner.Expect({1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"});
  auto states = p.Poll({"5"});
  ASSERT_FALSE(states.ok());
  EXPECT_EQ(states.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(states.status().message().find("Unable to contact"), std::string::npos);
}

TEST(PbsParseTest, QsubAndQstatFull) {
  EXPECT_EQ(*ParseQsubOutput(ReadData("pbs/qsub.out")), "4711.pbs-head");
  EXPECT_FALSE(ParseQsubOutput("").ok());
  auto st = ParseQstatFull(ReadData("pbs/qstat_xf.out"));
  ASSERT_EQ(st.size(), 5u);
  EXPECT_EQ(st.at("4711.pbs-head").state, JobState::kPending);
  EXPECT_NE(st.at("4711.pbs-head").detail.find("Insufficient amount of resource"), std::string::npos);
  EXPECT_EQ(st.at("4712.pbs-head").state, JobState::kRunning);
  EXPECT_EQ(st.at("4713.pbs-head").state, JobState::kCompleted);
  EXPECT_EQ(st.at("4714.pbs-head").state, JobState::kCancelled);
  EXPECT_EQ(st.at("4715.pbs-head").state, JobState::kNodeFail);
}

TEST(PbsProviderTest, SubmitsPollsAndCancelsWithRecordedOutputs) {
  loom::testing::TempDir dir("pbs-provider");
  ProviderConfig c;
  c.type = "pbs";
  FakeRunner runner;
  PbsProvider p(c, &runner);
  runner.Expect({0, ReadData("pbs/qsub.out"), ""});
  auto job = p.Submit(Spec(dir.path()));
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(*job, "4711.pbs-head");
  EXPECT_EQ(runner.calls.back(), (std::vector<std::string>{"qsub", dir.path() + "/b7.sh"}));

  // qstat exits non-zero for the forgotten job but prints the others.
  runner.Expect({153, ReadData("pbs/qstat_xf.out"), ReadData("pbs/qstat_unknown.err")});
  auto states = p.Poll({"4711.pbs-head", "4714.pbs-head", "4700.pbs-head"});
  ASSERT_TRUE(states.ok()) << states.status().ToString();
  EXPECT_EQ(runner.calls.back()[0], "qstat");
  EXPECT_EQ(runner.calls.back()[1], "-x");
  EXPECT_EQ(states->at("4711.pbs-head").state, JobState::kPending);
  EXPECT_EQ(states->at("4714.pbs-head").state, JobState::kCancelled);
  EXPECT_EQ(states->at("4700.pbs-head").state, JobState::kUnknown);

  runner.Expect({168, "", ReadData("pbs/qsub_rejected.err")});
  auto refused = p.Submit(Spec(dir.path()));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("Unknown queue"), std::string::npos);

  runner.Expect({0, "", ""});
  EXPECT_TRUE(p.Cancel({"4711.pbs-head"}).ok());
  EXPECT_EQ(runner.calls.back(), (std::vector<std::string>{"qdel", "4711.pbs-head"}));
}

TEST(CommandRunnerTest, CapturesOutputExitCodeAndTimesOut) {
  SystemCommandRunner r;
  auto out = r.Run({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, std::chrono::seconds(10));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->out, "out\n");
  EXPECT_EQ(out->err, "err\n");
  EXPECT_EQ(out->exit_code, 3);
  auto missing = r.Run({"no-such-program-loom"}, std::chrono::seconds(10));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no-such-program-loom"), std::string::npos);
  auto slow = r.Run({"/bin/sh", "-c", "exec sleep 30"}, std::chrono::milliseconds(200));
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace loom::endpoint
