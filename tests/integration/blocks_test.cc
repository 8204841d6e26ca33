// Blocks of workers from a provider, with autoscaling, through a real fabric (redis-server,
// loom-service, loom-endpoint; loom-manager and loom-worker in the blocks):
//   - local blocks (process groups on this host): scale up under load, down when idle; a block
//     killed mid-task has its task re-run and is replaced; stopping the endpoint leaves nothing;
//   - Slurm blocks on a real one-node Slurm (tests/support/slurm_cluster.h): the same life cycle
//     with sbatch/squeue/scancel, skipped (with the reason) when not root or Slurm is missing.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include "common/local_fabric.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/slurm_cluster.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::ChildPids;
using loom::testing::RegisterBuiltins;
using loom::testing::WaitFor;

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Writes an endpoint config with blocks from `provider_yaml` (the provider section's lines).
std::string WriteConfig(const std::string& dir, const std::string& provider_yaml, const std::string& engine_yaml) {
  const std::string path = dir + "/endpoint-blocks.yaml";
  std::ofstream(path) << "prefetch: 1\n"
                      << "engine:\n"
                      << engine_yaml << "provider:\n"
                      << provider_yaml;
  return path;
}

std::vector<std::string> SubmitSleeps(Client& c, int n, double seconds) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    auto id = c.Submit("ep", "sleep", {DoubleValue(seconds)});
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (id.ok()) ids.push_back(*id);
  }
  return ids;
}

void ExpectAllSucceed(Client& c, const std::vector<std::string>& ids, std::chrono::milliseconds timeout) {
  for (const auto& id : ids) {
    auto r = c.GetResult(id, timeout);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(r->has_value()) << "task " << id << " did not finish in time";
    EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
  }
}

// Processes in the process groups of the endpoint's local blocks: the managers (its children)
// and their workers.
std::set<pid_t> BlockProcesses(pid_t endpoint) {
  std::set<pid_t> out;
  for (pid_t manager : ChildPids(endpoint)) {
    out.insert(manager);
    for (pid_t w : ChildPids(manager)) out.insert(w);
  }
  return out;
}

class LocalBlocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fabric_ = loom::testing::MakeFabric("local-blocks");
    ASSERT_TRUE(fabric_->StartRedis().ok());
    ASSERT_TRUE(fabric_->StartService().ok());
  }
  Status StartEndpoint(const std::string& provider, const std::string& engine) {
    const std::string config = WriteConfig(fabric_->state_dir(), provider, engine);
    return fabric_->StartEndpoint("ep", 1, {"--config", config});
  }
  pid_t EndpointPid() { return fabric_->endpoint("ep")->pid(); }
  std::unique_ptr<LocalFabric> fabric_;
};

TEST_F(LocalBlocksTest, ScalesUpUnderLoadAndDownWhenIdle) {
  Status s = StartEndpoint("  type: local\n  init_blocks: 1\n  min_blocks: 0\n  max_blocks: 3\n",
                           "  workers_per_node: 1\n  max_idletime_s: 1.5\n  poll_period_ms: 200\n");
  ASSERT_TRUE(s.ok()) << s.ToString() << fabric_->LogTail("endpoint-ep");
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  EXPECT_EQ(ChildPids(EndpointPid()).size(), 1u) << "init_blocks: one block at start";

  auto ids = SubmitSleeps(*client, 6, 1.5);
  // Six tasks on one-worker blocks: the endpoint adds blocks up to max_blocks.
  EXPECT_TRUE(WaitFor([&] { return ChildPids(EndpointPid()).size() == 3; }, 15s))
      << "blocks now: " << ChildPids(EndpointPid()).size() << "\n"
      << fabric_->LogTail("endpoint-ep");
  // Three managers and their workers.
  EXPECT_TRUE(WaitFor([&] { return BlockProcesses(EndpointPid()).size() >= 6; }, 10s));
  const auto during = BlockProcesses(EndpointPid());
  ExpectAllSucceed(*client, ids, 30s);

  // Idle for max_idletime: every block is released (min_blocks 0), with all its processes.
  EXPECT_TRUE(WaitFor([&] { return ChildPids(EndpointPid()).empty(); }, 15s))
      << "blocks left: " << ChildPids(EndpointPid()).size() << "\n"
      << fabric_->LogTail("endpoint-ep");
  EXPECT_TRUE(WaitFor(
      [&] {
        for (pid_t p : during) {
          if (Alive(p)) return false;
        }
        return true;
      },
      10s))
      << "a manager or worker outlived its released block";

  // Work after scaling to zero brings a block back.
  auto again = SubmitSleeps(*client, 1, 0.1);
  ExpectAllSucceed(*client, again, 30s);
}

