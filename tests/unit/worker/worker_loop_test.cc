// Unit tests for worker/worker_loop.h: ordering, batching and flush rules, failure reporting and
// stopping, with a fake transport and a fake clock (no sockets, no sleeps). The real process on
// a real socket is tested in worker_process_test.cc.
#include "worker/worker_loop.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/kernel_api.h"
#include "common/value.h"
#include "worker/builtin_kernels.h"

namespace loom::worker {
namespace {

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

// Scripted incoming messages and a record of what was sent. Receive hands out the script in
// order; once it is used up, a waiting Receive counts as the worker going idle.
class FakeWorkerTransport : public WorkerTransport {
 public:
  Status Send(const v1::WorkerEnvelope& envelope) override {
    if (send_failures_left > 0) {
      --send_failures_left;
      return Unavailable("fake: would block");
    }
    sent.push_back(envelope);
    return Status::Ok();
  }

  Result<std::optional<v1::WorkerEnvelope>> Receive(std::chrono::milliseconds timeout) override {
    if (timeout.count() > 0 && on_wait) on_wait();
    if (incoming.empty()) {
      if (timeout.count() > 0) ++idle_waits;
      return std::optional<v1::WorkerEnvelope>();
    }
    auto next = std::move(incoming.front());
    incoming.pop_front();
    return next;
  }

  void AddTasks(const std::vector<v1::TaskSpec>& tasks) {
    v1::WorkerEnvelope e;
    for (const auto& t : tasks) *e.mutable_tasks()->add_tasks() = t;
    incoming.emplace_back(std::optional<v1::WorkerEnvelope>(std::move(e)));
  }

  // Every result sent, in order, across all batches.
  std::vector<v1::TaskResult> Results() const {
    std::vector<v1::TaskResult> out;
    for (const auto& e : sent) {
      for (const auto& r : e.results().results()) out.push_back(r);
    }
    return out;
  }

  // The size of each result batch sent.
  std::vector<int> BatchSizes() const {
    std::vector<int> out;
    for (const auto& e : sent) {
      if (e.has_results()) out.push_back(e.results().results_size());
    }
    return out;
  }

  std::deque<Result<std::optional<v1::WorkerEnvelope>>> incoming;
  std::vector<v1::WorkerEnvelope> sent;
  int idle_waits = 0;
  int send_failures_left = 0;
  std::function<void()> on_wait;  // called when the worker waits for a message
};

v1::TaskSpec Task(const std::string& id, const std::string& kernel, std::vector<Value> args = {}) {
  v1::TaskSpec t;
  t.set_task_id(id);
  t.set_kernel(kernel);
  for (auto& a : args) *t.add_args() = std::move(a);
  return t;
}

std::vector<v1::TaskSpec> EchoTasks(int n, const std::string& prefix = "t") {
  std::vector<v1::TaskSpec> out;
  for (int i = 0; i < n; ++i) out.push_back(Task(prefix + std::to_string(i), "echo@1", {IntValue(i)}));
  return out;
}

class WorkerLoopTest : public ::testing::Test {
 protected:
  WorkerLoopTest() {
    LOOM_CHECK(RegisterBuiltinKernels(&registry_).ok());
    // tick@1(micros): advances the fake clock, like a kernel that takes that long.
    LOOM_CHECK(registry_
                   .Register({MakeKernelInfo("tick", "1", "advances the fake clock",
                                             {Param("micros", v1::VALUE_TYPE_INT, "how far")}, v1::VALUE_TYPE_NULL),
                              [this](const KernelCall& call) -> Result<Value> {
                                now_ += call.param(0)->int_value() * 1000;
                                return NullValue();
                              }})
                   .ok());
    LOOM_CHECK(registry_
                   .Register({MakeKernelInfo("throw", "1", "throws", {}, v1::VALUE_TYPE_NULL),
                              [](const KernelCall&) -> Result<Value> { throw std::runtime_error("boom"); }})
                   .ok());
    LOOM_CHECK(registry_
                   .Register({MakeKernelInfo("throw_int", "1", "throws a non-std exception", {}, v1::VALUE_TYPE_NULL),
                              [](const KernelCall&) -> Result<Value> { throw 7; }})
                   .ok());
    // stop@1(): as if SIGTERM arrived while this task ran.
    LOOM_CHECK(registry_
                   .Register({MakeKernelInfo("stop", "1", "requests a stop", {}, v1::VALUE_TYPE_NULL),
                              [this](const KernelCall&) -> Result<Value> {
                                stop_ = true;
                                return NullValue();
                              }})
                   .ok());
    // peek@1(): what the running slot says while this kernel runs, as "<id>#<sequence>".
    LOOM_CHECK(registry_
                   .Register({MakeKernelInfo("peek", "1", "reads the running slot", {}, v1::VALUE_TYPE_STRING),
                              [this](const KernelCall&) -> Result<Value> {
                                auto r = slot_.Read();
                                if (r.state != RunningSlot::Reading::State::kRunning) return StringValue("idle");
                                return StringValue(r.task_id + "#" + std::to_string(r.sequence));
                              }})
                   .ok());
    hello_.set_pid(1234);
    hello_.add_load_errors("plugin 'x.so': gone");
  }

