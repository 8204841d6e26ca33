// LoomApi against the in-memory store: validation at submit, group commit, result waiting.
#include "service/api.h"

#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/kernel_api.h"
#include "common/util.h"
#include "service/memory_task_store.h"

namespace loom::service {
namespace {

class FakeNotifier : public DispatchNotifier {
 public:
  void TasksQueued(const std::vector<std::string>& endpoints) override {
    std::lock_guard lock(mu);
    queued.insert(queued.end(), endpoints.begin(), endpoints.end());
  }
  void TasksDispatched(const std::string& endpoint, const std::string& session, int64_t,
                       std::vector<v1::TaskSpec> specs, int64_t committed_ns) override {
    std::lock_guard lock(mu);
    for (auto& s : specs) dispatched.emplace_back(endpoint + "/" + session, s.task_id());
    committed.push_back(committed_ns);
  }
  void TasksCancelled(const std::string&, const std::vector<std::string>& ids) override {
    std::lock_guard lock(mu);
    cancelled.insert(cancelled.end(), ids.begin(), ids.end());
  }
  std::mutex mu;
  std::vector<std::string> queued, cancelled;
  std::vector<std::pair<std::string, std::string>> dispatched;  // (endpoint/session, task id)
  std::vector<int64_t> committed;                               // per TasksDispatched call
};

// Counts the task reads, to show which waits need none.
class CountingStore : public InMemoryTaskStore {
 public:
  Result<std::vector<std::optional<v1::TaskRecord>>> GetTasks(const std::vector<std::string>& ids,
                                                              bool include_args) override {
    task_reads += static_cast<int>(ids.size());
    return InMemoryTaskStore::GetTasks(ids, include_args);
  }
  std::atomic<int> task_reads{0};
};

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    limits_.max_batch = 100;
    limits_.max_message_bytes = 4096;
    api_ = std::make_unique<LoomApi>(&store_, &hub_, &notifier_, limits_);
    v1::EndpointRecord ep;
    ep.set_id("ep1");
    ep.set_status(v1::ENDPOINT_STATUS_ONLINE);
    *ep.add_kernels() = MakeKernelInfo("add", "1", "a+b",
                                       {Param("a", v1::VALUE_TYPE_NUMBER, ""), Param("b", v1::VALUE_TYPE_NUMBER, "")},
                                       v1::VALUE_TYPE_NUMBER);
    *ep.add_kernels() = MakeKernelInfo("echo", "1", "", {Param("value", v1::VALUE_TYPE_ANY, "")}, v1::VALUE_TYPE_ANY);
    ASSERT_TRUE(store_.PutEndpoint(ep).ok());
    // Its session (lease epoch 1): the store leases only to an endpoint's latest session.
    ASSERT_EQ(store_.RegisterSession("ep1", {}, "test", 0)->lease_epoch, 1);
    v1::EndpointRecord offline;
    offline.set_id("never");
    offline.set_status(v1::ENDPOINT_STATUS_NEVER_CONNECTED);
    ASSERT_TRUE(store_.PutEndpoint(offline).ok());
    Register("add", "add@1");
    Register("echo", "echo@1");
    Register("other", "braggnn@1");
  }

  void Register(const std::string& name, const std::string& kernel) {
    v1::RegisterFunctionRequest r;
    r.mutable_function()->set_name(name);
    r.mutable_function()->set_kernel(kernel);
    ASSERT_TRUE(api_->RegisterFunction(r, LocalPrincipal()).ok());
  }

  static v1::SubmitRequest Req(const std::string& fn, const std::string& ep, std::vector<Value> args) {
    v1::SubmitRequest r;
    r.set_function(fn);
    r.set_endpoint(ep);
    for (auto& a : args) *r.add_args() = std::move(a);
    return r;
  }

  // Submits n echo tasks to ep1 and leases them to epoch 1, as an endpoint session would.
  std::vector<std::string> SubmitAndLease(int n) {
    v1::SubmitBatchRequest b;
    for (int i = 0; i < n; ++i) *b.add_tasks() = Req("echo", "ep1", {IntValue(i)});
    auto ids = api_->SubmitBatch(b, LocalPrincipal());
    EXPECT_TRUE(ids.ok());
    EXPECT_EQ(store_.LeaseTasks("ep1", 1, n, NowNanos())->size(), static_cast<size_t>(n));
    return ids.ok() ? std::vector<std::string>(ids->task_ids().begin(), ids->task_ids().end())
                    : std::vector<std::string>();
  }
  // Commits a success for each of `ids` in one store call and publishes what finished (twice
  // with `twice`), as the broker does.
  void FinishTogether(const std::vector<std::string>& ids, bool twice = false) {
    std::vector<v1::TaskResult> results;
    for (const auto& id : ids) {
      auto& r = results.emplace_back();
      r.set_task_id(id);
      r.set_ok(true);
      *r.mutable_value() = IntValue(1);
    }
    auto done = store_.CompleteTasks("ep1", 1, results, NowNanos());
    ASSERT_TRUE(done.ok());
    hub_.Publish(done->finished);
    if (twice) hub_.Publish(done->finished);
  }