TEST_F(LocalBlocksTest, KilledBlockHasItsTaskRerunAndIsReplacedAndStopLeavesNothing) {
  Status s = StartEndpoint("  type: local\n  init_blocks: 1\n  min_blocks: 1\n  max_blocks: 1\n",
                           "  workers_per_node: 1\n  max_idletime_s: 60\n  poll_period_ms: 200\n");
  ASSERT_TRUE(s.ok()) << s.ToString() << fabric_->LogTail("endpoint-ep");
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  auto managers = ChildPids(EndpointPid());
  ASSERT_EQ(managers.size(), 1u);
  const pid_t first = *managers.begin();

  auto ids = SubmitSleeps(*client, 1, 3);
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = client->GetStatus(ids[0]);
        return st.ok() && st->state() == v1::TASK_STATE_RUNNING;
      },
      15s));
  // The whole block dies at once (as a node would): kill -9 its process group.
  ASSERT_EQ(::kill(-first, SIGKILL), 0);
  auto r = client->GetResult(ids[0], 30s);
  ASSERT_TRUE(r.ok() && r->has_value()) << fabric_->LogTail("endpoint-ep");
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
  EXPECT_EQ((*r)->attempts(), 2);
  ASSERT_EQ((*r)->attempt_history_size(), 1);
  EXPECT_EQ((*r)->attempt_history(0).failure(), v1::FAILURE_KIND_WORKER_LOST);
  EXPECT_NE((*r)->attempt_history(0).error().find("block"), std::string::npos) << (*r)->attempt_history(0).error();
  // A new block replaced it.
  managers = ChildPids(EndpointPid());
  ASSERT_EQ(managers.size(), 1u);
  EXPECT_NE(*managers.begin(), first);

  // Stopping the endpoint ends its blocks: no manager or worker is left.
  const auto processes = BlockProcesses(EndpointPid());
  ASSERT_FALSE(processes.empty());
  fabric_->KillEndpoint("ep", SIGTERM);
  for (pid_t p : processes) EXPECT_FALSE(Alive(p)) << "process " << p << " outlived the endpoint";
}

// ------------------------------------------------------------------------------- real Slurm

class SlurmBlocksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = loom::testing::SlurmCluster::Unavailable();
    if (!skip_reason_.empty()) return;
    dir_ = new loom::testing::TempDir("slurm");
    auto c = loom::testing::SlurmCluster::Start(dir_->path());
    if (!c.ok()) {
      start_error_ = c.status().ToString();
      return;
    }
    cluster_ = std::move(c).value().release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_NE(cluster_, nullptr) << "the Slurm cluster did not start: " << start_error_;
    ASSERT_TRUE(cluster_->CancelAll().ok());
    fabric_ = loom::testing::MakeFabric("slurm-blocks");
    ASSERT_TRUE(fabric_->StartRedis().ok());
    ASSERT_TRUE(fabric_->StartService().ok());
  }
  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      std::cerr << "endpoint log:\n" << fabric_->LogTail("endpoint-ep", 4000) << "\n" << cluster_->LogTails();
    }
  }
  Status StartEndpoint(int min_blocks, int max_blocks, double max_idletime_s) {
    const std::string provider = "  type: slurm\n  partition: " + cluster_->partition() +
                                 "\n  init_blocks: 1\n  min_blocks: " + std::to_string(min_blocks) +
                                 "\n  max_blocks: " + std::to_string(max_blocks) +
                                 "\n  walltime: \"00:10:00\"\n  worker_init:\n    - export LOOM_TEST_INIT=1\n";
    const std::string engine =
        "  workers_per_node: 1\n  max_idletime_s: " + std::to_string(max_idletime_s) + "\n  poll_period_ms: 250\n";
    return fabric_->StartEndpoint("ep", 1, {"--config", WriteConfig(fabric_->state_dir(), provider, engine)});
  }
  size_t Jobs() {
    auto j = cluster_->QueuedJobs();
    return j.ok() ? j->size() : 0;
  }

  static std::string skip_reason_;
  static std::string start_error_;
  static loom::testing::TempDir* dir_;
  static loom::testing::SlurmCluster* cluster_;
  std::unique_ptr<LocalFabric> fabric_;
};
std::string SlurmBlocksTest::skip_reason_;
std::string SlurmBlocksTest::start_error_;
loom::testing::TempDir* SlurmBlocksTest::dir_ = nullptr;
loom::testing::SlurmCluster* SlurmBlocksTest::cluster_ = nullptr;

TEST_F(SlurmBlocksTest, BlockRunsTasksScalesUpUnderLoadAndDownWhenIdle) {
  Status s = StartEndpoint(0, 2, 2);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Jobs(), 1u) << "init_blocks: one Slurm job";
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  auto ids = SubmitSleeps(*client, 4, 1.5);
  EXPECT_TRUE(WaitFor([&] { return Jobs() == 2; }, 20s)) << "jobs: " << Jobs();
  ExpectAllSucceed(*client, ids, 40s);
  EXPECT_TRUE(WaitFor([&] { return Jobs() == 0; }, 20s)) << "idle blocks were not released; jobs: " << Jobs();
}

TEST_F(SlurmBlocksTest, ScancelMidTaskRerunsItsTaskAndReplacesTheBlock) {
  Status s = StartEndpoint(1, 1, 60);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto jobs = cluster_->QueuedJobs();
  ASSERT_TRUE(jobs.ok() && jobs->size() == 1u);
  const std::string first = (*jobs)[0];
  auto client = loom::testing::ConnectClient(*fabric_);
  RegisterBuiltins(*client);
  // Longer than KillWait (2 s in the test slurm.conf): scancel's SIGTERM lets a worker finish
  // its task, the SIGKILL after KillWait does not.
  auto ids = SubmitSleeps(*client, 1, 6);
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = client->GetStatus(ids[0]);
        return st.ok() && st->state() == v1::TASK_STATE_RUNNING;
      },
      20s));
  ASSERT_TRUE(cluster_->Run({"scancel", first}).ok());
  auto r = client->GetResult(ids[0], 40s);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
  EXPECT_EQ((*r)->attempts(), 2);
  ASSERT_EQ((*r)->attempt_history_size(), 1);
  EXPECT_EQ((*r)->attempt_history(0).failure(), v1::FAILURE_KIND_WORKER_LOST);
  jobs = cluster_->QueuedJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 1u) << "the block was not replaced";
  EXPECT_NE((*jobs)[0], first);
}

TEST_F(SlurmBlocksTest, EndpointStopLeavesNoJob) {
  Status s = StartEndpoint(2, 2, 60);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(WaitFor([&] { return Jobs() == 2; }, 10s));
  fabric_->KillEndpoint("ep", SIGTERM);
  EXPECT_EQ(Jobs(), 0u) << "the endpoint left Slurm jobs behind";
}

}  // namespace
}  // namespace loom
