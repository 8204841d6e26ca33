// The autoscaling policy (DecideScaling) and BlockPool driving a fake provider with a fake clock.
#include "endpoint/block_pool.h"

#include <gtest/gtest.h>

namespace loom::endpoint {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

ScalingPolicy Policy(int min_blocks, int max_blocks, int slots, milliseconds idle = seconds(60)) {
  ScalingPolicy p;
  p.min_blocks = min_blocks;
  p.max_blocks = max_blocks;
  p.slots_per_block = slots;
  p.max_idletime = idle;
  return p;
}

TEST(DecideScalingTest, AddsBlocksWhileDemandExceedsCapacityUpToMax) {
  EXPECT_EQ(DecideScaling(Policy(0, 4, 2), 5, {{"b0", milliseconds(0)}}).add, 2);    // 3 blocks for 5 tasks
  EXPECT_EQ(DecideScaling(Policy(0, 4, 2), 100, {{"b0", milliseconds(0)}}).add, 3);  // capped at 4
  EXPECT_EQ(DecideScaling(Policy(0, 4, 2), 4, {{"b0", milliseconds(0)}, {"b1", milliseconds(0)}}).add, 0);
  EXPECT_EQ(DecideScaling(Policy(2, 4, 2), 0, {}).add, 2);  // min_blocks kept even without work
}

TEST(DecideScalingTest, ReleasesOnlyBlocksIdleLongEnoughLongestFirstNeverBelowMin) {
  const auto p = Policy(1, 4, 2, seconds(60));
  std::vector<BlockLoad> blocks = {{"b0", seconds(90)}, {"b1", seconds(30)}, {"b2", seconds(120)}};
  auto d = DecideScaling(p, 0, blocks);
  EXPECT_EQ(d.add, 0);
  // b1 is not idle long enough; of b0 and b2 both may go (min 1 stays: b1).
  EXPECT_EQ(d.release, (std::vector<std::string>{"b2", "b0"}));
  // With work for two blocks only one surplus block goes, the longest idle.
  d = DecideScaling(p, 3, blocks);
  EXPECT_EQ(d.release, (std::vector<std::string>{"b2"}));
  // Never below min_blocks however idle.
  d = DecideScaling(Policy(3, 4, 2, seconds(60)), 0, blocks);
  EXPECT_TRUE(d.release.empty());
}

// A provider whose jobs change state when the test says so; records every call.
class FakeProvider final : public Provider {
 public:
  std::string name() const override { return "fake"; }
  Result<std::string> Submit(const BlockSpec& spec) override {
    submitted.push_back(spec);
    if (refuse) return FailedPrecondition("fake scheduler refuses: " + std::string(refuse_reason));
    const std::string id = std::to_string(next_id++);
    states[id] = {JobState::kPending, "PENDING"};
    return id;
  }
  Result<std::map<std::string, JobStatus>> Poll(const std::vector<std::string>& ids) override {
    ++polls;
    std::map<std::string, JobStatus> out;
    for (const auto& id : ids) {
      auto it = states.find(id);
      out[id] = it == states.end() ? JobStatus{JobState::kUnknown, ""} : it->second;
    }
    return out;
  }
  Status Cancel(const std::vector<std::string>& ids) override {
    for (const auto& id : ids) {
      cancelled.push_back(id);
      states[id] = {JobState::kCancelled, "CANCELLED"};
    }
    return Status::Ok();
  }
  std::vector<BlockSpec> submitted;
  std::vector<std::string> cancelled;
  std::map<std::string, JobStatus> states;
  int next_id = 100;
  int polls = 0;
  bool refuse = false;
  const char* refuse_reason = "Invalid partition name specified";
};

class BlockPoolTest : public ::testing::Test {
 protected:
  void Make(int init, int min, int max, int slots, milliseconds idle) {
    BlockPoolOptions o;
    o.provider.type = "slurm";
    o.provider.nodes_per_block = 1;
    o.provider.worker_init = {"module load x"};
    o.policy = Policy(min, max, slots, idle);
    o.init_blocks = init;
    o.poll_period = seconds(1);
    o.script_dir = "/scratch/blocks";
    o.block_id_prefix = "b";
    o.manager_command = [](const std::string& id) { return std::vector<std::string>{"loom-manager", id}; };
    auto p = std::make_unique<FakeProvider>();
    provider = p.get();
    pool = std::make_unique<BlockPool>(std::move(o), std::move(p));
  }
  void RunAll() {
    for (auto& [id, s] : provider->states) {
      if (s.state == JobState::kPending) s = {JobState::kRunning, "RUNNING"};
    }
  }
  std::chrono::steady_clock::time_point t0{seconds(1000)};
  FakeProvider* provider = nullptr;
  std::unique_ptr<BlockPool> pool;
};

TEST_F(BlockPoolTest, SubmitsInitBlocksWithTheManagerCommandAndWorkerInit) {
  Make(2, 0, 4, 2, seconds(60));
  auto r = pool->Tick(t0, 0, {});
  EXPECT_EQ(r.submitted, (std::vector<std::string>{"b0", "b1"}));
  ASSERT_EQ(provider->submitted.size(), 2u);
  EXPECT_EQ(provider->submitted[0].manager_command, (std::vector<std::string>{"loom-manager", "b0"}));
  EXPECT_EQ(provider->submitted[0].worker_init, (std::vector<std::string>{"module load x"}));
  EXPECT_EQ(provider->submitted[0].script_path, "/scratch/blocks/b0.sh");
  EXPECT_EQ(pool->ActiveBlocks(), 2);
}

TEST_F(BlockPoolTest, ScalesUpUnderLoadCountingQueuedJobsAndDownWhenIdle) {
  Make(1, 0, 3, 2, seconds(10));
  pool->Tick(t0, 0, {});
  ASSERT_EQ(pool->ActiveBlocks(), 1);
  // 6 tasks need 3 blocks of 2: two more, at once.
  auto r = pool->Tick(t0 + milliseconds(100), 6, {"b0"});
  EXPECT_EQ(r.submitted.size(), 2u);
  EXPECT_EQ(pool->ActiveBlocks(), 3);
  // The new jobs wait in the scheduler's queue: no more submissions while they do.
  r = pool->Tick(t0 + milliseconds(200), 6, {"b0"});
  EXPECT_TRUE(r.submitted.empty());
  EXPECT_EQ(provider->submitted.size(), 3u);
  RunAll();
  r = pool->Tick(t0 + seconds(2), 6, {"b0", "b1", "b2"});
  EXPECT_EQ(pool->RunningBlocks(), 3);
  // The work is done at t0+5s; 10 s later the blocks are idle long enough and go (min 0).
  pool->Tick(t0 + seconds(5), 0, {"b0", "b1", "b2"});
  r = pool->Tick(t0 + seconds(14), 0, {});
  EXPECT_TRUE(r.released.empty()) << "released before max_idletime";
  r = pool->Tick(t0 + seconds(15), 0, {});
  EXPECT_EQ(r.released.size(), 3u);
  EXPECT_EQ(provider->cancelled.size(), 3u);
  EXPECT_EQ(pool->ActiveBlocks(), 0);
  // The next poll reports them over, as released (their workers are simply gone).
  r = pool->Tick(t0 + seconds(17), 0, {});
  ASSERT_EQ(r.ended.size(), 3u);
  for (const auto& e : r.ended) EXPECT_TRUE(e.released);
  EXPECT_FALSE(pool->Knows("b0"));
}

TEST_F(BlockPoolTest, KeepsMinBlocksHotAndReplacesALostBlock) {
  Make(1, 1, 2, 2, seconds(10));
  pool->Tick(t0, 0, {});
  RunAll();
  auto r = pool->Tick(t0 + seconds(100), 0, {});
  EXPECT_TRUE(r.released.empty()) << "min_blocks must stay however idle";
  // The job is killed (scancel from outside, a lost node): reported not released, and replaced.
  provider->states["100"] = {JobState::kNodeFail, "NODE_FAIL"};
  r = pool->Tick(t0 + seconds(102), 1, {"b0"});
  ASSERT_EQ(r.ended.size(), 1u);
  EXPECT_EQ(r.ended[0].block_id, "b0");
  EXPECT_EQ(r.ended[0].status.state, JobState::kNodeFail);
  EXPECT_FALSE(r.ended[0].released);
  EXPECT_EQ(r.submitted, (std::vector<std::string>{"b1"}));
}

TEST_F(BlockPoolTest, BacksOffAfterTheSchedulerRefusesAndSaysWhy) {
  Make(1, 0, 2, 1, seconds(10));
  provider->refuse = true;
  pool->Tick(t0, 5, {});
  EXPECT_EQ(pool->ActiveBlocks(), 0);
  EXPECT_EQ(pool->SubmitFailures(), 1);
  EXPECT_NE(pool->last_error().find("Invalid partition"), std::string::npos);
  const size_t tries = provider->submitted.size();
  pool->Tick(t0 + milliseconds(500), 5, {});
  EXPECT_EQ(provider->submitted.size(), tries) << "no new submission within the backoff";
  provider->refuse = false;
  pool->Tick(t0 + seconds(60), 5, {});
  EXPECT_EQ(pool->ActiveBlocks(), 2);
  EXPECT_EQ(pool->SubmitFailures(), 0);
}

TEST_F(BlockPoolTest, AJobThatCanNeverStartIsCancelledAndReplacedByPolicy) {
  Make(1, 1, 1, 1, seconds(10));
  pool->Tick(t0, 0, {});
  provider->states["100"] = {JobState::kFailed, "PENDING (PartitionTimeLimit): Slurm will not start it"};
  auto r = pool->Tick(t0 + seconds(1), 0, {});
  ASSERT_EQ(r.ended.size(), 1u);
  EXPECT_EQ(r.ended[0].status.state, JobState::kFailed);
  EXPECT_EQ(provider->cancelled, (std::vector<std::string>{"100"}));
  EXPECT_EQ(r.submitted, (std::vector<std::string>{"b1"})) << "min_blocks 1: a new block takes its place";
}

TEST_F(BlockPoolTest, ShutdownCancelsEveryBlockAndWaitsUntilTheJobsAreOver) {
  Make(2, 0, 2, 1, seconds(10));
  pool->Tick(t0, 0, {});
  int waits = 0;
  auto left = pool->Shutdown(seconds(5), [&](milliseconds) { ++waits; });
  EXPECT_TRUE(left.empty());
  EXPECT_EQ(provider->cancelled.size(), 2u);
  EXPECT_EQ(pool->ActiveBlocks(), 0);
}

}  // namespace
}  // namespace loom::endpoint
