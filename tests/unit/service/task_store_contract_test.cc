// One contract suite for every TaskStore: the in-memory fake and the real Redis store must
// behave the same, so tests written against the fake mean something.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <memory>

#include "common/local_fabric.h"
#include "common/task_state.h"
#include "common/value.h"
#include "service/memory_task_store.h"
#include "service/redis_task_store.h"
#include "tests/support/test_env.h"

namespace loom::service {
namespace {

// One redis-server for the whole suite; each test starts from an empty database.
class RedisEnv {
 public:
  static RedisEnv& Get() {
    static RedisEnv env;
    return env;
  }
  int port() const { return fabric_->redis_port(); }

 private:
  RedisEnv() {
    fabric_ = loom::testing::MakeFabric("store-contract");
    Status s = fabric_->StartRedis();
    if (!s.ok()) {
      // A missing redis-server is a failure, never a skip.
      ADD_FAILURE() << s.ToString();
      std::abort();
    }
  }
  std::unique_ptr<LocalFabric> fabric_;
};

using Factory = std::function<std::unique_ptr<TaskStore>()>;

// Every store in these tests gives up on a task after 3 worker deaths.
std::unique_ptr<TaskStore> MakeMemory() { return std::make_unique<InMemoryTaskStore>(StoreOptions{60, 3}); }

RedisOptions TestRedis() {
  RedisOptions o;
  o.port = RedisEnv::Get().port();
  return o;
}

std::unique_ptr<TaskStore> MakeRedis() {
  auto conn = RedisConnection::Connect(TestRedis());
  EXPECT_TRUE(conn.ok());
  EXPECT_TRUE((*conn)->Command({"FLUSHALL"}).ok());
  return std::make_unique<RedisTaskStore>(TestRedis(), StoreOptions{60, 3});
}

class TaskStoreContract : public ::testing::TestWithParam<std::pair<const char*, Factory>> {
 protected:
  void SetUp() override {
    store_ = GetParam().second();
    // Leases and direct dispatch happen only under an endpoint's latest session: these endpoints'
    // sessions have registered until their epoch is kEpoch.
    for (const char* ep : {"ep1", "ep2", "ep3", "ep4", "other", "even", "odd"}) {
      for (int64_t e = 0; e < kEpoch; ++e) ASSERT_TRUE(store_->RegisterSession(ep, {}, "setup", 1).ok());
    }
  }

  NewTask Task(const std::string& id, const std::string& ep, int64_t arg = 1, int max_attempts = 3) {
    NewTask t;
    t.max_attempts = max_attempts;
    t.id = id;
    t.owner = "alice";
    t.function = "f";
    t.endpoint = ep;
    t.received_ns = 100;
    t.spec.set_task_id(id);
    t.spec.set_function("f");
    t.spec.set_kernel("echo@1");
    *t.spec.add_args() = IntValue(arg);
    return t;
  }

  void Submit(const std::vector<std::string>& ids, const std::string& ep = "ep1") {
    std::vector<NewTask> tasks;
    for (const auto& id : ids) tasks.push_back(Task(id, ep));
    ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  }

  // Leases and completes as the endpoint session with kEpoch, unless told otherwise.
  static constexpr int64_t kEpoch = 7;
  Result<std::vector<v1::TaskSpec>> Lease(const std::string& ep, int max, int64_t now, int64_t epoch = kEpoch) {
    return store_->LeaseTasks(ep, epoch, max, now);
  }
  Result<CompleteOutcome> Complete(const std::string& ep, const std::vector<v1::TaskResult>& results, int64_t now,
                                   int64_t epoch = kEpoch) {
    return store_->CompleteTasks(ep, epoch, results, now);
  }
  static std::vector<std::string> FinishedIds(const CompleteOutcome& o) {
    std::vector<std::string> out;
    for (const auto& r : o.finished) out.push_back(r.id());
    return out;
  }
  void Running(const std::string& id) {
    v1::TaskStarted st;
    st.set_task_id(id);
    st.set_unix_nanos(350);
    ASSERT_TRUE(store_->MarkRunning({st}).ok());
  }

  v1::TaskRecord Get(const std::string& id, bool args = false) {
    auto r = store_->GetTasks({id}, args);
    EXPECT_TRUE(r.ok());
    EXPECT_TRUE((*r)[0].has_value()) << id;
    return (*r)[0].value_or(v1::TaskRecord());
  }

  static v1::TaskResult Ok(const std::string& id, int64_t v) {
    v1::TaskResult r;
    r.set_task_id(id);
    r.set_ok(true);
    *r.mutable_value() = IntValue(v);
    auto* t = r.add_timestamps();
    t->set_stage("worker_started");
    t->set_unix_nanos(400);
    return r;
  }
  static v1::TaskResult Err(const std::string& id, const std::string& msg,
                            v1::FailureKind kind = v1::FAILURE_KIND_UNSPECIFIED) {
    v1::TaskResult r;
    r.set_task_id(id);
    r.set_ok(false);
    r.set_error(msg);
    r.set_failure(kind);
    return r;
  }
  static v1::TaskResult Lost(const std::string& id) {
    return Err(id, "the worker process died while running this task (signal 9)", v1::FAILURE_KIND_WORKER_LOST);
  }
  static std::vector<std::string> Ids(const std::vector<v1::TaskSpec>& specs) {
    std::vector<std::string> out;
    for (const auto& s : specs) out.push_back(s.task_id());
    return out;
  }
  static std::vector<std::string> Stages(const v1::TaskRecord& r) {
    std::vector<std::string> out;
    for (const auto& t : r.timestamps()) out.push_back(t.stage());
    return out;
  }

