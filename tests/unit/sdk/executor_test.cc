// loom::Executor against an in-process fake service on 127.0.0.1.
#include "loom/executor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "common/value.h"
#include "tests/unit/sdk/fake_loom_service.h"

namespace loom {
namespace {

using sdk_test::FakeLoomServer;
using sdk_test::FakeLoomState;
using ::testing::HasSubstr;

constexpr auto kWait = std::chrono::seconds(10);

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GT(server_.Start(), 0);
    state_.AddFunction("add", "add@1");
    state_.AddFunction("fail", "fail@1");
    state_.AddFunction("slow", "sleep@1");
    state_.set_on_submit(sdk_test::AutoComplete);
    ClientOptions options;
    options.address = server_.address();
    options.rpc_timeout = std::chrono::seconds(5);
    auto client = Client::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(client).value();
  }

  // Waits until the fake follows `n` tasks on its WaitResults calls.
  bool WaitUntilFollowed(size_t n) {
    return state_.WaitFor([&] {
      size_t followed = 0;
      for (const auto& r : state_.wait_requests_locked()) followed += r.size();
      return followed >= n;
    });
  }

  FakeLoomState state_;
  FakeLoomServer server_{state_};
  std::unique_ptr<Client> client_;
};

TEST_F(ExecutorTest, FuturesResolveWithTheResultValues) {
  Executor add(*client_, "ep", "add");
  std::vector<std::future<Value>> futures;
  for (int i = 0; i < 50; ++i) futures.push_back(add.Submit({IntValue(i), IntValue(2 * i)}));
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(futures[i].wait_for(kWait), std::future_status::ready);
    EXPECT_EQ(futures[i].get().int_value(), 3 * i);
  }
}

TEST_F(ExecutorTest, FailedTaskThrowsTaskErrorWithIdStateAndMessage) {
  Executor fail(*client_, "ep", "fail");
  std::future<Value> f = fail.Submit({StringValue("boom")});
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    ASSERT_EQ(state_.task_ids().size(), 1u);
    EXPECT_EQ(e.task_id(), state_.task_ids()[0]);
    EXPECT_EQ(e.state(), v1::TASK_STATE_FAILED);
    EXPECT_EQ(e.error(), "boom");
    EXPECT_EQ(e.code(), StatusCode::kOk);
    EXPECT_THAT(e.what(), HasSubstr("boom"));
  }
}

TEST_F(ExecutorTest, CancelledTaskThrowsTaskError) {
  Executor slow(*client_, "ep", "slow");
  std::future<Value> f = slow.Submit({DoubleValue(60)});
  ASSERT_TRUE(WaitUntilFollowed(1));
  auto cancelled = client_->Cancel(state_.task_ids()[0]);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status().ToString();
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.state(), v1::TASK_STATE_CANCELLED);
    EXPECT_EQ(e.task_id(), state_.task_ids()[0]);
  }
}

TEST_F(ExecutorTest, SubmitFailureThrowsTaskErrorWithTheServiceStatus) {
  Executor nope(*client_, "ep", "nope");
  std::future<Value> f = nope.Submit({});
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), StatusCode::kNotFound);
    EXPECT_TRUE(e.task_id().empty());
    EXPECT_EQ(e.error(), "function 'nope' is not registered");
  }
}

TEST_F(ExecutorTest, SubmitWhileTheServiceIsDownThrowsUnavailable) {
  Executor add(*client_, "ep", "add");
  server_.Stop();
  std::future<Value> f = add.Submit({IntValue(1), IntValue(2)});
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), StatusCode::kUnavailable);
  }
}

TEST_F(ExecutorTest, ManyOutstandingFuturesResolveInAnyCompletionOrder) {
  constexpr int kTasks = 2000;
  Executor slow(*client_, "ep", "slow");
  std::vector<std::future<Value>> futures;
  for (int i = 0; i < kTasks; ++i) futures.push_back(slow.Submit({IntValue(i)}));
  ASSERT_TRUE(WaitUntilFollowed(kTasks));
  std::vector<std::string> ids = state_.task_ids();
  std::mt19937 rng(42);
  std::shuffle(ids.begin(), ids.end(), rng);
  for (const auto& id : ids) state_.Complete(id, IntValue(state_.task(id).args(0).int_value() * 10));
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_EQ(futures[i].wait_for(kWait), std::future_status::ready) << i;
    EXPECT_EQ(futures[i].get().int_value(), 10 * i);
  }
}