  // WaitResults for `ids` as `who` (the local user by default), for up to 10 s.
  Status Wait(const std::vector<std::string>& ids, const LoomApi::BurstWriter& write,
              const Principal& who = LocalPrincipal()) {
    v1::WaitResultsRequest w;
    for (const auto& id : ids) w.add_task_ids(id);
    w.set_timeout_ms(10000);
    return api_->WaitResults(w, who, write, [] { return false; });
  }

  // Waits for `ids`, collecting them in delivery order into `seen`; once the wait has delivered
  // its first burst (it is subscribed by then), runs `then` on another thread.
  Status WaitThen(const std::vector<std::string>& ids, const std::function<void()>& then,
                  std::vector<std::string>* seen) {
    std::thread other([&] {
      while (true) {
        {
          std::lock_guard lock(notifier_.mu);
          if (!seen->empty()) break;
        }
        std::this_thread::yield();
      }
      then();
    });
    Status s = Wait(ids, [&](const LoomApi::Burst& burst) {
      std::lock_guard lock(notifier_.mu);
      for (const auto* r : burst) seen->push_back(r->id());
      return true;
    });
    other.join();
    return s;
  }

  CountingStore store_;
  CompletionHub hub_;
  FakeNotifier notifier_;
  ServiceLimits limits_;
  std::unique_ptr<LoomApi> api_;
};