  std::unique_ptr<TaskStore> store_;
};

TEST_P(TaskStoreContract, RegistersFunctionsOnceAndRejectsConflictingRedefinition) {
  v1::Function f;
  f.set_name("double");
  f.set_kernel("add@1");
  f.set_owner("alice");
  f.set_created_unix_nanos(1);
  (*f.mutable_config())["k"] = IntValue(2);
  auto created = store_->PutFunction(f);
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(*created);
  f.set_created_unix_nanos(2);  // the same registration again, later
  auto again = store_->PutFunction(f);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  f.set_kernel("echo@1");
  auto conflict = store_->PutFunction(f);
  EXPECT_EQ(conflict.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(conflict.status().message().find("add@1"), std::string::npos);

  auto got = store_->GetFunction("alice/double");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->kernel(), "add@1");
  EXPECT_EQ((*got)->config().at("k").int_value(), 2);
  auto missing = store_->GetFunction("alice/nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  // Each owner has a namespace of their own: bob's "double" is another function.
  EXPECT_FALSE(store_->GetFunction("bob/double")->has_value());
  v1::Function bobs = f;
  bobs.set_owner("bob");
  bobs.set_kernel("echo@1");
  auto bob_created = store_->PutFunction(bobs);
  ASSERT_TRUE(bob_created.ok()) << bob_created.status().ToString();
  EXPECT_TRUE(*bob_created);
  EXPECT_EQ((*store_->GetFunction("alice/double"))->kernel(), "add@1");
  EXPECT_EQ((*store_->GetFunction("bob/double"))->kernel(), "echo@1");

  v1::Function g = f;
  g.set_name("another");
  ASSERT_TRUE(store_->PutFunction(g).ok());
  auto list = store_->ListFunctions();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].name(), "another");
  EXPECT_EQ((*list)[1].name(), "double");
}

TEST_P(TaskStoreContract, StoresAndListsEndpoints) {
  v1::EndpointRecord e;
  e.set_id("gpu-box");
  e.set_status(v1::ENDPOINT_STATUS_ONLINE);
  e.set_worker_count(4);
  ASSERT_TRUE(store_->PutEndpoint(e).ok());
  e.set_worker_count(8);
  ASSERT_TRUE(store_->PutEndpoint(e).ok());
  auto got = store_->GetEndpoint("gpu-box");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->worker_count(), 8);
  auto list = store_->ListEndpoints();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1u);
  auto missing = store_->GetEndpoint("other");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST_P(TaskStoreContract, SubmittedTasksWaitInTheirEndpointsQueueWithTimestamps) {
  Submit({"t1", "t2"}, "ep1");
  Submit({"u1"}, "ep2");
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  EXPECT_EQ(*store_->QueueDepth("ep2"), 1);
  auto r = Get("t1", /*args=*/true);
  EXPECT_EQ(r.state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(r.owner(), "alice");
  EXPECT_EQ(r.function(), "f");
  EXPECT_EQ(r.endpoint(), "ep1");
  ASSERT_EQ(r.args_size(), 1);
  EXPECT_EQ(r.args(0).int_value(), 1);
  EXPECT_EQ(Stages(r), (std::vector<std::string>{"received", "waiting-for-endpoint"}));
  EXPECT_EQ(r.timestamps(0).unix_nanos(), 100);
  EXPECT_EQ(r.timestamps(1).unix_nanos(), 200);
  EXPECT_EQ(Get("t1", false).args_size(), 0);
  auto unknown = store_->GetTasks({"t2", "zzz"}, false);
  ASSERT_TRUE(unknown.ok());
  EXPECT_TRUE((*unknown)[0].has_value());
  EXPECT_FALSE((*unknown)[1].has_value());
}

TEST_P(TaskStoreContract, BriefsGiveEachTasksStateAndOwnerAndNothingForUnknownIds) {
  Submit({"t1", "t2"}, "ep1");
  ASSERT_EQ(Ids(*Lease("ep1", 1, 300)), (std::vector<std::string>{"t1"}));
  ASSERT_TRUE(Complete("ep1", {Ok("t1", 5)}, 500).ok());
  auto briefs = store_->GetTaskBriefs({"t1", "zzz", "t2"});
  ASSERT_TRUE(briefs.ok()) << briefs.status().ToString();
  ASSERT_EQ(briefs->size(), 3u);
  ASSERT_TRUE((*briefs)[0].has_value());
  EXPECT_EQ((*briefs)[0]->state, v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*briefs)[0]->owner, "alice");
  EXPECT_FALSE((*briefs)[1].has_value());
  ASSERT_TRUE((*briefs)[2].has_value());
  EXPECT_EQ((*briefs)[2]->state, v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ((*briefs)[2]->owner, "alice");
  EXPECT_TRUE(store_->GetTaskBriefs({})->empty());
}

TEST_P(TaskStoreContract, DirectTasksAreDispatchedOnlyWhenNothingIsQueuedAheadOfThem) {
  std::vector<NewTask> tasks = {Task("d1", "ep1"), Task("d2", "ep1"), Task("q1", "ep1"), Task("d3", "ep1"),
                                Task("o1", "ep2")};
  tasks[0].direct = tasks[1].direct = tasks[3].direct = tasks[4].direct = true;
  for (auto& t : tasks) t.lease_epoch = kEpoch;
  SubmitOutcome out;
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200, &out).ok());
  // d3 is direct but q1 is queued ahead of it, so it queues too.
  EXPECT_EQ(out.dispatched, (std::vector<bool>{true, true, false, false, true}));
  EXPECT_EQ(Get("d1").attempts(), 1);
  EXPECT_EQ(Get("q1").attempts(), 0);
  EXPECT_EQ(Get("d1").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(Stages(Get("d1")), (std::vector<std::string>{"received", "waiting-for-endpoint", "dispatched"}));
  EXPECT_EQ(Get("q1").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 2);
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  EXPECT_EQ(*store_->InFlightCount("ep2"), 1);
  // Direct tasks are in flight like leased ones: completed, or requeued ahead of the queue.
  EXPECT_EQ(Complete("ep1", {Ok("d1", 1)}, 300)->finished.size(), 1u);
  EXPECT_EQ(store_->ReleaseSession("ep1", kEpoch, "gone", 400)->requeued, 1);
  EXPECT_EQ(Ids(*Lease("ep1", 10, 500)), (std::vector<std::string>{"d2", "q1", "d3"}));
  // A leased task's record shows it dispatched, its attempt counted, as a direct one's does.
  EXPECT_EQ(Get("q1").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(Get("q1").attempts(), 1);
  // Later direct submits see an empty queue again, under the endpoint's latest session only:
  // credit of a session that was replaced (an older epoch) queues the task.
  std::vector<NewTask> later = {Task("d4", "ep1"), Task("d5", "ep2")};
  later[0].direct = later[1].direct = true;
  later[0].lease_epoch = kEpoch;
  later[1].lease_epoch = kEpoch - 1;
  ASSERT_TRUE(store_->SubmitTasks(later, 600, &out).ok());
  EXPECT_EQ(out.dispatched, (std::vector<bool>{true, false}));
  EXPECT_EQ(Get("d5").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(*store_->QueueDepth("ep2"), 1);
}

TEST_P(TaskStoreContract, RefusesABatchThatWouldOverfillAQueueWhole) {
  Submit({"a", "b", "c"}, "ep1");
  std::vector<NewTask> batch = {Task("x", "ep2"), Task("d", "ep1"), Task("e", "ep1")};
  Status s = store_->SubmitTasks(batch, 300, nullptr, /*max_queue_depth=*/4);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("endpoint 'ep1' has 3 task(s) queued"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("max_queue_depth"), std::string::npos);
  // Nothing of the batch was written, not even the task for the other endpoint.
  EXPECT_EQ(*store_->QueueDepth("ep1"), 3);
  EXPECT_EQ(*store_->QueueDepth("ep2"), 0);
  auto x = store_->GetTasks({"x"}, false);
  EXPECT_FALSE((*x)[0].has_value());
  // Up to the limit is fine.
  std::vector<NewTask> one = {Task("d", "ep1")};
  EXPECT_TRUE(store_->SubmitTasks(one, 300, nullptr, 4).ok());
  EXPECT_EQ(*store_->QueueDepth("ep1"), 4);
}

TEST_P(TaskStoreContract, LeasesInQueueOrderUpToTheLimit) {
  Submit({"a", "b", "c", "d", "e"});
  auto first = Lease("ep1", 3, 300);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(Ids(*first), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ((*first)[0].kernel(), "echo@1");
  EXPECT_EQ((*first)[0].args(0).int_value(), 1);
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 3);
  auto rest = Lease("ep1", 10, 300);
  EXPECT_EQ(Ids(*rest), (std::vector<std::string>{"d", "e"}));
  auto none = Lease("ep1", 10, 300);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_TRUE(Lease("never-seen", 10, 300)->empty());
}

TEST_P(TaskStoreContract, MarksDispatchedTasksRunningOnly) {
  Submit({"a", "b"});
  ASSERT_TRUE(Lease("ep1", 1, 300).ok());
  v1::TaskStarted sa, sb;
  sa.set_task_id("a");
  sa.set_unix_nanos(350);
  sb.set_task_id("b");  // still waiting: not running
  sb.set_unix_nanos(350);
  ASSERT_TRUE(store_->MarkRunning({sa, sb}).ok());
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_RUNNING);
  EXPECT_EQ(Get("b").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(Stages(Get("a")).back(), "running");
}

TEST_P(TaskStoreContract, CommitsEachResultOnceWithValueErrorAndTimestamps) {
  Submit({"a", "b"});
  ASSERT_TRUE(Lease("ep1", 2, 300).ok());
  auto ok = Ok("a", 42);
  ok.set_leased_unix_nanos(300);  // the lease's time, which the endpoint returns with the result
  auto out = Complete("ep1", {ok, Err("b", "boom")}, 500);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const auto& done = out->finished;
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].id(), "a");
  EXPECT_EQ(done[0].state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(done[0].result().int_value(), 42);
  EXPECT_EQ(done[0].attempts(), 1);
  EXPECT_EQ(done[1].state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(done[1].error(), "boom");
  EXPECT_EQ(done[1].failure(), v1::FAILURE_KIND_KERNEL_ERROR);
  auto a = Get("a");
  EXPECT_EQ(a.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(a.result().int_value(), 42);
  // A lease writes no stamp: the result brings the "dispatched" one, ahead of its own.
  EXPECT_EQ(Stages(a),
            (std::vector<std::string>{"received", "waiting-for-endpoint", "dispatched", "worker_started", "success"}));
  EXPECT_EQ(a.timestamps(2).unix_nanos(), 300);
  EXPECT_EQ(Stages(done[0]), Stages(a));
  EXPECT_EQ(Stages(Get("b")), (std::vector<std::string>{"received", "waiting-for-endpoint", "failed"}));
  EXPECT_EQ(Get("b").error(), "boom");
  EXPECT_EQ(*store_->InFlightCount("ep1"), 0);
  // A second result for the same task changes nothing.
  auto again = Complete("ep1", {Ok("a", 7), Ok("b", 7)}, 600);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->finished.empty());
  EXPECT_EQ(again->rejected, 2);
  EXPECT_EQ(Get("a").result().int_value(), 42);
  EXPECT_EQ(Get("b").state(), v1::TASK_STATE_FAILED);
}

TEST_P(TaskStoreContract, CompletesTheResultsOfSeveralSessionsInOneCallEachAsAlone) {
  Submit({"a1", "a2"}, "ep1");
  Submit({"b1"}, "ep2");
  Submit({"c1"}, "ep3");
  ASSERT_EQ(Lease("ep1", 10, 300)->size(), 2u);
  ASSERT_EQ(Lease("ep2", 10, 300)->size(), 1u);
  ASSERT_EQ(Lease("ep3", 10, 300)->size(), 1u);
  const std::string ep1 = "ep1", ep2 = "ep2", ep3 = "ep3", ep4 = "ep4";
  const std::vector<v1::TaskResult> r1 = {Ok("a1", 1), Err("a2", "boom")}, r2 = {Ok("b1", 2)}, r3 = {Ok("c1", 3)}, none;
  // ep3's results come from a stale session: refused, as CompleteTasks refuses them.
  auto out = store_->CompleteTasksMany(
      {{&ep1, kEpoch, &r1}, {&ep4, kEpoch, &none}, {&ep2, kEpoch, &r2}, {&ep3, kEpoch - 1, &r3}}, 500);
  ASSERT_EQ(out.size(), 4u);
  for (const auto& o : out) ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(FinishedIds(*out[0]), (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(out[0]->finished[0].result().int_value(), 1);
  EXPECT_EQ(out[0]->finished[1].error(), "boom");
  EXPECT_TRUE(out[1]->finished.empty());
  EXPECT_EQ(FinishedIds(*out[2]), (std::vector<std::string>{"b1"}));
  EXPECT_EQ(out[2]->finished[0].endpoint(), "ep2");
  EXPECT_TRUE(out[3]->finished.empty());
  EXPECT_EQ(out[3]->rejected, 1);
  EXPECT_EQ(Get("b1").state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(Get("c1").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 0);
  EXPECT_EQ(*store_->InFlightCount("ep3"), 1);
}

TEST_P(TaskStoreContract, IgnoresResultsForTasksNotInFlightOnThatEndpoint) {
  Submit({"a"}, "ep1");
  Submit({"w"}, "ep1");
  ASSERT_TRUE(Lease("ep1", 1, 300).ok());  // only "a"
  auto wrong_ep = Complete("ep2", {Ok("a", 1)}, 500);
  ASSERT_TRUE(wrong_ep.ok());
  EXPECT_TRUE(wrong_ep->finished.empty());
  EXPECT_EQ(wrong_ep->rejected, 1);
  auto waiting = Complete("ep1", {Ok("w", 1), Ok("unknown", 1)}, 500);
  ASSERT_TRUE(waiting.ok());
  EXPECT_TRUE(waiting->finished.empty());
  EXPECT_EQ(waiting->rejected, 2);
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(Get("w").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
}

TEST_P(TaskStoreContract, CancelRemovesQueuedTasksAndWinsOverLateResults) {
  Submit({"a", "b", "c"});
  auto ca = store_->CancelTask("a", 250);
  ASSERT_TRUE(ca.ok() && ca->has_value());
  EXPECT_EQ((*ca)->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  auto leased = Lease("ep1", 10, 300);
  EXPECT_EQ(Ids(*leased), (std::vector<std::string>{"b", "c"}));
  auto cb = store_->CancelTask("b", 350);  // in flight
  EXPECT_EQ((*cb)->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 1);
  auto late = Complete("ep1", {Ok("b", 1), Ok("c", 3)}, 400);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(FinishedIds(*late), (std::vector<std::string>{"c"}));
  EXPECT_EQ(late->rejected, 1);
  EXPECT_EQ(Get("b").state(), v1::TASK_STATE_CANCELLED);
  // Cancelling a finished task leaves it as it was.
  auto cc = store_->CancelTask("c", 500);
  EXPECT_EQ((*cc)->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*cc)->result().int_value(), 3);
  auto unknown = store_->CancelTask("nope", 500);
  ASSERT_TRUE(unknown.ok());
  EXPECT_FALSE(unknown->has_value());
}

TEST_P(TaskStoreContract, ANewSessionKeepsTheTasksItHoldsAndRequeuesTheRestAtTheHead) {
  Submit({"a", "b", "c", "d", "e"});
  auto first = store_->RegisterSession("ep1", {}, "new session", 250);
  ASSERT_TRUE(first.ok());
  const int64_t e1 = first->lease_epoch;
  ASSERT_EQ(Lease("ep1", 3, 300, e1)->size(), 3u);                          // a b c in flight; d e queued
  auto second = store_->RegisterSession("ep1", {"b"}, "new session", 700);  // it still holds b
  ASSERT_TRUE(second.ok());
  const int64_t e2 = second->lease_epoch;
  EXPECT_GT(e2, e1);
  EXPECT_EQ(second->requeued, 2);
  EXPECT_TRUE(second->finished.empty());
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(Get("a").attempts(), 0);  // it never ran: the attempt was given back
  EXPECT_EQ(Stages(Get("a")).back(), "requeued");
  EXPECT_EQ(Get("b").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 1);
  // The fence: the first session's results are refused, even for b, which moved to e2.
  auto stale = Complete("ep1", {Ok("b", 1)}, 750, e1);
  EXPECT_TRUE(stale->finished.empty());
  EXPECT_EQ(stale->rejected, 1);
  EXPECT_EQ(FinishedIds(*Complete("ep1", {Ok("b", 1)}, 760, e2)), (std::vector<std::string>{"b"}));
  EXPECT_EQ(Ids(*Lease("ep1", 10, 800, e2)), (std::vector<std::string>{"a", "c", "d", "e"}));
}

TEST_P(TaskStoreContract, ALostSessionGivesBackUnstartedAttemptsAndChargesRunningOnes) {
  std::vector<NewTask> tasks = {Task("a", "ep1", 1, 2), Task("b", "ep1", 1, 2), Task("c", "ep1", 1, 1)};
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  ASSERT_EQ(Lease("ep1", 3, 300)->size(), 3u);
  Running("a");
  Running("c");
  auto lost = store_->ReleaseSession("ep1", kEpoch, "endpoint lost: missed heartbeats", 900);
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(lost->requeued, 2);  // a (one attempt left) and b (never started)
  ASSERT_EQ(lost->finished.size(), 1u);
  const auto& c = lost->finished[0];
  EXPECT_EQ(c.id(), "c");
  EXPECT_EQ(c.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(c.failure(), v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED);
  EXPECT_NE(c.error().find("gave up after 1 attempt(s)"), std::string::npos) << c.error();
  EXPECT_NE(c.error().find("endpoint lost: missed heartbeats"), std::string::npos) << c.error();
  EXPECT_EQ(Get("c").error(), c.error());
  auto a = Get("a");
  EXPECT_EQ(a.state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(a.attempts(), 1);
  ASSERT_EQ(a.attempt_history_size(), 1);
  EXPECT_EQ(a.attempt_history(0).number(), 1);
  EXPECT_EQ(a.attempt_history(0).endpoint(), "ep1");
  EXPECT_EQ(a.attempt_history(0).lease_epoch(), kEpoch);
  EXPECT_EQ(a.attempt_history(0).failure(), v1::FAILURE_KIND_ENDPOINT_LOST);
  EXPECT_EQ(a.attempt_history(0).ended_unix_nanos(), 900);
  EXPECT_EQ(Get("b").attempts(), 0);
  EXPECT_EQ(Get("b").attempt_history_size(), 0);
  // Back at the head in dispatch order; the next lease (of the next session) is attempt 2 of a.
  EXPECT_TRUE(Lease("ep1", 10, 950, kEpoch + 1)->empty());  // no such session yet
  const int64_t next = store_->RegisterSession("ep1", {}, "back", 980)->lease_epoch;
  EXPECT_EQ(Ids(*Lease("ep1", 10, 1000, next)), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Get("a").attempts(), 2);
}

TEST_P(TaskStoreContract, ReleasingAnOldSessionLeavesNewerLeasesAlone) {
  Submit({"a", "b"});
  const int64_t e1 = store_->RegisterSession("ep1", {}, "x", 250)->lease_epoch;
  ASSERT_EQ(Lease("ep1", 1, 300, e1)->size(), 1u);
  const int64_t e2 = store_->RegisterSession("ep1", {"a"}, "x", 350)->lease_epoch;
  ASSERT_EQ(Lease("ep1", 1, 400, e2)->size(), 1u);
  auto lost = store_->ReleaseSession("ep1", e1, "late", 500);
  EXPECT_EQ(lost->requeued, 0);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 2);
}

TEST_P(TaskStoreContract, AWorkerLostAttemptIsRetriedAtTheTailUntilTheTaskIsPoison) {
  std::vector<NewTask> tasks = {Task("p", "ep1", 1, 10), Task("q", "ep1")};
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  for (int attempt = 1; attempt <= 2; ++attempt) {
    ASSERT_EQ(Ids(*Lease("ep1", 1, 300)), (std::vector<std::string>{attempt == 1 ? "p" : "q"}));
    if (attempt == 2) {
      ASSERT_EQ(Ids(*Lease("ep1", 1, 300)), (std::vector<std::string>{"p"}));
    }
    auto out = Complete("ep1", {Lost("p")}, 400);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->retried, 1);
    EXPECT_TRUE(out->finished.empty());
    auto p = Get("p");
    EXPECT_EQ(p.state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
    EXPECT_EQ(Stages(p).back(), "retry");
    EXPECT_EQ(p.attempt_history_size(), attempt);
  }
  ASSERT_EQ(Ids(*Lease("ep1", 1, 500)), (std::vector<std::string>{"p"}));
  auto out = Complete("ep1", {Lost("p")}, 600);
  ASSERT_EQ(FinishedIds(*out), (std::vector<std::string>{"p"}));
  const auto& p = out->finished[0];
  EXPECT_EQ(p.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(p.failure(), v1::FAILURE_KIND_POISON);
  EXPECT_EQ(p.attempts(), 3);
  EXPECT_EQ(p.attempt_history_size(), 3);
  EXPECT_NE(p.error().find("poison: this task killed 3 worker(s) (max_worker_deaths 3)"), std::string::npos)
      << p.error();
  EXPECT_NE(p.error().find("#3 on ep1: worker lost (the worker process died"), std::string::npos) << p.error();
  EXPECT_EQ(Get("p").error(), p.error());
  EXPECT_EQ(Get("q").state(), v1::TASK_STATE_DISPATCHED);  // others are unaffected
  EXPECT_EQ(*store_->InFlightCount("ep1"), 1);
}

TEST_P(TaskStoreContract, WithRetriesOffAWorkerLossFailsAtOnceWithItsHistory) {
  std::vector<NewTask> tasks = {Task("a", "ep1", 1, /*max_attempts=*/1)};
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  ASSERT_EQ(Lease("ep1", 1, 300)->size(), 1u);
  auto out = Complete("ep1", {Lost("a")}, 400);
  ASSERT_EQ(out->finished.size(), 1u);
  const auto& a = out->finished[0];
  EXPECT_EQ(a.failure(), v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED);
  EXPECT_EQ(a.max_attempts(), 1);
  EXPECT_NE(a.error().find("gave up after 1 attempt(s) lost to system failures (max_attempts 1)"), std::string::npos)
      << a.error();
  EXPECT_NE(a.error().find("worker lost (the worker process died while running this task (signal 9))"),
            std::string::npos)
      << a.error();
}

TEST_P(TaskStoreContract, KernelErrorsAndTimeoutsAreFinal) {
  Submit({"k", "t"});
  ASSERT_EQ(Lease("ep1", 2, 300)->size(), 2u);
  auto out = Complete(
      "ep1", {Err("k", "ValueError: bad input"), Err("t", "ran past its deadline of 50 ms", v1::FAILURE_KIND_TIMEOUT)},
      400);
  ASSERT_EQ(FinishedIds(*out), (std::vector<std::string>{"k", "t"}));
  EXPECT_EQ(out->retried, 0);
  EXPECT_EQ(Get("k").failure(), v1::FAILURE_KIND_KERNEL_ERROR);
  EXPECT_EQ(Get("k").error(), "ValueError: bad input");
  EXPECT_EQ(Get("t").failure(), v1::FAILURE_KIND_TIMEOUT);
  EXPECT_EQ(Get("t").attempt_history_size(), 1);
}

TEST_P(TaskStoreContract, RelinquishGivesBackDirectTasksThatWereNeverSent) {
  std::vector<NewTask> tasks = {Task("d", "ep1")};
  tasks[0].direct = true;
  tasks[0].lease_epoch = kEpoch;
  SubmitOutcome out;
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200, &out).ok());
  ASSERT_TRUE(out.dispatched[0]);
  EXPECT_EQ(*store_->RelinquishTasks("ep1", kEpoch - 1, {"d"}, 300), 0);  // not that session's
  EXPECT_EQ(*store_->RelinquishTasks("ep1", kEpoch, {"d", "unknown"}, 300), 1);
  auto d = Get("d");
  EXPECT_EQ(d.state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(d.attempts(), 0);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 0);
  EXPECT_EQ(Ids(*Lease("ep1", 10, 400)), (std::vector<std::string>{"d"}));
}

// One call (the commit queue joins callers' batches) may mix owners, functions, endpoints and
// options from task to task: each task keeps its own.
TEST_P(TaskStoreContract, ABatchMixingOwnersEndpointsAndOptionsKeepsEachTasksOwn) {
  std::vector<NewTask> tasks;
  for (int i = 0; i < 9; ++i) {
    NewTask t = Task("m" + std::to_string(i), i % 3 == 2 ? "ep2" : "ep1", i, 1 + i % 2);
    if (i == 3 || i == 4) t.owner = "bob";
    if (i == 5) t.function = "g";
    if (i >= 6) t.spec.set_timeout_ms(1000 + i);
    if (i == 7) t.idempotency_key = "only-me";
    tasks.push_back(std::move(t));
  }
  SubmitOutcome out;
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200, &out).ok());
  EXPECT_EQ(out.existing_ids, std::vector<std::string>(tasks.size()));
  for (const auto& t : tasks) {
    SCOPED_TRACE(t.id);
    const v1::TaskRecord r = Get(t.id, /*args=*/true);
    EXPECT_EQ(r.owner(), t.owner);
    EXPECT_EQ(r.function(), t.function);
    EXPECT_EQ(r.endpoint(), t.endpoint);
    EXPECT_EQ(r.max_attempts(), t.max_attempts);
    EXPECT_EQ(r.timeout_ms(), t.spec.timeout_ms());
    EXPECT_EQ(r.idempotency_key(), t.idempotency_key);
    ASSERT_EQ(r.args_size(), 1);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r.args(0), t.spec.args(0)));
  }
  EXPECT_EQ(Ids(*Lease("ep1", 10, 300)), (std::vector<std::string>{"m0", "m1", "m3", "m4", "m6", "m7"}));
  EXPECT_EQ(Ids(*Lease("ep2", 10, 300)), (std::vector<std::string>{"m2", "m5", "m8"}));
}

TEST_P(TaskStoreContract, AnIdempotencyKeyMapsARetriedSubmitToTheFirstTask) {
  std::vector<NewTask> first = {Task("t1", "ep1")};
  first[0].idempotency_key = "job-42";
  SubmitOutcome out;
  ASSERT_TRUE(store_->SubmitTasks(first, 200, &out).ok());
  EXPECT_EQ(out.existing_ids, (std::vector<std::string>{""}));
  // A retry (new id, same key), and a batch repeating a key inside itself.
  std::vector<NewTask> retry = {Task("t2", "ep1"), Task("t3", "ep1"), Task("t4", "ep1")};
  retry[0].idempotency_key = "job-42";
  retry[1].idempotency_key = "job-43";
  retry[2].idempotency_key = "job-43";
  ASSERT_TRUE(store_->SubmitTasks(retry, 300, &out).ok());
  EXPECT_EQ(out.existing_ids, (std::vector<std::string>{"t1", "", "t3"}));
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  EXPECT_FALSE((*store_->GetTasks({"t2"}, false))[0].has_value());
  EXPECT_EQ(Get("t1").idempotency_key(), "job-42");
  // Keys are per owner.
  std::vector<NewTask> bob = {Task("t5", "ep1")};
  bob[0].owner = "bob";
  bob[0].idempotency_key = "job-42";
  ASSERT_TRUE(store_->SubmitTasks(bob, 400, &out).ok());
  EXPECT_EQ(out.existing_ids, (std::vector<std::string>{""}));
}

TEST_P(TaskStoreContract, DeletesFinishedTasksAndTheirKeysButNotUnfinishedOnes) {
  std::vector<NewTask> tasks = {Task("a", "ep1"), Task("b", "ep1")};
  tasks[0].idempotency_key = "k";
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  ASSERT_EQ(Lease("ep1", 1, 300)->size(), 1u);
  ASSERT_EQ(Complete("ep1", {Ok("a", 1)}, 400)->finished.size(), 1u);
  auto refused = store_->DeleteTasks({"a", "b"});
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("task 'b' has not finished"), std::string::npos);
  EXPECT_TRUE((*store_->GetTasks({"a"}, false))[0].has_value());  // nothing deleted
  EXPECT_EQ(*store_->DeleteTasks({"a", "unknown"}), 1);
  EXPECT_FALSE((*store_->GetTasks({"a"}, false))[0].has_value());
  // The key is free again: the same key makes a new task.
  std::vector<NewTask> again = {Task("c", "ep1")};
  again[0].idempotency_key = "k";
  SubmitOutcome out;
  ASSERT_TRUE(store_->SubmitTasks(again, 500, &out).ok());
  EXPECT_EQ(out.existing_ids, (std::vector<std::string>{""}));
}

TEST_P(TaskStoreContract, FailoverMovesWaitingTasksThatAllowItToTheHeadOfAnotherQueue) {
  std::vector<NewTask> tasks = {Task("a", "ep1"), Task("b", "ep1"), Task("c", "ep1"), Task("d", "ep1"),
                                Task("e", "ep1")};
  tasks[0].failover_kernel = tasks[3].failover_kernel = tasks[4].failover_kernel = "echo@1";
  tasks[2].failover_kernel = "add@1";  // allowed, but the target does not offer it
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  ASSERT_EQ(Ids(*Lease("ep1", 1, 300)), (std::vector<std::string>{"a"}));  // in flight: stays
  Submit({"x"}, "ep2");
  FailoverTarget ep2;
  ep2.endpoint = "ep2";
  ep2.kernels = {"echo@1", "sleep@1"};
  auto moved = store_->FailoverQueued("ep1", ep2, 100, 400);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(*moved, 2);
  EXPECT_EQ(Get("d").endpoint(), "ep2");
  EXPECT_EQ(Stages(Get("d")).back(), "failover");
  EXPECT_EQ(Get("b").endpoint(), "ep1");
  EXPECT_EQ(Ids(*Lease("ep1", 10, 500)), (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(Ids(*Lease("ep2", 10, 500)), (std::vector<std::string>{"d", "e", "x"}));
  EXPECT_EQ(FinishedIds(*Complete("ep2", {Ok("d", 1)}, 600)), (std::vector<std::string>{"d"}));
  ep2.kernels = {"echo@1"};
  EXPECT_EQ(*store_->FailoverQueued("ep1", ep2, 100, 700), 0);
}

// The route a task carries (service/routing.h) keeps failover within what a submit would allow:
// the target's allow-lists (tenancy), the devices the function needs, and a cap per target.
TEST_P(TaskStoreContract, FailoverMovesOnlyWhatTheTargetAdmitsAndAtMostItsShare) {
  auto task = [&](const std::string& id, const std::string& owner, const std::string& fn,
                  std::vector<std::string> classes) {
    NewTask t = Task(id, "lost");
    t.owner = owner;
    t.failover_kernel = EncodeFailoverRoute({"echo@1", fn, std::move(classes)});
    return t;
  };
  std::vector<NewTask> tasks = {task("alice1", "alice", "alice/f", {}),    task("bob1", "bob", "bob/g", {}),
                                task("gpu1", "alice", "alice/f", {"gpu"}), task("alice2", "alice", "alice/f", {}),
                                task("alice3", "alice", "alice/f", {}),    task("carol1", "carol", "alice/f", {})};
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  FailoverTarget t;
  t.endpoint = "other";
  t.kernels = {"echo@1"};
  t.device_classes = {"cpu"};
  t.users = {"alice", "carol"};  // bob may not use it
  t.functions = {"alice/f"};     // and it runs only alice's f
  t.max_moved = 2;
  auto moved = store_->FailoverQueued("lost", t, 100, 300);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(*moved, 2);
  EXPECT_EQ(Get("alice1").endpoint(), "other");
  EXPECT_EQ(Get("alice2").endpoint(), "other");
  t.max_moved = 0;
  EXPECT_EQ(*store_->FailoverQueued("lost", t, 100, 400), 2);  // alice3, carol1 (her use of alice's f)
  EXPECT_EQ(Get("bob1").endpoint(), "lost");                   // another tenant's task stays
  EXPECT_EQ(Get("gpu1").endpoint(), "lost");                   // needs a GPU the target lacks
  EXPECT_EQ(Ids(*Lease("other", 10, 500)), (std::vector<std::string>{"alice3", "carol1", "alice1", "alice2"}));
  t.device_classes = {"cpu", "gpu"};
  t.users.clear();  // "*": every user
  t.functions.clear();
  EXPECT_EQ(*store_->FailoverQueued("lost", t, 100, 600), 2);
  EXPECT_EQ(Ids(*Lease("other", 10, 700)), (std::vector<std::string>{"bob1", "gpu1"}));
}

// The records CompleteTasks hands back (to be published) are the records a later read gets:
// successes and failures, mixed in one batch, and a success after a retried attempt.
TEST_P(TaskStoreContract, FinishedRecordsAreTheStoredRecords) {
  Submit({"a", "b", "c", "d"});
  ASSERT_EQ(Lease("ep1", 10, 300)->size(), 4u);
  Running("b");
  auto first = Complete("ep1", {Ok("a", 1), Err("b", "boom"), Lost("d"), Ok("c", 3)}, 500);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(FinishedIds(*first), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(first->retried, 1);
  ASSERT_EQ(Lease("ep1", 10, 600)->size(), 1u);
  Running("d");
  auto second = Complete("ep1", {Ok("d", 4)}, 700);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_EQ(FinishedIds(*second), (std::vector<std::string>{"d"}));
  EXPECT_EQ(second->finished[0].attempt_history_size(), 1);
  for (const auto* out : {&*first, &*second}) {
    for (const auto& rec : out->finished) {
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(rec, Get(rec.id())))
          << rec.DebugString() << " vs stored " << Get(rec.id()).DebugString();
    }
  }
}

TEST_P(TaskStoreContract, HandlesLargeBatchesAtomically) {
  std::vector<NewTask> tasks;
  for (int i = 0; i < 2500; ++i) {
    tasks.push_back(Task("t" + std::to_string(i), i % 2 ? "odd" : "even", i));
    tasks.back().direct = i >= 2000;  // asks to go direct, but tasks are queued ahead of it
  }
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200).ok());
  EXPECT_EQ(*store_->QueueDepth("odd"), 1250);
  EXPECT_EQ(*store_->QueueDepth("even"), 1250);
  EXPECT_EQ(*store_->InFlightCount("even"), 0);
  auto leased = Lease("even", 2000, 300);
  ASSERT_EQ(leased->size(), 1250u);
  for (size_t i = 0; i < leased->size(); ++i) EXPECT_EQ((*leased)[i].args(0).int_value(), static_cast<int64_t>(2 * i));
}

// alice's task `id` for ep1, given one attempt.
NewTask OneAttemptTask(const std::string& id) {
  NewTask t;
  t.owner = "alice";
  t.function = "f";
  t.endpoint = "ep1";
  t.max_attempts = 1;
  t.id = id;
  t.spec.set_task_id(id);
  return t;
}

// Retention: a finished task (done, cancelled, or failed with its endpoint) has no EXPIRE; it
// joins an expiry bucket, and SweepExpired deletes it once the TTL has passed, never before.
// Its idempotency key gets the TTL. Unfinished tasks never expire.
TEST(RedisTaskStoreRetention, FinishedTasksAreDeletedOnceTheResultTtlHasPassed) {
  auto conn = RedisConnection::Connect(TestRedis());
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE((*conn)->Command({"FLUSHALL"}).ok());
  constexpr int64_t kTtl = 3600, kSecond = 1'000'000'000;
  RedisTaskStore store(TestRedis(), StoreOptions{kTtl, 3});
  std::vector<NewTask> tasks;
  for (const char* id : {"a", "b", "c", "d"}) tasks.push_back(OneAttemptTask(id));
  tasks[0].idempotency_key = "ka";
  ASSERT_TRUE(store.SubmitTasks(tasks, 100).ok());
  ASSERT_EQ(store.RegisterSession("ep1", {}, "x", 150)->lease_epoch, 1);
  // a succeeds, b is cancelled, c fails with its lost endpoint, d stays queued.
  ASSERT_EQ(store.LeaseTasks("ep1", 1, 1, 200)->size(), 1u);
  v1::TaskResult r;
  r.set_task_id("a");
  r.set_ok(true);
  ASSERT_EQ(store.CompleteTasks("ep1", 1, {r}, 300)->finished.size(), 1u);
  ASSERT_TRUE(store.CancelTask("b", 400).ok());
  ASSERT_EQ(store.LeaseTasks("ep1", 1, 1, 500)->size(), 1u);
  v1::TaskStarted started;
  started.set_task_id("c");
  ASSERT_TRUE(store.MarkRunning({started}).ok());
  ASSERT_EQ(store.ReleaseSession("ep1", 1, "lost", 600)->finished.size(), 1u);

  auto ttl = [&](const std::string& key) { return (*(*conn)->Command({"TTL", key}))->integer; };
  for (const char* key : {"loom:task:a", "loom:task:b", "loom:task:c", "loom:task:d"}) EXPECT_EQ(ttl(key), -1) << key;
  EXPECT_GT(ttl("loom:idem:alice:ka"), kTtl - 100);
  auto states = [&] {
    auto got = store.GetTasks({"a", "b", "c", "d"}, false);
    if (!got.ok()) return got.status().ToString();
    std::string out;
    for (const auto& t : got.value()) out += t ? std::string(TaskStateName(t->state())) + " " : "- ";
    return out;
  };
  const std::string before = states();
  EXPECT_EQ(before, "success cancelled failed waiting-for-endpoint ");
  // Reads do not consume a result, and nothing is due one TTL after finishing.
  auto swept = store.SweepExpired(kTtl * kSecond, 1000);
  ASSERT_TRUE(swept.ok()) << swept.status().ToString();
  EXPECT_EQ(swept->deleted, 0);
  EXPECT_FALSE(swept->more);
  EXPECT_EQ(states(), before);
  // All three are due within one bucket of their TTL.
  swept = store.SweepExpired((kTtl + 1 + ExpiryGranularitySeconds(kTtl)) * kSecond, 1000);
  ASSERT_TRUE(swept.ok());
  EXPECT_EQ(swept->deleted, 3);
  EXPECT_FALSE(swept->more);
  EXPECT_EQ(states(), "- - - waiting-for-endpoint ");
  EXPECT_EQ((*(*conn)->Command({"EXISTS", "loom:expiry"}))->integer, 0);
}

// A sweep takes at most its budget, oldest bucket first, and says whether more are due.
TEST(RedisTaskStoreRetention, SweepsTakeAtMostTheirBudgetOldestFirst) {
  auto conn = RedisConnection::Connect(TestRedis());
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE((*conn)->Command({"FLUSHALL"}).ok());
  constexpr int64_t kTtl = 100, kSecond = 1'000'000'000;
  ASSERT_EQ(ExpiryGranularitySeconds(kTtl), 1);
  RedisTaskStore store(TestRedis(), StoreOptions{kTtl, 3});
  std::vector<NewTask> tasks;
  std::vector<std::string> ids;
  for (int i = 0; i < 2500; ++i) {
    tasks.push_back(OneAttemptTask("t" + std::to_string(i)));
    ids.push_back(tasks.back().id);
  }
  ASSERT_TRUE(store.SubmitTasks(tasks, 100).ok());
  ASSERT_EQ(store.RegisterSession("ep1", {}, "x", 150)->lease_epoch, 1);
  ASSERT_EQ(store.LeaseTasks("ep1", 1, 2500, 200)->size(), 2500u);
  std::vector<v1::TaskResult> early, late;
  for (size_t i = 0; i < tasks.size(); ++i) {
    v1::TaskResult r;
    r.set_task_id(ids[i]);
    r.set_ok(true);
    (i < 1500 ? early : late).push_back(r);
  }
  ASSERT_EQ(store.CompleteTasks("ep1", 1, early, 1 * kSecond)->finished.size(), 1500u);  // due at 101 s
  ASSERT_EQ(store.CompleteTasks("ep1", 1, late, 10 * kSecond)->finished.size(), 1000u);  // due at 110 s
  auto live = [&] {
    auto got = store.GetTasks(ids, false);
    if (!got.ok()) return -1;
    int n = 0;
    for (const auto& t : got.value()) n += t.has_value();
    return n;
  };
  auto sweep = [&](int64_t at_s) {
    auto s = store.SweepExpired(at_s * kSecond, 1000);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::make_pair(s->deleted, s->more) : std::make_pair(int64_t{-1}, false);
  };
  EXPECT_EQ(sweep(100), std::make_pair(int64_t{0}, false));
  EXPECT_EQ(sweep(105), std::make_pair(int64_t{1000}, true));
  EXPECT_EQ(live(), 1500);
  EXPECT_EQ(sweep(105), std::make_pair(int64_t{500}, false));  // the later bucket is not due
  EXPECT_EQ(live(), 1000);
  EXPECT_EQ(sweep(110), std::make_pair(int64_t{1000}, true));  // budget spent: it cannot know the list is empty
  EXPECT_EQ(sweep(110), std::make_pair(int64_t{0}, false));
  EXPECT_EQ(live(), 0);
  EXPECT_EQ((*(*conn)->Command({"KEYS", "loom:expiry*"}))->elements, 0u);
}

// The Redis that Loom starts keeps a task's hash a compact listpack, queued and finished, for
// a spec and stamps past Redis's default of 64 bytes a value; the store reads the setting.
TEST(RedisTaskStoreMemory, TaskHashesStayListpacksUnderLoomsRedisSettings) {
  auto conn = RedisConnection::Connect(TestRedis());
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE((*conn)->Command({"FLUSHALL"}).ok());
  RedisTaskStore store(TestRedis(), StoreOptions{3600, 3});
  auto limit = store.HashMaxListpackValue();
  ASSERT_TRUE(limit.ok()) << limit.status().ToString();
  EXPECT_EQ(*limit, kHashMaxListpackValue);
  NewTask t;
  t.id = "a";
  t.owner = "alice";
  t.function = "bench-noop";
  t.endpoint = "ep1";
  t.spec.set_task_id(std::string(32, 'a'));
  t.spec.set_function("bench-noop");
  t.spec.set_kernel("noop@1");
  t.spec.set_owner("alice");
  t.spec.set_function_owner("alice");
  *t.spec.add_args() = IntValue(7);
  ASSERT_GT(t.spec.ByteSizeLong(), 64u);
  ASSERT_TRUE(store.SubmitTasks({t}, 100).ok());
  auto encoding = [&] { return ReplyString((*(*conn)->Command({"OBJECT", "ENCODING", "loom:task:a"})).get()); };
  EXPECT_EQ(encoding(), "listpack");
  ASSERT_EQ(store.RegisterSession("ep1", {}, "x", 150)->lease_epoch, 1);
  ASSERT_EQ(store.LeaseTasks("ep1", 1, 1, 200)->size(), 1u);
  v1::TaskResult r;
  r.set_task_id("a");
  r.set_ok(true);
  *r.mutable_value() = IntValue(7);
  for (const char* stage : {"endpoint_received", "worker_started", "kernel_finished", "endpoint_sent"}) {
    auto* ts = r.add_timestamps();
    ts->set_stage(stage);
    ts->set_unix_nanos(250);
  }
  ASSERT_EQ(store.CompleteTasks("ep1", 1, {r}, 300)->finished.size(), 1u);
  EXPECT_EQ(encoding(), "listpack");
}

INSTANTIATE_TEST_SUITE_P(Stores, TaskStoreContract,
                         ::testing::Values(std::make_pair("InMemory", Factory(MakeMemory)),
                                           std::make_pair("Redis", Factory(MakeRedis))),
                         [](const auto& param_info) { return std::string(param_info.param.first); });

// Redis only: a restarted Redis has lost its script cache; the pipelined EVALSHAs of
// CompleteTasksMany each get NOSCRIPT and are run again with the script's source.
TEST(RedisTaskStoreTest, CompleteTasksManySurvivesALostScriptCache) {
  auto store = MakeRedis();
  auto task = [](const std::string& id, const std::string& ep) {
    NewTask t;
    t.id = id;
    t.owner = "alice";
    t.function = "f";
    t.endpoint = ep;
    t.spec.set_task_id(id);
    t.spec.set_kernel("echo@1");
    return t;
  };
  ASSERT_TRUE(store->SubmitTasks({task("x1", "ep1"), task("y1", "ep2")}, 200).ok());
  ASSERT_EQ(store->RegisterSession("ep1", {}, "x", 250)->lease_epoch, 1);
  ASSERT_EQ(store->RegisterSession("ep2", {}, "x", 250)->lease_epoch, 1);
  ASSERT_EQ(store->LeaseTasks("ep1", 1, 10, 300)->size(), 1u);
  ASSERT_EQ(store->LeaseTasks("ep2", 1, 10, 300)->size(), 1u);
  auto conn = RedisConnection::Connect(TestRedis());
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE((*conn)->Command({"SCRIPT", "FLUSH"}).ok());
  auto ok = [](const std::string& id) {
    v1::TaskResult r;
    r.set_task_id(id);
    r.set_ok(true);
    *r.mutable_value() = IntValue(5);
    return r;
  };
  const std::string ep1 = "ep1", ep2 = "ep2";
  const std::vector<v1::TaskResult> r1 = {ok("x1")}, r2 = {ok("y1")};
  auto out = store->CompleteTasksMany({{&ep1, 1, &r1}, {&ep2, 1, &r2}}, 400);
  ASSERT_EQ(out.size(), 2u);
  for (const auto& o : out) {
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    ASSERT_EQ(o->finished.size(), 1u);
    EXPECT_EQ(o->finished[0].state(), v1::TASK_STATE_SUCCESS);
  }
}

}  // namespace
}  // namespace loom::service