TEST_F(ExecutorTest, KeepsStreamsCappedAndStillResolvesEveryFuture) {
  constexpr size_t kTasks = Executor::kMaxStreams + 8;
  Executor slow(*client_, "ep", "slow");
  std::vector<std::future<Value>> futures;
  for (size_t i = 0; i < kTasks; ++i) {
    futures.push_back(slow.Submit({IntValue(static_cast<int64_t>(i))}));
    // One at a time, so each would get a stream of its own.
    ASSERT_TRUE(state_.WaitFor([&] {
      if (state_.task_count_locked() < i + 1) return false;
      for (const auto& r : state_.wait_requests_locked()) {
        if (std::find(r.begin(), r.end(), state_.task_ids_locked_back()) != r.end()) return true;
      }
      return false;
    }));
  }
  EXPECT_GT(state_.wait_requests().size(), Executor::kMaxStreams);
  EXPECT_TRUE(state_.WaitFor([&] { return state_.active_waits_locked() <= static_cast<int>(Executor::kMaxStreams); }));
  for (const auto& id : state_.task_ids()) state_.Complete(id, IntValue(state_.task(id).args(0).int_value()));
  for (size_t i = 0; i < kTasks; ++i) {
    ASSERT_EQ(futures[i].wait_for(kWait), std::future_status::ready) << i;
    EXPECT_EQ(futures[i].get().int_value(), static_cast<int64_t>(i));
  }
}

TEST_F(ExecutorTest, ResumesAfterTheServiceRestarts) {
  Executor slow(*client_, "ep", "slow");
  std::vector<std::future<Value>> futures;
  for (int i = 0; i < 4; ++i) futures.push_back(slow.Submit({IntValue(i)}));
  ASSERT_TRUE(WaitUntilFollowed(4));
  const std::vector<std::string> ids = state_.task_ids();
  auto value_of = [&](const std::string& id) { return IntValue(state_.task(id).args(0).int_value() + 100); };
  state_.Complete(ids[0], value_of(ids[0]));
  ASSERT_EQ(futures[0].wait_for(kWait), std::future_status::ready);

  const int port = server_.port();
  server_.Stop();
  state_.Complete(ids[1], value_of(ids[1]));
  state_.Complete(ids[2], value_of(ids[2]));
  ASSERT_EQ(server_.Start(port), port);
  state_.Complete(ids[3], value_of(ids[3]));
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(futures[i].wait_for(kWait), std::future_status::ready) << i;
    EXPECT_EQ(futures[i].get().int_value(), 100 + i);
  }
}

TEST_F(ExecutorTest, SubmitOptionsReachTheService) {
  Executor slow(*client_, "ep", "slow");
  std::future<Value> f =
      slow.Submit({IntValue(1)}, {}, {.idempotency_key = "e-1", .max_attempts = 4, .timeout_ms = 900});
  ASSERT_TRUE(WaitUntilFollowed(1));
  const v1::TaskRecord r = state_.task(state_.task_ids().at(0));
  EXPECT_EQ(r.idempotency_key(), "e-1");
  EXPECT_EQ(r.max_attempts(), 4);
  EXPECT_EQ(r.timeout_ms(), 900);
}

TEST_F(ExecutorTest, SubmitsWithTheSameKeyShareOneTaskAndEveryFutureResolves) {
  Executor slow(*client_, "ep", "slow");
  std::future<Value> first = slow.Submit({IntValue(1)}, {}, {.idempotency_key = "shared"});
  std::future<Value> second = slow.Submit({IntValue(1)}, {}, {.idempotency_key = "shared"});
  ASSERT_TRUE(state_.WaitFor([&] { return state_.submit_calls_locked() >= 1 && state_.task_count_locked() == 1; }));
  ASSERT_TRUE(WaitUntilFollowed(1));
  // Whether the second submit was answered before or after this, its future gets the result.
  state_.Complete(state_.task_ids().at(0), IntValue(42));
  ASSERT_EQ(first.wait_for(kWait), std::future_status::ready);
  ASSERT_EQ(second.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(first.get().int_value(), 42);
  EXPECT_EQ(second.get().int_value(), 42);
  EXPECT_EQ(state_.task_ids().size(), 1u);
}

TEST_F(ExecutorTest, FailedTaskErrorCarriesTheFailureKind) {
  state_.set_on_submit([](v1::TaskRecord& r) {
    r.set_state(v1::TASK_STATE_FAILED);
    r.set_failure(v1::FAILURE_KIND_TIMEOUT);
    r.set_error("ran past its deadline of 900 ms");
  });
  Executor slow(*client_, "ep", "slow");
  std::future<Value> f = slow.Submit({IntValue(1)}, {}, {.timeout_ms = 900});
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.state(), v1::TASK_STATE_FAILED);
    EXPECT_EQ(e.failure(), v1::FAILURE_KIND_TIMEOUT);
    EXPECT_EQ(e.error(), "ran past its deadline of 900 ms");
  }
}