TEST_F(ApiTest, SubmitStoresTheTaskBeforeReplyingAndWakesTheDispatcher) {
  auto r = api_->Submit(Req("add", "ep1", {IntValue(1), IntValue(2)}), LocalPrincipal());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto rec = store_.GetTasks({r->task_id()}, true);
  ASSERT_TRUE((*rec)[0].has_value());
  EXPECT_EQ((*rec)[0]->state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ((*rec)[0]->owner(), kLocalUser);
  EXPECT_EQ(notifier_.queued, (std::vector<std::string>{"ep1"}));
  auto specs = store_.LeaseTasks("ep1", 1, 10, NowNanos());
  ASSERT_EQ(specs->size(), 1u);
  EXPECT_EQ((*specs)[0].kernel(), "add@1");
}

TEST_F(ApiTest, SubmitDispatchesAtOnceAgainstCreditAndQueuesTheRest) {
  CreditBook credit;
  LoomApi api(&store_, &hub_, &notifier_, limits_, &credit);
  credit.Open("ep1", "s1", 1, 2);
  v1::SubmitBatchRequest b;
  for (int i = 0; i < 3; ++i) *b.add_tasks() = Req("echo", "ep1", {IntValue(i)});
  const int64_t before = NowNanos();
  auto ids = api.SubmitBatch(b, LocalPrincipal());
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  // Two went out with the credit, in order; the third waits in the queue. They carry the time
  // their write returned, after their "dispatched" stamp.
  ASSERT_EQ(notifier_.committed.size(), 1u);
  EXPECT_GE(notifier_.committed[0], before);
  ASSERT_EQ(notifier_.dispatched.size(), 2u);
  EXPECT_EQ(notifier_.dispatched[0], std::make_pair(std::string("ep1/s1"), ids->task_ids(0)));
  EXPECT_EQ(notifier_.dispatched[1].second, ids->task_ids(1));
  EXPECT_EQ(notifier_.queued, (std::vector<std::string>{"ep1"}));
  auto recs = store_.GetTasks({ids->task_ids(0), ids->task_ids(2)}, false);
  EXPECT_EQ((*recs)[0]->state(), v1::TASK_STATE_DISPATCHED);
  EXPECT_EQ((*recs)[1]->state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  for (const auto& t : (*recs)[0]->timestamps()) {
    if (t.stage() == "dispatched") {
      EXPECT_GE(notifier_.committed[0], t.unix_nanos());
    }
  }
  EXPECT_EQ(*store_.InFlightCount("ep1"), 2);
  EXPECT_EQ(*store_.QueueDepth("ep1"), 1);
  EXPECT_EQ(credit.Take("ep1", 10).n, 0);
  // With credit again but a task queued ahead, a new task must not jump the queue; the unused
  // credit is given back.
  credit.Add("ep1", "s1", 5);
  notifier_.dispatched.clear();
  ASSERT_TRUE(api.Submit(Req("echo", "ep1", {IntValue(9)}), LocalPrincipal()).ok());
  EXPECT_TRUE(notifier_.dispatched.empty());
  EXPECT_EQ(*store_.QueueDepth("ep1"), 2);
  EXPECT_EQ(credit.Take("ep1", 10).n, 5);
}

TEST_F(ApiTest, QueueDepthLimitRejectsOnlyTheSubmitThatWouldOverfillIt) {
  ServiceLimits small = limits_;
  small.max_queue_depth = 2;
  LoomApi api(&store_, &hub_, &notifier_, small);
  ASSERT_TRUE(api.Submit(Req("echo", "ep1", {IntValue(1)}), LocalPrincipal()).ok());
  v1::SubmitBatchRequest two;
  for (int i = 0; i < 2; ++i) *two.add_tasks() = Req("echo", "ep1", {IntValue(i)});
  auto r = api.SubmitBatch(two, LocalPrincipal());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("limit of 2 (max_queue_depth)"), std::string::npos) << r.status().message();
  EXPECT_EQ(*store_.QueueDepth("ep1"), 1);
  // Many concurrent single submits: exactly up to the limit get in, the rest hear why.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, full{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto s = api.Submit(Req("echo", "ep1", {IntValue(7)}), LocalPrincipal());
      if (s.ok()) ++ok;
      if (s.status().code() == StatusCode::kResourceExhausted) ++full;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(full.load(), 3);
  EXPECT_EQ(*store_.QueueDepth("ep1"), 2);
}

TEST_F(ApiTest, RejectsBadSubmitsWithClearErrors) {
  auto unknown_fn = api_->Submit(Req("nope", "ep1", {}), LocalPrincipal());
  EXPECT_EQ(unknown_fn.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown_fn.status().message().find("function 'nope'"), std::string::npos);
  auto unknown_ep = api_->Submit(Req("add", "mars", {IntValue(1), IntValue(2)}), LocalPrincipal());
  EXPECT_EQ(unknown_ep.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown_ep.status().message().find("endpoint 'mars'"), std::string::npos);
  auto wrong_type = api_->Submit(Req("add", "ep1", {IntValue(1), StringValue("x")}), LocalPrincipal());
  EXPECT_EQ(wrong_type.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_type.status().message().find("'b' must be number, got string"), std::string::npos)
      << wrong_type.status().message();
  auto missing = api_->Submit(Req("add", "ep1", {IntValue(1)}), LocalPrincipal());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  auto no_kernel = api_->Submit(Req("other", "ep1", {}), LocalPrincipal());
  EXPECT_EQ(no_kernel.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(no_kernel.status().message().find("braggnn@1"), std::string::npos);
  auto too_big = api_->Submit(Req("echo", "ep1", {BytesValue(std::string(5000, 'x'))}), LocalPrincipal());
  EXPECT_EQ(too_big.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(too_big.status().message().find("max_message_bytes"), std::string::npos);
  EXPECT_TRUE(notifier_.queued.empty());
  EXPECT_EQ(*store_.QueueDepth("ep1"), 0);
}

TEST_F(ApiTest, AcceptsTasksForAnEndpointThatHasNotConnectedYet) {
  auto r = api_->Submit(Req("other", "never", {IntValue(1)}), LocalPrincipal());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*store_.QueueDepth("never"), 1);
}

TEST_F(ApiTest, BatchLimitsAreEnforcedAndAFaultyTaskRejectsTheWholeBatch) {
  v1::SubmitBatchRequest big;
  for (int i = 0; i < 101; ++i) *big.add_tasks() = Req("echo", "ep1", {IntValue(i)});
  auto r = api_->SubmitBatch(big, LocalPrincipal());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("limit of 100"), std::string::npos);
  v1::SubmitBatchRequest bad;
  *bad.add_tasks() = Req("echo", "ep1", {IntValue(1)});
  *bad.add_tasks() = Req("add", "ep1", {IntValue(1)});
  auto rb = api_->SubmitBatch(bad, LocalPrincipal());
  EXPECT_EQ(rb.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(rb.status().message().find("task 1"), std::string::npos);
  EXPECT_EQ(*store_.QueueDepth("ep1"), 0);
  EXPECT_EQ(api_->SubmitBatch(v1::SubmitBatchRequest(), LocalPrincipal()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(ApiTest, ConcurrentSubmitsAreAllCommitted) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        if (api_->Submit(Req("echo", "ep1", {IntValue(t * 1000 + i)}), LocalPrincipal()).ok()) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 400);
  EXPECT_EQ(*store_.QueueDepth("ep1"), 400);
}

TEST_F(ApiTest, RegisteringTheSameFunctionTwiceIsIdempotentButConflictsAreRejected) {
  v1::RegisterFunctionRequest r;
  r.mutable_function()->set_name("add");
  r.mutable_function()->set_kernel("add@1");
  auto again = api_->RegisterFunction(r, LocalPrincipal());
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created());
  r.mutable_function()->set_kernel("echo@1");
  EXPECT_EQ(api_->RegisterFunction(r, LocalPrincipal()).status().code(), StatusCode::kAlreadyExists);
  r.mutable_function()->set_kernel("echo");  // no version
  EXPECT_EQ(api_->RegisterFunction(r, LocalPrincipal()).status().code(), StatusCode::kInvalidArgument);
  r.mutable_function()->set_name("bad name");
  EXPECT_EQ(api_->RegisterFunction(r, LocalPrincipal()).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ApiTest, WaitResultsStreamsInCompletionOrderAndEachTaskOnce) {
  auto ids = SubmitAndLease(3);
  // The first one finishes before the wait starts, the others while it waits, in reverse; a
  // duplicate publication must not duplicate the stream.
  FinishTogether({ids[0]}, /*twice=*/true);
  std::vector<std::string> seen;
  Status s = WaitThen(
      ids,
      [&] {
        FinishTogether({ids[2]}, /*twice=*/true);
        FinishTogether({ids[1]}, /*twice=*/true);
      },
      &seen);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{ids[0], ids[2], ids[1]}));
}

TEST_F(ApiTest, WaitResultsHandsTheRecordsReadyTogetherToOneWrite) {
  auto ids = SubmitAndLease(4);
  FinishTogether({ids[0], ids[1]});  // finished before the wait: held by the hub, one burst
  std::vector<std::set<std::string>> bursts;
  Status s = Wait(ids, [&](const LoomApi::Burst& burst) {
    auto& got = bursts.emplace_back();
    for (const auto* r : burst) got.insert(r->id());
    // The other two finish together while the wait is subscribed: the next burst.
    if (bursts.size() == 1) FinishTogether({ids[2], ids[3]});
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(bursts, (std::vector<std::set<std::string>>{{ids[0], ids[1]}, {ids[2], ids[3]}}));
}

// Records published while nobody waited are kept by the hub: a wait that starts late takes
// them from there without reading the store, once; after that the store answers.
TEST_F(ApiTest, WaitResultsTakesRecordsNobodyWaitedForFromTheHubOnce) {
  auto ids = SubmitAndLease(3);
  FinishTogether({ids[0], ids[1]});
  // Removed from the store behind the API's back: only the hub can still answer for them.
  ASSERT_EQ(*store_.DeleteTasks({ids[0], ids[1]}), 2);
  store_.task_reads = 0;
  std::vector<std::string> seen;
  Status s = Wait({ids[0], ids[1]}, [&](const LoomApi::Burst& burst) {
    for (const auto* r : burst) {
      seen.push_back(r->id());
      EXPECT_EQ(r->state(), v1::TASK_STATE_SUCCESS);
      EXPECT_EQ(r->result().int_value(), 1);
    }
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), (std::set<std::string>{ids[0], ids[1]}));
  EXPECT_EQ(store_.task_reads, 0);
  EXPECT_EQ(hub_.unclaimed_count(), 0u);
  EXPECT_EQ(Wait({ids[0]}, [](const LoomApi::Burst&) { return true; }).code(), StatusCode::kNotFound);
  EXPECT_EQ(hub_.unclaimed_bytes(), 0);
}

TEST_F(ApiTest, WaitResultsServesNoDeletedTaskAndNoOtherTenantsTaskFromTheHub) {
  auto ids = SubmitAndLease(2);
  FinishTogether(ids);
  ASSERT_EQ(hub_.unclaimed_count(), 2u);
  v1::DeleteTasksRequest del;
  del.add_task_ids(ids[0]);
  ASSERT_EQ(api_->DeleteTasks(del, LocalPrincipal())->deleted(), 1);
  EXPECT_EQ(hub_.unclaimed_count(), 1u);
  EXPECT_EQ(Wait({ids[0]}, [](const LoomApi::Burst&) { return true; }).code(), StatusCode::kNotFound);
  // Another tenant asking for the other one is told it does not exist; its owner still gets it
  // (from the store: the refused ask took it out of the hub).
  const Principal bob{"bob", false};
  EXPECT_EQ(Wait(
                {ids[1]}, [](const LoomApi::Burst&) { return true; }, bob)
                .code(),
            StatusCode::kNotFound);
  int got = 0;
  ASSERT_TRUE(Wait({ids[1]}, [&](const LoomApi::Burst& burst) {
                got += static_cast<int>(burst.size());
                return true;
              }).ok());
  EXPECT_EQ(got, 1);
}

// The owners of unfinished tasks submitted here are known to the hub: waiting for them reads
// nothing from the store, and another tenant is still told they do not exist.
TEST_F(ApiTest, WaitResultsForTasksSubmittedHereReadsNothingFromTheStore) {
  auto ids = SubmitAndLease(3);
  EXPECT_EQ(hub_.expected_count(), 3u);
  const Principal bob{"bob", false};
  store_.task_reads = 0;
  EXPECT_EQ(Wait(
                {ids[0]}, [](const LoomApi::Burst&) { return true; }, bob)
                .code(),
            StatusCode::kNotFound);
  FinishTogether({ids[0]});  // published to nobody: kept as unclaimed
  EXPECT_EQ(hub_.expected_count(), 2u);
  std::vector<std::string> seen;
  Status s = WaitThen(
      ids,
      [&] {
        FinishTogether({ids[1], ids[2]});
      },
      &seen);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), std::set<std::string>(ids.begin(), ids.end()));
  EXPECT_EQ(store_.task_reads, 0);
  EXPECT_EQ(hub_.expected_count(), 0u);
}

TEST_F(ApiTest, ARetriedOrFailedSubmitLeavesNoExpectedTask) {
  auto first = Req("echo", "ep1", {IntValue(1)});
  first.set_idempotency_key("k1");
  auto a = api_->Submit(first, LocalPrincipal());
  ASSERT_TRUE(a.ok());
  auto again = api_->Submit(first, LocalPrincipal());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->task_id(), a->task_id());
  EXPECT_EQ(hub_.expected_count(), 1u);  // the retry's own id was never created
  EXPECT_FALSE(api_->Submit(Req("echo", "nowhere", {IntValue(1)}), LocalPrincipal()).ok());
  EXPECT_EQ(hub_.expected_count(), 1u);
}

