#include "endpoint/credit_window.h"

#include <gtest/gtest.h>

namespace loom::endpoint {
namespace {

constexpr int64_t kMiB = 1 << 20;

TEST(CreditWindowTest, AFreshEndpointAsksForFewTasksUntilItHasSeenTheirSize) {
  CreditWindow w(256 * kMiB, 10 * kMiB);  // the bound, and the largest task the endpoint accepts
  EXPECT_EQ(w.task_bytes(), 10 * kMiB);
  EXPECT_EQ(w.Limit(1056), 25);
  EXPECT_EQ(w.Room(1056, 0, 0), 25);
  // Small tasks halve the estimate at each batch, down to their size.
  int batches = 0;
  while (w.task_bytes() > 300) {
    w.Received(300);
    ++batches;
  }
  EXPECT_EQ(batches, 16);  // 10 MiB / 2^15 = 320 bytes, then 300
  EXPECT_EQ(w.task_bytes(), 300);
  EXPECT_EQ(w.Limit(1056), 1056);  // the count binds again
  EXPECT_EQ(w.Room(1056, 0, 0), 1056);
}

TEST(CreditWindowTest, ALargeTaskRaisesTheEstimateAtOnce) {
  CreditWindow w(100 * kMiB, 1000);
  w.Received(1000);
  EXPECT_EQ(w.Room(500, 0, 0), 500);
  w.Received(4 * kMiB);
  EXPECT_EQ(w.task_bytes(), 4 * kMiB);
  EXPECT_EQ(w.Limit(500), 25);
  // What is held and what was asked for count against the bytes left: 100 MiB - 40 MiB held
  // leaves room for 15 tasks of 4 MiB, 5 of which are already asked for.
  EXPECT_EQ(w.Room(500, 40 * kMiB, 5), 10);
  EXPECT_EQ(w.Room(3, 40 * kMiB, 5), 3);  // the count still binds when it is the smaller
  EXPECT_LE(w.Room(500, 100 * kMiB, 0), 0);
}

TEST(CreditWindowTest, ATaskLargerThanTheBoundStillRunsAlone) {
  CreditWindow w(1 * kMiB, 1000);
  w.Received(8 * kMiB);
  EXPECT_EQ(w.Limit(100), 1);
  EXPECT_EQ(w.Room(100, 0, 0), 1);         // nothing held or asked for: one
  EXPECT_LE(w.Room(100, 8 * kMiB, 0), 0);  // while it is held: none
  EXPECT_LE(w.Room(100, 0, 1), 0);         // while it is asked for: none
}

TEST(CreditWindowTest, NoBoundByBytesWhenZero) {
  CreditWindow w(0, 10 * kMiB);
  w.Received(50 * kMiB);
  EXPECT_EQ(w.Limit(1056), 1056);
  EXPECT_EQ(w.Room(700, 1 << 30, 300), 700);
}

}  // namespace
}  // namespace loom::endpoint
