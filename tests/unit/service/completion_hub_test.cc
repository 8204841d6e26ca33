#include "service/completion_hub.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace loom::service {
namespace {

v1::TaskRecord Record(const std::string& id, const std::string& result) {
  v1::TaskRecord r;
  r.set_id(id);
  r.set_state(v1::TASK_STATE_SUCCESS);
  r.mutable_result()->set_string_value(result);
  auto* t = r.add_timestamps();
  t->set_stage("success");
  t->set_unix_nanos(42);
  return r;
}

// Takes what is ready now (every Publish below happens before the Take).
std::vector<v1::TaskRecord> Ready(CompletionHub::Subscription& s) {
  return s.Take(std::chrono::steady_clock::now());
}

TEST(CompletionHubTest, EachWatcherOfAnIdGetsTheWholeRecord) {
  CompletionHub hub;
  auto a = hub.Subscribe({"t1", "t2"});
  auto b = hub.Subscribe({"t1"});
  auto c = hub.Subscribe({"t1", "t3"});
  hub.Publish({Record("t1", "one"), Record("t2", "two"), Record("t9", "nobody's")});
  auto got_a = Ready(*a), got_b = Ready(*b), got_c = Ready(*c);
  ASSERT_EQ(got_a.size(), 2u);
  EXPECT_EQ(got_a[0].id(), "t1");
  EXPECT_EQ(got_a[1].id(), "t2");
  EXPECT_EQ(got_a[1].result().string_value(), "two");
  ASSERT_EQ(got_b.size(), 1u);
  ASSERT_EQ(got_c.size(), 1u);
  // The record moved to the last watcher and the copies given to the others are the same.
  for (const auto* r : {&got_a[0], &got_b[0], &got_c[0]}) {
    EXPECT_EQ(r->id(), "t1");
    EXPECT_EQ(r->result().string_value(), "one");
    ASSERT_EQ(r->timestamps_size(), 1);
    EXPECT_EQ(r->timestamps(0).stage(), "success");
  }
  hub.Unsubscribe(a);
  hub.Unsubscribe(b);
  hub.Unsubscribe(c);
}

TEST(CompletionHubTest, AnUnsubscribedStreamGetsNothingMore) {
  CompletionHub hub;
  auto a = hub.Subscribe({"t1"});
  auto b = hub.Subscribe({"t1"});
  hub.Unsubscribe(b);
  hub.Publish({Record("t1", "one")});
  EXPECT_EQ(Ready(*a).size(), 1u);
  EXPECT_TRUE(Ready(*b).empty());
  hub.Unsubscribe(a);
}

TEST(CompletionHubTest, TheObserverSeesEveryPublishedRecord) {
  CompletionHub hub;
  std::vector<std::string> seen;
  hub.SetObserver([&](const std::vector<v1::TaskRecord>& records) {
    for (const auto& r : records) seen.push_back(r.id() + "=" + r.result().string_value());
  });
  auto a = hub.Subscribe({"t1"});
  hub.Publish({Record("t1", "one"), Record("t2", "two")});
  EXPECT_EQ(seen, (std::vector<std::string>{"t1=one", "t2=two"}));
  EXPECT_EQ(Ready(*a).at(0).result().string_value(), "one");
  hub.Unsubscribe(a);
}

}  // namespace
}  // namespace loom::service
