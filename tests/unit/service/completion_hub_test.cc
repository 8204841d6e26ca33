#include "service/completion_hub.h"

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <string>
#include <vector>

#include "common/util.h"

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
std::vector<v1::TaskRecord> Ready(CompletionHub::Subscription& s) { return s.Take(std::chrono::steady_clock::now()); }

// The unclaimed records Claim hands over, aligned with `ids`.
std::vector<std::optional<v1::TaskRecord>> Take(CompletionHub& hub, const std::vector<std::string>& ids) {
  std::vector<std::optional<v1::TaskRecord>> out;
  for (auto& k : hub.Claim(ids)) out.push_back(std::move(k.record));
  return out;
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

// Ids of the service's form are kept by their bits for the first stream watching them and by
// string for the others; every stream still gets each of its records, in publication order.
TEST(CompletionHubTest, StreamsWatchingTheServicesIdsGetTheirRecordsInPublicationOrder) {
  CompletionHub hub;
  const std::string x = NewId(), y = NewId(), z = NewId(), w = NewId();
  auto a = hub.Subscribe({x, y, z});
  auto b = hub.Subscribe({y});
  auto c = hub.Subscribe({"t1", z});
  hub.Publish({Record(x, "x"), Record(y, "y"), Record("t1", "t1"), Record(z, "z"), Record(w, "nobody's")});
  auto ids = [](const std::vector<v1::TaskRecord>& got) {
    std::vector<std::string> out;
    for (const auto& r : got) out.push_back(r.id() + "=" + r.result().string_value());
    return out;
  };
  EXPECT_EQ(ids(Ready(*a)), (std::vector<std::string>{x + "=x", y + "=y", z + "=z"}));
  EXPECT_EQ(ids(Ready(*b)), (std::vector<std::string>{y + "=y"}));
  EXPECT_EQ(ids(Ready(*c)), (std::vector<std::string>{"t1=t1", z + "=z"}));
  // The first watcher gone, the others still get theirs; nobody's record waits to be claimed.
  hub.Unsubscribe(a);
  hub.Publish({Record(z, "z again"), Record(y, "y again"), Record(x, "x again")});
  EXPECT_EQ(ids(Ready(*b)), (std::vector<std::string>{y + "=y again"}));
  EXPECT_EQ(ids(Ready(*c)), (std::vector<std::string>{z + "=z again"}));
  EXPECT_TRUE(Ready(*a).empty());
  auto kept = Take(hub, {w, x});
  ASSERT_TRUE(kept[0].has_value());
  EXPECT_EQ(kept[0]->result().string_value(), "nobody's");
  ASSERT_TRUE(kept[1].has_value());
  EXPECT_EQ(kept[1]->result().string_value(), "x again");
  hub.Unsubscribe(b);
  hub.Unsubscribe(c);
  hub.Publish({Record(y, "late")});
  EXPECT_TRUE(Ready(*b).empty());
  auto late = Take(hub, {y});
  ASSERT_TRUE(late[0].has_value());
  EXPECT_EQ(late[0]->result().string_value(), "late");
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

TEST(CompletionHubTest, KeepsWhatNobodyWatchedForOneLateTaker) {
  CompletionHub hub;
  auto a = hub.Subscribe({"t1"});
  hub.Publish({Record("t1", "watched"), Record("t2", "late")});
  EXPECT_EQ(hub.unclaimed_count(), 1u);  // t1 went to its watcher
  auto got = Take(hub, {"t1", "t2", "t3"});
  ASSERT_EQ(got.size(), 3u);
  EXPECT_FALSE(got[0].has_value());
  ASSERT_TRUE(got[1].has_value());
  EXPECT_EQ(got[1]->result().string_value(), "late");
  EXPECT_FALSE(got[2].has_value());
  EXPECT_FALSE(Take(hub, {"t2"})[0].has_value());  // taken once
  EXPECT_EQ(hub.unclaimed_bytes(), 0);
  hub.Unsubscribe(a);
}

TEST(CompletionHubTest, UnclaimedRecordsStayWithinTheirBytes) {
  const int64_t one = static_cast<int64_t>(Record("t0", std::string(1000, 'x')).ByteSizeLong());
  CompletionHub hub(HubOptions{3 * one + 3 * 200, std::chrono::milliseconds(60000)});
  for (int i = 0; i < 10; ++i) hub.Publish({Record("t" + std::to_string(i), std::string(1000, 'x'))});
  // The newest three stay, the oldest went first.
  EXPECT_EQ(hub.unclaimed_count(), 3u);
  EXPECT_LE(hub.unclaimed_bytes(), 3 * one + 3 * 200);
  auto got = Take(hub, {"t6", "t7", "t8", "t9"});
  EXPECT_FALSE(got[0].has_value());
  EXPECT_TRUE(got[1] && got[2] && got[3]);
  // A record larger than the whole allowance is not kept at all.
  hub.Publish({Record("big", std::string(10 * one, 'y'))});
  EXPECT_EQ(hub.unclaimed_count(), 0u);
}

TEST(CompletionHubTest, UnclaimedRecordsAgeOutAndCanBeForgotten) {
  CompletionHub stale(HubOptions{1 << 20, std::chrono::milliseconds(0)});
  stale.Publish({Record("t1", "one")});
  EXPECT_FALSE(Take(stale, {"t1"})[0].has_value());  // older than 0 ms at once
  EXPECT_EQ(stale.unclaimed_count(), 0u);

  CompletionHub hub;
  hub.Publish({Record("t1", "one"), Record("t2", "two")});
  hub.Forget({"t1", "t9"});
  auto got = Take(hub, {"t1", "t2"});
  EXPECT_FALSE(got[0].has_value());
  EXPECT_TRUE(got[1].has_value());

  CompletionHub none(HubOptions{0, std::chrono::milliseconds(60000)});
  none.Publish({Record("t1", "one")});
  EXPECT_EQ(none.unclaimed_count(), 0u);
}

// Publishing the same task again (a repeated publication) keeps one record, the latest.
TEST(CompletionHubTest, ARepublishedRecordReplacesTheKeptOne) {
  CompletionHub hub;
  hub.Publish({Record("t1", "first")});
  hub.Publish({Record("t1", "second")});
  EXPECT_EQ(hub.unclaimed_count(), 1u);
  EXPECT_EQ(Take(hub, {"t1"})[0]->result().string_value(), "second");
  EXPECT_EQ(hub.unclaimed_bytes(), 0);
}

// Ids of the form the service gives tasks (NewId: 32 hex digits), which is what the hub remembers.
std::string TaskId(int n) {
  std::string id = NewId();
  id[31] = "0123456789abcdef"[n % 16];
  return id;
}

TEST(CompletionHubTest, ExpectedTasksAreKnownByOwnerUntilPublished) {
  CompletionHub hub;
  const std::string t1 = TaskId(1), t2 = TaskId(2), t3 = TaskId(3);
  hub.Expect({t1, t2, t3}, "alice");
  hub.Unexpect({t3});
  auto k = hub.Claim({t1, t2, t3});
  EXPECT_EQ(k[0].owner, "alice");
  EXPECT_EQ(k[1].owner, "alice");
  EXPECT_FALSE(k[2].owner || k[2].record);
  hub.Publish({Record(t1, "one")});  // nobody watches: from expected to unclaimed
  k = hub.Claim({t1, t2});
  EXPECT_FALSE(k[0].owner);
  ASSERT_TRUE(k[0].record);
  EXPECT_EQ(k[0].record->result().string_value(), "one");
  EXPECT_EQ(k[1].owner, "alice");  // still unfinished: claiming does not forget it
  EXPECT_EQ(hub.expected_count(), 1u);
}

TEST(CompletionHubTest, ExpectedTasksBeyondTheLimitAreNotRemembered) {
  CompletionHub hub(HubOptions{1 << 20, std::chrono::milliseconds(60000), 2});
  const std::string t1 = TaskId(1), t2 = TaskId(2), t3 = TaskId(3), t4 = TaskId(4);
  hub.Expect({t1, t2}, "alice");
  hub.Expect({t3}, "bob");
  EXPECT_EQ(hub.expected_count(), 2u);
  auto k = hub.Claim({t1, t2, t3});
  EXPECT_EQ(k[0].owner, "alice");
  EXPECT_EQ(k[1].owner, "alice");
  EXPECT_FALSE(k[2].owner || k[2].record);  // full: asked of the store
  // A finished task makes room.
  hub.Publish({Record(t1, "one")});
  hub.Expect({t4}, "bob");
  EXPECT_EQ(hub.Claim({t4})[0].owner, "bob");
  CompletionHub none(HubOptions{1 << 20, std::chrono::milliseconds(60000), 0});
  none.Expect({t1}, "alice");
  EXPECT_EQ(none.expected_count(), 0u);
}

// The hub keeps expected tasks by the 128 bits of their ids: an id of another form (not 32
// lower-case hex digits) is not remembered, and a wait for it asks the store; ids that differ
// only in case are different tasks.
TEST(CompletionHubTest, OnlyIdsOfTheServicesFormAreRememberedAndExactly) {
  CompletionHub hub;
  std::string upper = TaskId(10);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string lower = TaskId(11);
  std::string lower_as_upper = lower;
  for (auto& c : lower_as_upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  hub.Expect({"t1", "", upper, lower, lower + "0", lower.substr(1)}, "alice");
  EXPECT_EQ(hub.expected_count(), 1u);
  auto k = hub.Claim({"t1", upper, lower, lower_as_upper, lower.substr(1)});
  EXPECT_FALSE(k[0].owner);
  EXPECT_FALSE(k[1].owner);
  EXPECT_EQ(k[2].owner, "alice");
  EXPECT_FALSE(k[3].owner);
  EXPECT_FALSE(k[4].owner);
  // Owners are kept apart per task.
  const std::string b = TaskId(12);
  hub.Expect({b}, "bob");
  k = hub.Claim({lower, b});
  EXPECT_EQ(k[0].owner, "alice");
  EXPECT_EQ(k[1].owner, "bob");
}

}  // namespace
}  // namespace loom::service