TEST_F(ExecutorTest, KeyedTaskIsResubmittedAfterUnavailableAndRunsOnce) {
  state_.FailNextSubmits(2, grpc::StatusCode::UNAVAILABLE, /*after_commit=*/true);
  Executor add(*client_, "ep", "add");
  std::future<Value> f = add.Submit({IntValue(1), IntValue(2)}, {}, {.idempotency_key = "exec-once"});
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(f.get().int_value(), 3);
  EXPECT_EQ(state_.submit_calls(), 3);
  EXPECT_EQ(state_.task_ids().size(), 1u);
}

TEST_F(ExecutorTest, TaskWithoutAKeyIsNotResubmittedAfterUnavailable) {
  state_.FailNextSubmits(1, grpc::StatusCode::UNAVAILABLE);
  Executor add(*client_, "ep", "add");
  std::future<Value> f = add.Submit({IntValue(1), IntValue(2)});
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), StatusCode::kUnavailable);
    EXPECT_TRUE(e.task_id().empty());
  }
  EXPECT_EQ(state_.submit_calls(), 1);
}

TEST_F(ExecutorTest, KeyedTaskFailsOnceSubmitRetriesAreSpent) {
  ClientOptions options = client_->options();
  options.submit_retries = 1;
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok());
  state_.FailNextSubmits(5, grpc::StatusCode::DEADLINE_EXCEEDED);
  Executor add(**client, "ep", "add");
  std::future<Value> f = add.Submit({IntValue(1), IntValue(2)}, {}, {.idempotency_key = "k"});
  ASSERT_EQ(f.wait_for(kWait), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), StatusCode::kDeadlineExceeded);
  }
  EXPECT_EQ(state_.submit_calls(), 2);
}

TEST_F(ExecutorTest, DestructorAbandonsTasksWaitingToBeResubmitted) {
  state_.FailNextSubmits(1000);
  std::future<Value> f;
  {
    Executor add(*client_, "ep", "add");
    f = add.Submit({IntValue(1), IntValue(2)}, {}, {.idempotency_key = "k"});
    // Resubmitted once: the executor now waits out a 200 ms backoff (or, rarely, the second
    // call is still being answered) when it is destroyed.
    ASSERT_TRUE(state_.WaitFor([&] { return state_.submit_calls_locked() >= 2; }));
  }
  ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  try {
    f.get();
    FAIL() << "expected TaskError";
  } catch (const TaskError& e) {
    EXPECT_TRUE(e.task_id().empty());
    // CANCELLED when destroyed during the backoff; the failed call's own status when its reply
    // raced with the destructor (a reply after shutdown began is never retried).
    EXPECT_THAT(e.code(), ::testing::AnyOf(StatusCode::kCancelled, StatusCode::kUnavailable));
  }
  EXPECT_TRUE(state_.task_ids().empty());
}

TEST_F(ExecutorTest, DestructorAbandonsOutstandingFuturesWithoutHanging) {
  std::vector<std::future<Value>> followed;
  std::vector<std::future<Value>> queued;
  {
    Executor slow(*client_, "ep", "slow");
    for (int i = 0; i < 5; ++i) followed.push_back(slow.Submit({IntValue(i)}));
    ASSERT_TRUE(WaitUntilFollowed(5));
    for (int i = 0; i < 200; ++i) queued.push_back(slow.Submit({IntValue(i)}));
  }
  for (auto& f : followed) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    try {
      f.get();
      FAIL() << "expected TaskError";
    } catch (const TaskError& e) {
      EXPECT_EQ(e.code(), StatusCode::kCancelled);
      EXPECT_FALSE(e.task_id().empty());
    }
  }
  // Whatever had not been submitted or followed yet is resolved too (with an error).
  for (auto& f : queued) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
    EXPECT_THROW(f.get(), TaskError);
  }
}

}  // namespace
}  // namespace loom