TEST_F(ApiTest, WaitResultsTimesOutAndRejectsUnknownIds) {
  auto id = api_->Submit(Req("echo", "ep1", {IntValue(1)}), LocalPrincipal())->task_id();
  v1::WaitResultsRequest w;
  w.add_task_ids(id);
  w.set_timeout_ms(50);
  int writes = 0;
  Status s = api_->WaitResults(
      w, LocalPrincipal(), [&](const LoomApi::Burst&) { return ++writes > 0; }, [] { return false; });
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(writes, 0);
  w.add_task_ids("missing");
  EXPECT_EQ(api_->WaitResults(
                    w, LocalPrincipal(), [](const LoomApi::Burst&) { return true; }, [] { return false; })
                .code(),
            StatusCode::kNotFound);
}

TEST_F(ApiTest, GetTasksLongPollWaitsForTheResultOrTheTimeout) {
  auto id = api_->Submit(Req("echo", "ep1", {IntValue(8)}), LocalPrincipal())->task_id();
  ASSERT_EQ(store_.LeaseTasks("ep1", 1, 1, NowNanos())->size(), 1u);
  v1::GetTasksRequest req;
  req.add_task_ids(id);
  req.set_wait_ms(30);
  auto early = api_->GetTasks(req, LocalPrincipal());  // nothing finishes: returns as it is
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->tasks(0).state(), v1::TASK_STATE_DISPATCHED);
  std::atomic<bool> waiting{false};
  std::thread finisher([&] {
    while (!waiting) std::this_thread::yield();
    v1::TaskResult r;
    r.set_task_id(id);
    r.set_ok(true);
    *r.mutable_value() = IntValue(8);
    hub_.Publish(store_.CompleteTasks("ep1", 1, {r}, NowNanos())->finished);
  });
  req.set_wait_ms(10000);
  req.set_include_args(true);
  waiting = true;
  auto done = api_->GetTasks(req, LocalPrincipal());
  finisher.join();
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->tasks(0).state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(done->tasks(0).result().int_value(), 8);
  ASSERT_EQ(done->tasks(0).args_size(), 1);  // the arguments asked for are kept
  EXPECT_EQ(done->tasks(0).args(0).int_value(), 8);
}

