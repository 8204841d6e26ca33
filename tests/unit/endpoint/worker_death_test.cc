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

}  // namespace
}  // namespace loom::endpoint
