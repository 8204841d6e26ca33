// TaskPacer: which kernels the endpoint packs several tasks of into one worker's message.
#include "endpoint/task_pacer.h"

#include <gtest/gtest.h>

namespace loom::endpoint {
namespace {

using std::chrono::microseconds;

TEST(TaskPacerTest, AKernelIsShortOnlyAfterEnoughFastRuns) {
  TaskPacer p(microseconds(50));
  EXPECT_FALSE(p.IsShort("noop@1"));  // never seen: spread
  for (int i = 1; i < TaskPacer::kMinSamples; ++i) {
    p.Observe("noop@1", 4'000);
    EXPECT_FALSE(p.IsShort("noop@1")) << i << " sample(s)";
  }
  p.Observe("noop@1", 4'000);
  EXPECT_TRUE(p.IsShort("noop@1"));
  EXPECT_FALSE(p.IsShort("other@1"));  // per kernel
}

TEST(TaskPacerTest, ASlowRunMakesAKernelLongUntilTheAverageComesBackDown) {
  TaskPacer p(microseconds(50));
  for (int i = 0; i < 5; ++i) p.Observe("k@1", 10'000);
  ASSERT_TRUE(p.IsShort("k@1"));
  p.Observe("k@1", 2'000'000);  // one 2 ms run: the average jumps past 50 us
  EXPECT_FALSE(p.IsShort("k@1"));
  EXPECT_NEAR(p.AverageNanos("k@1"), 0.8 * 10'000 + 0.2 * 2'000'000, 1);
  int fast = 0;
  while (!p.IsShort("k@1") && fast < 100) {
    p.Observe("k@1", 10'000);
    ++fast;
  }
  // 398 us over the 10 us pace, decaying by 0.8 a run: under 50 us in all after eleven.
  EXPECT_EQ(fast, 11);
}

TEST(TaskPacerTest, KernelsAtOrOverTheThresholdAreNotShort) {
  TaskPacer p(microseconds(50));
  for (int i = 0; i < 5; ++i) p.Observe("slow@1", 50'000);
  EXPECT_FALSE(p.IsShort("slow@1"));
  for (int i = 0; i < 5; ++i) p.Observe("fast@1", 49'000);
  EXPECT_TRUE(p.IsShort("fast@1"));
}

TEST(TaskPacerTest, ZeroThresholdNeverPacksAndClockStepsAreIgnored) {
  TaskPacer off(microseconds(0));
  for (int i = 0; i < 5; ++i) off.Observe("k@1", 1);
  EXPECT_FALSE(off.IsShort("k@1"));
  TaskPacer p(microseconds(50));
  for (int i = 0; i < 5; ++i) p.Observe("k@1", -1'000'000'000);  // the wall clock stepped back
  EXPECT_FALSE(p.IsShort("k@1"));
  EXPECT_EQ(p.AverageNanos("k@1"), 0);
}

}  // namespace
}  // namespace loom::endpoint