TEST_F(ApiTest, CancelMarksTheTaskPublishesItAndTellsTheDispatcher) {
  auto id = api_->Submit(Req("echo", "ep1", {IntValue(1)}), LocalPrincipal())->task_id();
  auto c = api_->Cancel(
      [&] {
        v1::CancelRequest r;
        r.set_task_id(id);
        return r;
      }(),
      LocalPrincipal());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->task().state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(notifier_.cancelled, (std::vector<std::string>{id}));
  EXPECT_EQ(*store_.QueueDepth("ep1"), 0);
  v1::CancelRequest unknown;
  unknown.set_task_id("nope");
  EXPECT_EQ(api_->Cancel(unknown, LocalPrincipal()).status().code(), StatusCode::kNotFound);
}

TEST_F(ApiTest, AttemptsAndDeadlinesComeFromTheSubmitThenTheFunctionThenTheServiceDefault) {
  v1::RegisterFunctionRequest fr;
  fr.mutable_function()->set_name("patient");
  fr.mutable_function()->set_kernel("echo@1");
  fr.mutable_function()->set_max_attempts(5);
  fr.mutable_function()->set_timeout_ms(2000);
  ASSERT_TRUE(api_->RegisterFunction(fr, LocalPrincipal()).ok());
  auto plain = api_->Submit(Req("echo", "ep1", {IntValue(1)}), LocalPrincipal())->task_id();
  auto from_fn = api_->Submit(Req("patient", "ep1", {IntValue(1)}), LocalPrincipal())->task_id();
  auto req = Req("patient", "ep1", {IntValue(1)});
  req.set_max_attempts(1);
  req.set_timeout_ms(30);
  auto from_req = api_->Submit(req, LocalPrincipal())->task_id();
  auto recs = *store_.GetTasks({plain, from_fn, from_req}, false);
  EXPECT_EQ(recs[0]->max_attempts(), limits_.default_max_attempts);
  EXPECT_EQ(recs[0]->timeout_ms(), 0);
  EXPECT_EQ(recs[1]->max_attempts(), 5);
  EXPECT_EQ(recs[1]->timeout_ms(), 2000);
  EXPECT_EQ(recs[2]->max_attempts(), 1);
  EXPECT_EQ(recs[2]->timeout_ms(), 30);
  auto specs = *store_.LeaseTasks("ep1", 1, 10, NowNanos());
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[2].timeout_ms(), 30);  // the endpoint enforces it
  req.set_max_attempts(limits_.max_attempts_limit + 1);
  EXPECT_EQ(api_->Submit(req, LocalPrincipal()).status().code(), StatusCode::kInvalidArgument);
  fr.mutable_function()->set_name("impatient");
  fr.mutable_function()->set_max_attempts(-1);
  EXPECT_EQ(api_->RegisterFunction(fr, LocalPrincipal()).status().code(), StatusCode::kInvalidArgument);
  fr.mutable_function()->set_max_attempts(1);
  fr.mutable_function()->set_timeout_ms(-5);
  EXPECT_EQ(api_->RegisterFunction(fr, LocalPrincipal()).status().code(), StatusCode::kInvalidArgument);
  req.set_max_attempts(0);
  req.set_timeout_ms(-1);
  EXPECT_EQ(api_->Submit(req, LocalPrincipal()).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ApiTest, ARetriedSubmitWithTheSameIdempotencyKeyReturnsTheFirstTaskAndCreatesNothing) {
  CreditBook credit;
  LoomApi api(&store_, &hub_, &notifier_, limits_, &credit);
  credit.Open("ep1", "s1", 1, 10);
  auto req = Req("echo", "ep1", {IntValue(1)});
  req.set_idempotency_key("run-17/frame-3");
  auto first = api.Submit(req, LocalPrincipal());
  ASSERT_TRUE(first.ok());
  auto again = api.Submit(req, LocalPrincipal());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->task_id(), first->task_id());
  EXPECT_EQ(notifier_.dispatched.size(), 1u);  // the retry dispatched nothing
  EXPECT_EQ(*store_.InFlightCount("ep1"), 1);
  // The credit the retry took went back: the next task goes out at once.
  ASSERT_TRUE(api.Submit(Req("echo", "ep1", {IntValue(2)}), LocalPrincipal()).ok());
  EXPECT_EQ(notifier_.dispatched.size(), 2u);
  req.set_idempotency_key(std::string(limits_.max_idempotency_key_bytes + 1, 'k'));
  EXPECT_EQ(api.Submit(req, LocalPrincipal()).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ApiTest, DeleteTasksRemovesFinishedTasksAndRefusesUnfinishedOnes) {
  auto id = api_->Submit(Req("echo", "ep1", {IntValue(1)}), LocalPrincipal())->task_id();
  v1::DeleteTasksRequest del;
  del.add_task_ids(id);
  auto refused = api_->DeleteTasks(del, LocalPrincipal());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("cancel it"), std::string::npos);
  v1::CancelRequest c;
  c.set_task_id(id);
  ASSERT_TRUE(api_->Cancel(c, LocalPrincipal()).ok());
  auto deleted = api_->DeleteTasks(del, LocalPrincipal());
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->deleted(), 1);
  v1::GetTasksRequest get;
  get.add_task_ids(id);
  auto gone = api_->GetTasks(get, LocalPrincipal());
  EXPECT_EQ(gone.status().code(), StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find("expired after the result TTL"), std::string::npos);
}