  WorkerLoopOptions Options() {
    WorkerLoopOptions o;
    o.now = [this] { return now_; };
    // Stop once the script is used up and the worker has gone idle, or when asked to.
    o.should_stop = [this] { return stop_ || transport_.idle_waits > 0; };
    return o;
  }

  Status RunLoop(WorkerLoopOptions options) {
    WorkerLoop loop(registry_, transport_, std::move(options));
    Status s = loop.Run(hello_);
    stats_ = loop.stats();
    return s;
  }
  Status RunLoop() { return RunLoop(Options()); }

  KernelRegistry registry_;
  RunningSlot slot_ = std::move(RunningSlot::Create()).value();
  FakeWorkerTransport transport_;
  v1::WorkerHello hello_;
  WorkerLoopStats stats_;
  int64_t now_ = 1'700'000'000'000'000'000;
  bool stop_ = false;
};

TEST_F(WorkerLoopTest, SendsHelloFirst) {
  ASSERT_TRUE(RunLoop().ok());
  ASSERT_FALSE(transport_.sent.empty());
  ASSERT_TRUE(transport_.sent[0].has_hello());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(transport_.sent[0].hello(), hello_));
  EXPECT_EQ(transport_.sent.size(), 1u);  // and nothing else when there is no work
}

TEST_F(WorkerLoopTest, ReturnsEveryResultInTaskOrderWithTimestamps) {
  transport_.AddTasks(EchoTasks(100));
  ASSERT_TRUE(RunLoop().ok());
  const auto results = transport_.Results();
  ASSERT_EQ(results.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    const auto& r = results[i];
    EXPECT_EQ(r.task_id(), "t" + std::to_string(i));
    EXPECT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r.value().int_value(), i);
    ASSERT_EQ(r.timestamps_size(), 2);
    EXPECT_EQ(r.timestamps(0).stage(), "worker_started");
    EXPECT_EQ(r.timestamps(0).unix_nanos(), now_);
    EXPECT_EQ(r.timestamps(1).stage(), "kernel_finished");
    EXPECT_EQ(r.timestamps(1).unix_nanos(), now_);
  }
  // The clock did not move, so the only flush was when the queue ran empty.
  EXPECT_EQ(transport_.BatchSizes(), std::vector<int>{100});
  EXPECT_EQ(stats_.tasks_run, 100);
  EXPECT_EQ(stats_.results_sent, 100);
  EXPECT_EQ(stats_.batches_sent, 1);
}

TEST_F(WorkerLoopTest, TimestampsBracketTheKernel) {
  transport_.AddTasks({Task("slow", "tick@1", {IntValue(250)})});
  const int64_t start = now_;
  ASSERT_TRUE(RunLoop().ok());
  const auto results = transport_.Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].timestamps(0).unix_nanos(), start);
  EXPECT_EQ(results[0].timestamps(1).unix_nanos(), start + 250'000);
}

TEST_F(WorkerLoopTest, TheRunningSlotNamesEachTaskOnlyWhileItsKernelRuns) {
  transport_.AddTasks({Task("p1", "peek@1"), Task("boom", "throw@1"), Task("p2", "peek@1")});
  // Idle whenever the worker waits for work, and so whenever its results are on their way.
  std::vector<RunningSlot::Reading::State> when_waiting;
  transport_.on_wait = [&] { when_waiting.push_back(slot_.Read().state); };
  WorkerLoopOptions o = Options();
  o.running_slot = &slot_;
  ASSERT_TRUE(RunLoop(std::move(o)).ok());
  const auto results = transport_.Results();
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].value().string_value(), "p1#1");
  EXPECT_FALSE(results[1].ok());
  EXPECT_EQ(results[2].value().string_value(), "p2#3");
  EXPECT_EQ(slot_.Read().state, RunningSlot::Reading::State::kIdle);  // a kernel that threw ended its slot too
  EXPECT_EQ(when_waiting, std::vector<RunningSlot::Reading::State>(2, RunningSlot::Reading::State::kIdle));
}

