// Unit tests for endpoint/worker_death.h: which task a dead worker is charged with.
#include "endpoint/worker_death.h"

#include <gtest/gtest.h>

namespace loom::endpoint {
namespace {

using Reading = RunningSlot::Reading;

Reading Running(const std::string& id) { return Reading{Reading::State::kRunning, id, 7}; }

const std::deque<std::string> kAssigned = {"done", "crashed", "waiting"};

TEST(RunningTaskIndexTest, TheTaskTheSlotNamesIsChargedNotTheHead) {
  EXPECT_EQ(RunningTaskIndex(kAssigned, Running("crashed")), 1u);
  EXPECT_EQ(RunningTaskIndex(kAssigned, Running("done")), 0u);
  EXPECT_EQ(RunningTaskIndex(kAssigned, Running("waiting")), 2u);
}

TEST(RunningTaskIndexTest, AWorkerThatDiedBetweenTasksChargesNone) {
  EXPECT_EQ(RunningTaskIndex(kAssigned, Reading{}), std::nullopt);
}

TEST(RunningTaskIndexTest, ATaskItDoesNotHoldChargesNone) {
  EXPECT_EQ(RunningTaskIndex(kAssigned, Running("answered-already")), std::nullopt);
}

TEST(RunningTaskIndexTest, WithoutASlotOrWithAnIdTooLongTheHeadIsCharged) {
  EXPECT_EQ(RunningTaskIndex(kAssigned, std::nullopt), 0u);
  EXPECT_EQ(RunningTaskIndex(kAssigned, Reading{Reading::State::kUnknown, "", 3}), 0u);
}

TEST(RunningTaskIndexTest, AWorkerHoldingNothingChargesNone) {
  EXPECT_EQ(RunningTaskIndex({}, std::nullopt), std::nullopt);
  EXPECT_EQ(RunningTaskIndex({}, Running("x")), std::nullopt);
}

TEST(UnchargedDeathsTest, ATaskHeadingTheQueueAtTheLimitIsChargedOnce) {
  UnchargedDeaths deaths(2);
  EXPECT_FALSE(deaths.Record("a"));
  EXPECT_FALSE(deaths.Record("b"));
  EXPECT_TRUE(deaths.Record("a"));   // its second death at the head
  EXPECT_FALSE(deaths.Record("a"));  // charged: counting starts again
  EXPECT_TRUE(deaths.Record("a"));
  EXPECT_TRUE(deaths.Record("b"));
  EXPECT_EQ(deaths.size(), 0u);
}

TEST(UnchargedDeathsTest, ALimitOfOneChargesTheFirstDeath) {
  UnchargedDeaths deaths(1);
  EXPECT_TRUE(deaths.Record("a"));
  EXPECT_EQ(deaths.size(), 0u);
}

TEST(UnchargedDeathsTest, MemoryIsBoundedByForgettingTheOldest) {
  UnchargedDeaths deaths(2, /*capacity=*/3);
  for (const char* t : {"a", "b", "c", "d"}) EXPECT_FALSE(deaths.Record(t));
  EXPECT_EQ(deaths.size(), 3u);
  EXPECT_FALSE(deaths.Record("a"));  // forgotten: this is its first death again
  EXPECT_TRUE(deaths.Record("d"));   // still remembered
}

}  // namespace
}  // namespace loom::endpoint