// ---------------------------------------------------------------- capability routing

// Endpoints with devices and a group, functions with requirements (docs/ENDPOINTS.md).
class RoutingApiTest : public ApiTest {
 protected:
  void SetUp() override {
    ApiTest::SetUp();
    Member("cpu-a", "g", 2, {"cpu"});
    Member("cpu-b", "g", 2, {"cpu"});
    Member("gpu-a", "g", 1, {"cpu", "gpu"});
    Member("fpga-emu", "", 1, {"cpu"}, /*fpga_emulated=*/true);
    v1::RegisterFunctionRequest r;
    r.mutable_function()->set_name("train");
    r.mutable_function()->set_kernel("echo@1");
    r.mutable_function()->mutable_requirements()->add_device_classes("gpu");
    ASSERT_TRUE(api_->RegisterFunction(r, LocalPrincipal()).ok());
    r.mutable_function()->set_name("bragg");
    r.mutable_function()->mutable_requirements()->set_device_classes(0, "fpga");
    ASSERT_TRUE(api_->RegisterFunction(r, LocalPrincipal()).ok());
    Register("echo2", "echo@2");
  }

  void Member(const std::string& id, const std::string& group, int workers, std::vector<std::string> classes,
              bool fpga_emulated = false, const std::string& owner = "local") {
    v1::EndpointRecord ep;
    ep.set_id(id);
    ep.set_owner(owner);
    ep.set_group(group);
    ep.set_worker_count(workers);
    ep.set_status(v1::ENDPOINT_STATUS_ONLINE);
    *ep.add_kernels() = MakeKernelInfo("echo", "1", "", {Param("value", v1::VALUE_TYPE_ANY, "")}, v1::VALUE_TYPE_ANY);
    for (const auto& c : classes) {
      auto* d = ep.add_devices();
      d->set_kind(c);
      d->set_count(1);
    }
    if (fpga_emulated) {
      auto* d = ep.add_devices();
      d->set_kind("fpga");
      d->set_name("braggnn-sim");
      d->set_count(1);
      d->set_emulated(true);
    }
    ASSERT_TRUE(store_.PutEndpoint(ep).ok());
    ASSERT_TRUE(store_.PutEndpointAccess(ep).ok());
  }