TEST_F(WorkerLoopTest, WithoutARunningSlotKernelsRunAsBefore) {
  transport_.AddTasks({Task("p1", "peek@1")});
  ASSERT_TRUE(RunLoop().ok());
  ASSERT_EQ(transport_.Results().size(), 1u);
  EXPECT_EQ(transport_.Results()[0].value().string_value(), "idle");
}

TEST_F(WorkerLoopTest, LongBatchFlushesOnceAMillisecondHasPassed) {
  // 10 tasks of 0.4 ms: the first flush interval ends after the third (1.2 ms), and so on;
  // the last one goes out when the queue is empty.
  std::vector<v1::TaskSpec> tasks;
  for (int i = 0; i < 10; ++i) tasks.push_back(Task("t" + std::to_string(i), "tick@1", {IntValue(400)}));
  transport_.AddTasks(tasks);
  ASSERT_TRUE(RunLoop().ok());
  EXPECT_EQ(transport_.BatchSizes(), (std::vector<int>{3, 3, 3, 1}));
  const auto results = transport_.Results();
  ASSERT_EQ(results.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(results[i].task_id(), "t" + std::to_string(i));
}

TEST_F(WorkerLoopTest, IdleTimeBeforeABatchDoesNotCountTowardsTheFlushInterval) {
  // The worker waits 5 s after its hello before the batch arrives.
  transport_.on_wait = [this] { now_ += 5'000'000'000; };
  transport_.AddTasks(EchoTasks(3));
  ASSERT_TRUE(RunLoop().ok());
  EXPECT_EQ(transport_.BatchSizes(), std::vector<int>{3});
}

TEST_F(WorkerLoopTest, AtMost256ResultsPerBatch) {
  transport_.AddTasks(EchoTasks(600));
  ASSERT_TRUE(RunLoop().ok());
  EXPECT_EQ(transport_.BatchSizes(), (std::vector<int>{256, 256, 88}));
  const auto results = transport_.Results();
  ASSERT_EQ(results.size(), 600u);
  for (int i = 0; i < 600; ++i) ASSERT_EQ(results[i].task_id(), "t" + std::to_string(i));
}

TEST_F(WorkerLoopTest, BatchesThatArriveTogetherRunInArrivalOrder) {
  transport_.AddTasks(EchoTasks(3, "a"));
  transport_.AddTasks(EchoTasks(2, "b"));
  ASSERT_TRUE(RunLoop().ok());
  std::vector<std::string> ids;
  for (const auto& r : transport_.Results()) ids.push_back(r.task_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"a0", "a1", "a2", "b0", "b1"}));
}

TEST_F(WorkerLoopTest, FailuresBecomeFailedResultsAndTheLoopGoesOn) {
  transport_.AddTasks({Task("f1", "fail@1", {StringValue("bad input: frame 7 is empty")}), Task("f2", "throw@1"),
                       Task("f3", "throw_int@1"), Task("f4", "nope@1"),
                       Task("f5", "add@1", {StringValue("x"), IntValue(1)}), Task("ok", "echo@1", {IntValue(5)})});
  ASSERT_TRUE(RunLoop().ok());
  const auto r = transport_.Results();
  ASSERT_EQ(r.size(), 6u);
  EXPECT_FALSE(r[0].ok());
  EXPECT_EQ(r[0].error(), "bad input: frame 7 is empty");
  EXPECT_FALSE(r[0].has_value());
  EXPECT_EQ(r[0].timestamps_size(), 2);
  EXPECT_FALSE(r[1].ok());
  EXPECT_EQ(r[1].error(), "kernel threw: boom");
  EXPECT_FALSE(r[2].ok());
  EXPECT_CONTAINS(r[2].error(), "kernel threw an exception that is not a std::exception");
  EXPECT_FALSE(r[3].ok());
  EXPECT_CONTAINS(r[3].error(), "kernel 'nope@1' is not loaded in this worker");
  EXPECT_FALSE(r[4].ok());
  EXPECT_CONTAINS(r[4].error(), "parameter 'a' must be number or tensor, got string");
  EXPECT_TRUE(r[5].ok());
  EXPECT_EQ(r[5].value().int_value(), 5);
}

TEST_F(WorkerLoopTest, GarbageAndUnexpectedEnvelopesAreCountedAndSkipped) {
  transport_.AddTasks(EchoTasks(1, "a"));
  transport_.incoming.emplace_back(Status(StatusCode::kDataLoss, "fake garbage"));
  v1::WorkerEnvelope stray;
  stray.mutable_hello()->set_pid(1);
  transport_.incoming.emplace_back(std::optional<v1::WorkerEnvelope>(stray));
  transport_.incoming.emplace_back(std::optional<v1::WorkerEnvelope>(v1::WorkerEnvelope()));  // no body
  transport_.AddTasks(EchoTasks(1, "b"));
  ASSERT_TRUE(RunLoop().ok());
  EXPECT_EQ(stats_.garbage_frames, 1);
  EXPECT_EQ(stats_.ignored_messages, 2);
  std::vector<std::string> ids;
  for (const auto& r : transport_.Results()) ids.push_back(r.task_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"a0", "b0"}));
}

