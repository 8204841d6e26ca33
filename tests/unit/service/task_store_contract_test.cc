// One contract suite for every TaskStore: the in-memory fake and the real Redis store must
// behave the same, so tests written against the fake mean something.
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

std::unique_ptr<TaskStore> MakeMemory() { return std::make_unique<InMemoryTaskStore>(); }

std::unique_ptr<TaskStore> MakeRedis() {
  RedisOptions o;
  o.port = RedisEnv::Get().port();
  auto conn = RedisConnection::Connect(o);
  EXPECT_TRUE(conn.ok());
  EXPECT_TRUE((*conn)->Command({"FLUSHALL"}).ok());
  return std::make_unique<RedisTaskStore>(o);
}

class TaskStoreContract : public ::testing::TestWithParam<std::pair<const char*, Factory>> {
 protected:
  void SetUp() override { store_ = GetParam().second(); }

  NewTask Task(const std::string& id, const std::string& ep, int64_t arg = 1) {
    NewTask t;
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
  static v1::TaskResult Err(const std::string& id, const std::string& msg) {
    v1::TaskResult r;
    r.set_task_id(id);
    r.set_ok(false);
    r.set_error(msg);
    return r;
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

  auto got = store_->GetFunction("double");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->kernel(), "add@1");
  EXPECT_EQ((*got)->config().at("k").int_value(), 2);
  auto missing = store_->GetFunction("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  v1::Function g = f;
  g.set_name("another");
  ASSERT_TRUE(store_->PutFunction(g).ok());
  auto list = store_->ListFunctions();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
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

TEST_P(TaskStoreContract, DirectTasksAreDispatchedOnlyWhenNothingIsQueuedAheadOfThem) {
  std::vector<NewTask> tasks = {Task("d1", "ep1"), Task("d2", "ep1"), Task("q1", "ep1"), Task("d3", "ep1"),
                                Task("o1", "ep2")};
  tasks[0].direct = tasks[1].direct = tasks[3].direct = tasks[4].direct = true;
  std::vector<bool> dispatched;
  ASSERT_TRUE(store_->SubmitTasks(tasks, 200, &dispatched).ok());
  // d3 is direct but q1 is queued ahead of it, so it queues too.
  EXPECT_EQ(dispatched, (std::vector<bool>{true, true, false, false, true}));
  EXPECT_EQ(Get("d1").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(Stages(Get("d1")), (std::vector<std::string>{"received", "waiting-for-endpoint", "dispatched"}));
  EXPECT_EQ(Get("q1").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 2);
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  EXPECT_EQ(*store_->InFlightCount("ep2"), 1);
  // Direct tasks are in flight like leased ones: completed, or requeued ahead of the queue.
  EXPECT_EQ(store_->CompleteTasks("ep1", {Ok("d1", 1)}, 300)->size(), 1u);
  EXPECT_EQ(*store_->RequeueInFlight("ep1", {}, 400), 1);
  EXPECT_EQ(Ids(*store_->LeaseTasks("ep1", 10, 500)), (std::vector<std::string>{"d2", "q1", "d3"}));
  // Later direct submits see an empty queue again.
  std::vector<NewTask> later = {Task("d4", "ep1")};
  later[0].direct = true;
  ASSERT_TRUE(store_->SubmitTasks(later, 600, &dispatched).ok());
  EXPECT_EQ(dispatched, (std::vector<bool>{true}));
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
  auto first = store_->LeaseTasks("ep1", 3, 300);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(Ids(*first), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ((*first)[0].kernel(), "echo@1");
  EXPECT_EQ((*first)[0].args(0).int_value(), 1);
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 3);
  auto rest = store_->LeaseTasks("ep1", 10, 300);
  EXPECT_EQ(Ids(*rest), (std::vector<std::string>{"d", "e"}));
  auto none = store_->LeaseTasks("ep1", 10, 300);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_TRUE(store_->LeaseTasks("never-seen", 10, 300)->empty());
}

TEST_P(TaskStoreContract, MarksDispatchedTasksRunningOnly) {
  Submit({"a", "b"});
  ASSERT_TRUE(store_->LeaseTasks("ep1", 1, 300).ok());
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
  ASSERT_TRUE(store_->LeaseTasks("ep1", 2, 300).ok());
  auto done = store_->CompleteTasks("ep1", {Ok("a", 42), Err("b", "boom")}, 500);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  ASSERT_EQ(done->size(), 2u);
  EXPECT_EQ((*done)[0].id(), "a");
  EXPECT_EQ((*done)[0].state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*done)[0].result().int_value(), 42);
  EXPECT_EQ((*done)[1].state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ((*done)[1].error(), "boom");
  auto a = Get("a");
  EXPECT_EQ(a.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(a.result().int_value(), 42);
  EXPECT_EQ(Stages(a), (std::vector<std::string>{"received", "waiting-for-endpoint", "dispatched", "worker_started",
                                                 "success"}));
  EXPECT_EQ(Get("b").error(), "boom");
  EXPECT_EQ(*store_->InFlightCount("ep1"), 0);
  // A second result for the same task changes nothing.
  auto again = store_->CompleteTasks("ep1", {Ok("a", 7), Ok("b", 7)}, 600);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty());
  EXPECT_EQ(Get("a").result().int_value(), 42);
  EXPECT_EQ(Get("b").state(), v1::TASK_STATE_FAILED);
}

TEST_P(TaskStoreContract, IgnoresResultsForTasksNotInFlightOnThatEndpoint) {
  Submit({"a"}, "ep1");
  Submit({"w"}, "ep1");
  ASSERT_TRUE(store_->LeaseTasks("ep1", 1, 300).ok());  // only "a"
  auto wrong_ep = store_->CompleteTasks("ep2", {Ok("a", 1)}, 500);
  ASSERT_TRUE(wrong_ep.ok());
  EXPECT_TRUE(wrong_ep->empty());
  auto waiting = store_->CompleteTasks("ep1", {Ok("w", 1), Ok("unknown", 1)}, 500);
  ASSERT_TRUE(waiting.ok());
  EXPECT_TRUE(waiting->empty());
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(Get("w").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
}

TEST_P(TaskStoreContract, CancelRemovesQueuedTasksAndWinsOverLateResults) {
  Submit({"a", "b", "c"});
  auto ca = store_->CancelTask("a", 250);
  ASSERT_TRUE(ca.ok() && ca->has_value());
  EXPECT_EQ((*ca)->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(*store_->QueueDepth("ep1"), 2);
  auto leased = store_->LeaseTasks("ep1", 10, 300);
  EXPECT_EQ(Ids(*leased), (std::vector<std::string>{"b", "c"}));
  auto cb = store_->CancelTask("b", 350);  // in flight
  EXPECT_EQ((*cb)->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 1);
  auto late = store_->CompleteTasks("ep1", {Ok("b", 1), Ok("c", 3)}, 400);
  ASSERT_TRUE(late.ok());
  ASSERT_EQ(late->size(), 1u);
  EXPECT_EQ((*late)[0].id(), "c");
  EXPECT_EQ(Get("b").state(), v1::TASK_STATE_CANCELLED);
  // Cancelling a finished task leaves it as it was.
  auto cc = store_->CancelTask("c", 500);
  EXPECT_EQ((*cc)->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*cc)->result().int_value(), 3);
  auto unknown = store_->CancelTask("nope", 500);
  ASSERT_TRUE(unknown.ok());
  EXPECT_FALSE(unknown->has_value());
}

TEST_P(TaskStoreContract, RequeuesLostInFlightTasksAtTheHeadInDispatchOrder) {
  Submit({"a", "b", "c", "d", "e"});
  ASSERT_EQ(store_->LeaseTasks("ep1", 3, 300)->size(), 3u);  // a b c in flight; d e queued
  auto n = store_->RequeueInFlight("ep1", {"b"}, 700);  // the endpoint still holds b
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(Stages(Get("a")).back(), "requeued");
  EXPECT_EQ(Get("b").state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ(*store_->InFlightCount("ep1"), 1);
  auto order = store_->LeaseTasks("ep1", 10, 800);
  EXPECT_EQ(Ids(*order), (std::vector<std::string>{"a", "c", "d", "e"}));
}

TEST_P(TaskStoreContract, RequeueSkipsTasksThatFinishedMeanwhile) {
  Submit({"a", "b"});
  ASSERT_EQ(store_->LeaseTasks("ep1", 2, 300)->size(), 2u);
  ASSERT_EQ(store_->CompleteTasks("ep1", {Ok("a", 1)}, 400)->size(), 1u);
  EXPECT_EQ(*store_->RequeueInFlight("ep1", {}, 500), 1);
  EXPECT_EQ(Get("a").state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(Ids(*store_->LeaseTasks("ep1", 10, 600)), (std::vector<std::string>{"b"}));
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
  auto leased = store_->LeaseTasks("even", 2000, 300);
  ASSERT_EQ(leased->size(), 1250u);
  for (size_t i = 0; i < leased->size(); ++i) EXPECT_EQ((*leased)[i].args(0).int_value(), static_cast<int64_t>(2 * i));
}

INSTANTIATE_TEST_SUITE_P(Stores, TaskStoreContract,
                         ::testing::Values(std::make_pair("InMemory", Factory(MakeMemory)),
                                           std::make_pair("Redis", Factory(MakeRedis))),
                         [](const auto& param_info) { return std::string(param_info.param.first); });

}  // namespace
}  // namespace loom::service