  std::string EndpointOf(const std::string& task_id) {
    auto recs = store_.GetTasks({task_id}, false);
    EXPECT_TRUE(recs.ok() && (*recs)[0].has_value());
    return (*recs)[0]->endpoint();
  }
};

TEST_F(RoutingApiTest, ASubmitToAnEndpointWithoutTheDeviceClassFailsAtSubmitNamingIt) {
  auto r = api_->Submit(Req("train", "cpu-a", {IntValue(1)}), LocalPrincipal());
  ASSERT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("no device of class 'gpu'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("it has: cpu"), std::string::npos) << r.status().message();
  EXPECT_EQ(*store_.QueueDepth("cpu-a"), 0);
  EXPECT_TRUE(api_->Submit(Req("train", "gpu-a", {IntValue(1)}), LocalPrincipal()).ok());
  // An emulated FPGA is an FPGA: it says so in its record, and takes the FPGA function.
  EXPECT_TRUE(api_->Submit(Req("bragg", "fpga-emu", {IntValue(1)}), LocalPrincipal()).ok());
  EXPECT_EQ(api_->Submit(Req("bragg", "gpu-a", {IntValue(1)}), LocalPrincipal()).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(RoutingApiTest, AKernelOfferedOnlyAtAnotherVersionIsNamedWithTheVersionsOffered) {
  auto r = api_->Submit(Req("echo2", "cpu-a", {IntValue(1)}), LocalPrincipal());
  ASSERT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("offers kernel 'echo' only at version 1, not 'echo@2'"), std::string::npos)
      << r.status().message();
}

TEST_F(RoutingApiTest, RegistrationRejectsAnInvalidDeviceClass) {
  v1::RegisterFunctionRequest r;
  r.mutable_function()->set_name("bad");
  r.mutable_function()->set_kernel("echo@1");
  r.mutable_function()->mutable_requirements()->add_device_classes("GPU!");
  auto got = api_->RegisterFunction(r, LocalPrincipal());
  ASSERT_EQ(got.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(got.status().message().find("'GPU!'"), std::string::npos);
}

TEST_F(RoutingApiTest, AGroupSubmitSpreadsABatchByTasksPerWorker) {
  v1::SubmitBatchRequest batch;
  for (int i = 0; i < 10; ++i) *batch.add_tasks() = Req("echo", "group:g", {IntValue(i)});
  auto r = api_->SubmitBatch(batch, LocalPrincipal());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->endpoints_size(), 10);
  std::map<std::string, int> per;
  for (const auto& id : r->task_ids()) ++per[EndpointOf(id)];
  // 2 + 2 + 1 workers: 4, 4 and 2 tasks.
  EXPECT_EQ(per["cpu-a"], 4);
  EXPECT_EQ(per["cpu-b"], 4);
  EXPECT_EQ(per["gpu-a"], 2);
  EXPECT_EQ(r->endpoints(0), EndpointOf(r->task_ids(0)));
  // The next submit sees that load, read back from the store.
  auto one = api_->Submit(Req("echo", "group:g", {IntValue(1)}), LocalPrincipal());
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->endpoint(), "cpu-a");
}

TEST_F(RoutingApiTest, AGroupSubmitGoesOnlyToMembersWithTheDevicesAndThatAreLive) {
  auto gpu = api_->Submit(Req("train", "group:g", {IntValue(1)}), LocalPrincipal());
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  EXPECT_EQ(gpu->endpoint(), "gpu-a");
  // Its only GPU member goes offline: the GPU function waits for nothing, it is refused as
  // unavailable (it may come back), naming why each member cannot take it.
  auto rec = *store_.GetEndpoint("gpu-a");
  rec->set_status(v1::ENDPOINT_STATUS_OFFLINE);
  ASSERT_TRUE(store_.PutEndpoint(*rec).ok());
  auto none = api_->Submit(Req("train", "group:g", {IntValue(1)}), LocalPrincipal());
  ASSERT_EQ(none.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(none.status().message().find("gpu-a is offline"), std::string::npos) << none.status().message();
  EXPECT_NE(none.status().message().find("cpu-a has no device of class 'gpu'"), std::string::npos)
      << none.status().message();
  auto cpu = api_->Submit(Req("echo", "group:g", {IntValue(1)}), LocalPrincipal());
  ASSERT_TRUE(cpu.ok());
  EXPECT_NE(cpu->endpoint(), "gpu-a");
  // No member offers the kernel at all: the caller's to fix.
  auto v2 = api_->Submit(Req("echo2", "group:g", {IntValue(1)}), LocalPrincipal());
  ASSERT_EQ(v2.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(v2.status().message().find("only at version 1"), std::string::npos) << v2.status().message();
  auto nogroup = api_->Submit(Req("echo", "group:nope", {IntValue(1)}), LocalPrincipal());
  EXPECT_EQ(nogroup.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(api_->Submit(Req("echo", "group:", {IntValue(1)}), LocalPrincipal()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(RoutingApiTest, AGroupOnlyContainsTheEndpointsTheUserMayUse) {
  Member("bobs", "shared", 8, {"cpu"}, false, "bob");
  Member("carols", "shared", 1, {"cpu"}, false, "carol");
  auto rec = *store_.GetEndpoint("carols");
  rec->add_allowed_users("bob");
  ASSERT_TRUE(store_.PutEndpointAccess(*rec).ok());
  const Principal bob{"bob", false}, dave{"dave", false};
  v1::RegisterFunctionRequest r;
  r.mutable_function()->set_name("echo");
  r.mutable_function()->set_kernel("echo@1");
  ASSERT_TRUE(api_->RegisterFunction(r, bob).ok());
  ASSERT_TRUE(api_->RegisterFunction(r, dave).ok());
  v1::SubmitBatchRequest batch;
  for (int i = 0; i < 9; ++i) *batch.add_tasks() = Req("echo", "group:shared", {IntValue(i)});
  auto got = api_->SubmitBatch(batch, bob);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  std::map<std::string, int> per;
  for (const auto& e : got->endpoints()) ++per[e];
  EXPECT_EQ(per["bobs"], 8);
  EXPECT_EQ(per["carols"], 1);
  // Dave may use neither: to him the group does not exist.
  auto refused = api_->Submit(Req("echo", "group:shared", {IntValue(1)}), dave);
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(refused.status().message().find("bobs"), std::string::npos) << refused.status().message();
}

TEST_F(RoutingApiTest, GroupTasksCarryTheirRouteSoFailoverKeepsToWhatTheSubmitAllowed) {
  auto r = api_->Submit(Req("train", "group:g", {IntValue(1)}), LocalPrincipal());
  ASSERT_TRUE(r.ok());
  // Lose the GPU member: the task may go only where a GPU is.
  FailoverTarget cpu = MakeFailoverTarget(**store_.GetEndpoint("cpu-a"));
  EXPECT_EQ(*store_.FailoverQueued("gpu-a", cpu, 100, NowNanos()), 0);
  v1::EndpointRecord gpu2 = **store_.GetEndpoint("gpu-a");
  gpu2.set_id("gpu-b");
  EXPECT_EQ(*store_.FailoverQueued("gpu-a", MakeFailoverTarget(gpu2), 100, NowNanos()), 1);
  EXPECT_EQ(EndpointOf(r->task_id()), "gpu-b");
  // A plain submit without failover does not move.
  auto plain = api_->Submit(Req("echo", "cpu-a", {IntValue(1)}), LocalPrincipal());
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*store_.FailoverQueued("cpu-a", MakeFailoverTarget(gpu2), 100, NowNanos()), 0);
}

}  // namespace
}  // namespace loom::service