TEST_F(WorkerLoopTest, BrokenTransportEndsTheLoopWithItsError) {
  transport_.incoming.emplace_back(Internal("fake: socket gone"));
  Status s = RunLoop();
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "fake: socket gone");
}

TEST_F(WorkerLoopTest, RetriesSendsThatWouldBlock) {
  transport_.send_failures_left = 3;
  transport_.AddTasks(EchoTasks(2));
  ASSERT_TRUE(RunLoop().ok());
  ASSERT_TRUE(transport_.sent[0].has_hello());
  EXPECT_EQ(transport_.Results().size(), 2u);  // each result exactly once
}

TEST_F(WorkerLoopTest, StopFlushesFinishedResultsAndDropsQueuedTasks) {
  transport_.AddTasks({Task("a", "echo@1", {IntValue(1)}), Task("s", "stop@1"), Task("b", "echo@1", {IntValue(2)}),
                       Task("c", "echo@1", {IntValue(3)})});
  ASSERT_TRUE(RunLoop().ok());
  std::vector<std::string> ids;
  for (const auto& r : transport_.Results()) ids.push_back(r.task_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "s"}));
  EXPECT_EQ(stats_.tasks_dropped, 2);
}

TEST_F(WorkerLoopTest, SendCutShortByAStopIsRetriedOnceOnTheWayOut) {
  // From the first wait on, the next send fails, as a send interrupted by SIGTERM does.
  transport_.on_wait = [this] { transport_.send_failures_left = 1; };
  transport_.AddTasks({Task("a", "echo@1", {IntValue(1)}), Task("s", "stop@1")});
  ASSERT_TRUE(RunLoop().ok());
  std::vector<std::string> ids;
  for (const auto& r : transport_.Results()) ids.push_back(r.task_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "s"}));
}

TEST_F(WorkerLoopTest, SplitsBatchesToStayUnderTheMessageLimit) {
  WorkerLoopOptions o = Options();
  o.max_message_bytes = 1000;
  std::vector<v1::TaskSpec> tasks;
  for (int i = 0; i < 10; ++i)
    tasks.push_back(Task("t" + std::to_string(i), "echo@1", {StringValue(std::string(300, 'x'))}));
  transport_.AddTasks(tasks);
  ASSERT_TRUE(RunLoop(std::move(o)).ok());
  EXPECT_EQ(transport_.Results().size(), 10u);
  EXPECT_GT(transport_.BatchSizes().size(), 3u);
  for (const auto& e : transport_.sent) EXPECT_LE(e.ByteSizeLong(), 1000u);
}

TEST_F(WorkerLoopTest, ResultLargerThanTheMessageLimitBecomesAFailure) {
  WorkerLoopOptions o = Options();
  o.max_message_bytes = 1000;
  transport_.AddTasks(
      {Task("big", "echo@1", {BytesValue(std::string(5000, 'x'))}), Task("small", "echo@1", {IntValue(1)})});
  ASSERT_TRUE(RunLoop(std::move(o)).ok());
  const auto r = transport_.Results();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].task_id(), "big");
  EXPECT_FALSE(r[0].ok());
  EXPECT_FALSE(r[0].has_value());
  EXPECT_CONTAINS(r[0].error(), "more than the 1000-byte message limit");
  EXPECT_EQ(r[0].timestamps_size(), 2);
  EXPECT_TRUE(r[1].ok());
  for (const auto& e : transport_.sent) EXPECT_LE(e.ByteSizeLong(), 1000u);
}

TEST(RunTaskTest, RecordsTheClockBeforeAndAfterTheKernel) {
  KernelRegistry registry;
  ASSERT_TRUE(RegisterBuiltinKernels(&registry).ok());
  int64_t t = 100;
  auto result = RunTask(registry, Task("x", "echo@1", {StringValue("v")}), [&t] { return t++; });
  EXPECT_EQ(result.task_id(), "x");
  EXPECT_TRUE(result.ok());
  EXPECT_EQ(result.value().string_value(), "v");
  EXPECT_TRUE(result.error().empty());
  ASSERT_EQ(result.timestamps_size(), 2);
  EXPECT_EQ(result.timestamps(0).unix_nanos(), 100);
  EXPECT_EQ(result.timestamps(1).unix_nanos(), 101);
}

}  // namespace
}  // namespace loom::worker
