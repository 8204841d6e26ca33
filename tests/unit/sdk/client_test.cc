// loom::Client against an in-process fake service on 127.0.0.1 (tests/unit/sdk/fake_loom_service.h).
#include "loom/client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/util.h"
#include "common/value.h"
#include "sdk_cpp/internal.h"
#include "tests/unit/sdk/fake_loom_service.h"

namespace loom {
namespace {

using sdk_test::FakeLoomServer;
using sdk_test::FakeLoomState;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

// Records what StreamResults delivers, for a test thread to wait on.
class Deliveries {
 public:
  bool Add(const v1::TaskRecord& r) {
    std::lock_guard<std::mutex> lock(mu_);
    ids_.push_back(r.id());
    cv_.notify_all();
    return true;
  }
  bool WaitForCount(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return ids_.size() >= n; });
  }
  std::vector<std::string> ids() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ids_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> ids_;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GT(server_.Start(), 0);
    state_.AddFunction("add", "add@1");
  }

  std::unique_ptr<Client> Connect(ClientOptions options = {}) {
    options.address = server_.address();
    options.rpc_timeout = std::chrono::seconds(5);
    auto client = Client::Connect(options);
    if (!client.ok()) {
      ADD_FAILURE() << client.status().ToString();
      return nullptr;
    }
    return std::move(client).value();
  }

  std::vector<std::string> SubmitAdds(Client& client, int n) {
    std::vector<v1::SubmitRequest> tasks;
    for (int i = 0; i < n; ++i) tasks.push_back(MakeSubmitRequest("ep", "add", {IntValue(i), IntValue(2 * i)}));
    auto ids = client.SubmitBatch(std::move(tasks));
    EXPECT_TRUE(ids.ok()) << ids.status().ToString();
    return ids.ok() ? *ids : std::vector<std::string>{};
  }

  FakeLoomState state_;
  FakeLoomServer server_{state_};
};

TEST_F(ClientTest, ConnectFailsWithUnavailableNamingTheAddress) {
  ClientOptions options;
  options.address = "127.0.0.1:" + std::to_string(FreeLoopbackPort());
  options.rpc_timeout = std::chrono::milliseconds(300);
  auto client = Client::Connect(options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kUnavailable);
  EXPECT_THAT(client.status().message(), HasSubstr(options.address));
}

TEST_F(ClientTest, PassesTheServiceStatusCodeAndMessageThrough) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto f = client->GetFunction("nope");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(f.status().message(), "function 'nope' is not registered; registered: add");

  auto t = client->GetStatus("task-9999");
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.status().message(), "task 'task-9999' does not exist");
}

TEST_F(ClientTest, RegisterFunctionReportsWhetherItCreatedTheFunction) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  bool created = false;
  auto f = client->RegisterFunction("echo", "echo@1", "returns its input", {{"scale", IntValue(2)}}, &created);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(created);
  EXPECT_EQ(f->kernel(), "echo@1");
  EXPECT_EQ(f->config().at("scale").int_value(), 2);

  auto again = client->RegisterFunction("echo", "echo@1", "", {}, &created);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(created);

  auto conflict = client->RegisterFunction("echo", "add@1");
  EXPECT_EQ(conflict.status().code(), StatusCode::kAlreadyExists);

  auto listed = client->ListFunctions();
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 2u);
}

TEST_F(ClientTest, CreatesListsAndGetsEndpoints) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto created = client->CreateEndpoint("laptop", "local");
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->id(), "local");
  auto got = client->GetEndpoint("local");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->name(), "laptop");
  auto listed = client->ListEndpoints();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(client->GetEndpoint("elsewhere").status().code(), StatusCode::kNotFound);
}

TEST_F(ClientTest, SubmitBatchSplitsIntoChunksOfMaxBatchAndKeepsInputOrder) {
  ClientOptions options;
  options.max_batch = 3;
  auto client = Connect(options);
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids = SubmitAdds(*client, 10);
  EXPECT_THAT(state_.submit_batch_sizes(), ElementsAre(3u, 3u, 3u, 1u));
  ASSERT_EQ(ids.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(state_.task(ids[i]).args(0).int_value(), i) << "id " << i << " is out of order";
  }
}

TEST_F(ClientTest, SubmitBatchSplitsByMessageBytes) {
  ClientOptions options;
  options.max_message_bytes = 64 << 10;
  auto client = Connect(options);
  ASSERT_NE(client, nullptr);
  std::vector<v1::SubmitRequest> tasks;
  for (int i = 0; i < 10; ++i) {
    tasks.push_back(MakeSubmitRequest("ep", "add", {StringValue(std::string(20000, 'x')), IntValue(i)}));
  }
  auto ids = client->SubmitBatch(std::move(tasks));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  ASSERT_EQ(ids->size(), 10u);
  const std::vector<size_t> sizes = state_.submit_batch_sizes();
  EXPECT_GT(sizes.size(), 1u);
  size_t total = 0;
  for (size_t s : sizes) {
    EXPECT_LE(s * 20000, size_t{64} << 10);
    total += s;
  }
  EXPECT_EQ(total, 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(state_.task((*ids)[i]).args(1).int_value(), i);
}

TEST_F(ClientTest, SubmitBatchRejectsATaskOverTheMessageLimitBeforeSendingAnything) {
  ClientOptions options;
  options.max_message_bytes = 64 << 10;
  auto client = Connect(options);
  ASSERT_NE(client, nullptr);
  std::vector<v1::SubmitRequest> tasks;
  tasks.push_back(MakeSubmitRequest("ep", "add", {IntValue(1), IntValue(2)}));
  tasks.push_back(MakeSubmitRequest("ep", "add", {StringValue(std::string(100000, 'x'))}));
  auto ids = client->SubmitBatch(std::move(tasks));
  EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("item 1"));
  EXPECT_TRUE(state_.submit_batch_sizes().empty());
}

TEST_F(ClientTest, SubmitAndGetStatusAndCancel) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto id = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {{"scale", DoubleValue(0.5)}});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto record = client->GetStatus(*id);
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->state(), v1::TASK_STATE_RECEIVED);
  EXPECT_EQ(state_.task(*id).kwargs().at("scale").double_value(), 0.5);
  auto cancelled = client->Cancel(*id);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(client->Submit("ep", "nope", {}).status().code(), StatusCode::kNotFound);
}

TEST_F(ClientTest, GetResultReturnsNulloptWhenTheTaskDoesNotFinishInTime) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto id = client->Submit("ep", "add", {IntValue(1), IntValue(2)});
  ASSERT_TRUE(id.ok());
  auto result = client->GetResult(*id, std::chrono::milliseconds(100));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_FALSE(result->has_value());
  auto now = client->GetResult(*id, std::chrono::milliseconds(0));
  ASSERT_TRUE(now.ok());
  EXPECT_FALSE(now->has_value());
}

TEST_F(ClientTest, GetResultReturnsTheRecordWhenTheTaskFinishes) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto id = client->Submit("ep", "add", {IntValue(3), IntValue(4)});
  ASSERT_TRUE(id.ok());
  std::thread finisher([&] {
    ASSERT_TRUE(state_.WaitFor([&] { return state_.wait_calls_locked() >= 1; }));
    state_.Complete(*id, IntValue(7));
  });
  auto result = client->GetResult(*id, std::chrono::seconds(10));
  finisher.join();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ((*result)->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*result)->result().int_value(), 7);
  EXPECT_EQ(client->GetResult("task-9999", std::chrono::seconds(1)).status().code(), StatusCode::kNotFound);
}

TEST_F(ClientTest, StreamResultsDeliversInCompletionOrderAndEachIdOnce) {
  state_.set_duplicate_results(true);
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids = SubmitAdds(*client, 5);
  ASSERT_EQ(ids.size(), 5u);
  state_.Complete(ids[3], IntValue(9));
  state_.Fail(ids[1], "boom");

  Deliveries got;
  std::vector<std::string> asked = ids;
  asked.push_back(ids[0]);  // a duplicate in the request is delivered once too
  Status st;
  std::thread streamer([&] {
    st = client->StreamResults(
        asked, [&](const v1::TaskRecord& r) { return got.Add(r); }, std::chrono::seconds(10));
  });
  ASSERT_TRUE(got.WaitForCount(2));
  state_.Complete(ids[4], IntValue(12));
  state_.Complete(ids[0], IntValue(0));
  state_.Complete(ids[2], IntValue(6));
  streamer.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_THAT(got.ids(), ElementsAre(ids[3], ids[1], ids[4], ids[0], ids[2]));
}

TEST_F(ClientTest, StreamResultsStopsWhenTheCallbackReturnsFalse) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids = SubmitAdds(*client, 3);
  for (const auto& id : ids) state_.Complete(id, IntValue(1));
  int calls = 0;
  Status st = client->StreamResults(
      ids,
      [&](const v1::TaskRecord&) {
        ++calls;
        return false;
      },
      std::chrono::seconds(10));
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(calls, 1);
}

TEST_F(ClientTest, StreamResultsReturnsDeadlineExceededWhenTasksDoNotFinish) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids = SubmitAdds(*client, 3);
  state_.Complete(ids[1], IntValue(3));
  Deliveries got;
  Status st = client->StreamResults(
      ids, [&](const v1::TaskRecord& r) { return got.Add(r); }, std::chrono::milliseconds(200));
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded);
  EXPECT_THAT(st.message(), HasSubstr("2 of 3"));
  EXPECT_THAT(got.ids(), ElementsAre(ids[1]));
}

TEST_F(ClientTest, StreamResultsFollowsLongIdListsOverSeveralStreams) {
  ClientOptions options;
  options.max_batch = 3;
  auto client = Connect(options);
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids = SubmitAdds(*client, 10);
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) state_.Complete(*it, IntValue(0));
  Deliveries got;
  Status st = client->StreamResults(
      ids, [&](const v1::TaskRecord& r) { return got.Add(r); }, std::chrono::seconds(10));
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_THAT(got.ids(), UnorderedElementsAreArray(ids));
  EXPECT_EQ(state_.wait_requests().size(), 4u);
}

TEST_F(ClientTest, StreamResultsFailsWithTheServiceErrorForAnUnknownId) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  Status st = client->StreamResults(
      {"task-9999"}, [](const v1::TaskRecord&) { return true; }, std::chrono::seconds(5));
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "task 'task-9999' does not exist");
}

// The service goes away mid-stream (cleanly, or cut off without a goodbye) and comes back on
// the same port with its tasks: every id must arrive exactly once, in completion order.
class ClientRestartTest : public ClientTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ClientRestartTest, StreamResultsResumesAfterTheServiceRestarts) {
  const bool graceful = GetParam();
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids = SubmitAdds(*client, 6);
  state_.Complete(ids[0], IntValue(0));
  state_.Complete(ids[1], IntValue(3));

  Deliveries got;
  Status st;
  std::thread streamer([&] {
    st = client->StreamResults(
        ids, [&](const v1::TaskRecord& r) { return got.Add(r); }, std::chrono::seconds(20));
  });
  ASSERT_TRUE(got.WaitForCount(2));
  const int port = server_.port();
  server_.Stop(graceful);
  state_.Complete(ids[2], IntValue(6));
  state_.Complete(ids[3], IntValue(9));
  ASSERT_EQ(server_.Start(port), port);
  ASSERT_TRUE(got.WaitForCount(4));
  state_.Complete(ids[4], IntValue(12));
  state_.Complete(ids[5], IntValue(15));
  streamer.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_THAT(got.ids(), ElementsAreArray(ids));
  // The resubscription asked only for what was not delivered yet.
  const auto requests = state_.wait_requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_THAT(requests.back(), UnorderedElementsAreArray(std::vector<std::string>(ids.begin() + 2, ids.end())));
}

INSTANTIATE_TEST_SUITE_P(HowTheServiceStops, ClientRestartTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& param) { return param.param ? "Graceful" : "Cut"; });

TEST(TimelineTest, SortsStagesByTimeAndMeasuresEachHop) {
  v1::TaskRecord r;
  for (const auto& [stage, nanos] : std::vector<std::pair<std::string, int64_t>>{
           {"received", 1'000'000}, {"success", 1'009'500}, {"dispatched", 1'002'000}, {"running", 1'002'000}}) {
    v1::Timestamp* t = r.add_timestamps();
    t->set_stage(stage);
    t->set_unix_nanos(nanos);
  }
  const std::vector<StageTiming> timeline = Timeline(r);
  ASSERT_EQ(timeline.size(), 4u);
  EXPECT_EQ(timeline[0].stage, "received");
  EXPECT_EQ(timeline[1].stage, "dispatched");  // equal times keep the record's order
  EXPECT_EQ(timeline[2].stage, "running");
  EXPECT_EQ(timeline[3].stage, "success");
  EXPECT_DOUBLE_EQ(timeline[1].since_previous_us, 2.0);
  EXPECT_DOUBLE_EQ(timeline[2].since_previous_us, 0.0);
  EXPECT_DOUBLE_EQ(timeline[3].since_previous_us, 7.5);
  EXPECT_DOUBLE_EQ(timeline[3].since_first_us, 9.5);
  EXPECT_TRUE(Timeline(v1::TaskRecord()).empty());
}

TEST(MakeSubmitRequestTest, CopiesTheSubmitOptionsIntoTheRequest) {
  SubmitOptions options;
  options.idempotency_key = "run-42/frame-7";
  options.max_attempts = 4;
  options.timeout_ms = 2500;
  options.failover = true;
  options.trace = true;
  const v1::SubmitRequest r = MakeSubmitRequest("ep", "add", {IntValue(1)}, {{"k", IntValue(2)}}, options);
  EXPECT_EQ(r.endpoint(), "ep");
  EXPECT_EQ(r.function(), "add");
  EXPECT_EQ(r.args_size(), 1);
  EXPECT_EQ(r.kwargs().at("k").int_value(), 2);
  EXPECT_EQ(r.idempotency_key(), "run-42/frame-7");
  EXPECT_EQ(r.max_attempts(), 4);
  EXPECT_EQ(r.timeout_ms(), 2500);
  EXPECT_TRUE(r.failover());
  EXPECT_TRUE(r.trace());

  const v1::SubmitRequest plain = MakeSubmitRequest("ep", "add", {});
  EXPECT_FALSE(plain.trace());
  EXPECT_TRUE(plain.idempotency_key().empty());
  EXPECT_EQ(plain.max_attempts(), 0);  // 0: the function's default
  EXPECT_EQ(plain.timeout_ms(), 0);
}

TEST(SubmitRetryBackoffTest, DoublesFromOneHundredMillisecondsUpToTwoSecondsWithTwentyPercentJitter) {
  using std::chrono::milliseconds;
  EXPECT_EQ(sdk_internal::SubmitRetryBackoff(1, 0), milliseconds(100));
  EXPECT_EQ(sdk_internal::SubmitRetryBackoff(2, 0), milliseconds(200));
  EXPECT_EQ(sdk_internal::SubmitRetryBackoff(3, 0), milliseconds(400));
  EXPECT_EQ(sdk_internal::SubmitRetryBackoff(6, 0), milliseconds(2000));
  EXPECT_EQ(sdk_internal::SubmitRetryBackoff(60, 0), milliseconds(2000));
  EXPECT_EQ(sdk_internal::SubmitRetryBackoff(1, 1), milliseconds(120));
  EXPECT_EQ(sdk_internal::SubmitRetryBackoff(2, -1), milliseconds(160));
  for (int i = 0; i < 100; ++i) {
    const milliseconds b = sdk_internal::JitteredSubmitRetryBackoff(3);
    EXPECT_GE(b, milliseconds(320));
    EXPECT_LE(b, milliseconds(480));
  }
}

TEST_F(ClientTest, SubmitOptionsReachTheService) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto id = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {},
                           {.idempotency_key = "job-1", .max_attempts = 7, .timeout_ms = 1500});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  const v1::TaskRecord r = state_.task(*id);
  EXPECT_EQ(r.idempotency_key(), "job-1");
  EXPECT_EQ(r.max_attempts(), 7);
  EXPECT_EQ(r.timeout_ms(), 1500);

  auto plain = client->Submit("ep", "add", {IntValue(1), IntValue(2)});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(state_.task(*plain).max_attempts(), FakeLoomState::kDefaultMaxAttempts);
  EXPECT_EQ(state_.task(*plain).timeout_ms(), 0);
}

TEST_F(ClientTest, RegisterFunctionSetsTheTaskDefaults) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  bool created = false;
  auto f = client->RegisterFunction(
      "slow", "sleep@1",
      {.description = "sleeps", .config = {{"scale", IntValue(2)}}, .max_attempts = 5, .timeout_ms = 60000}, &created);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(created);
  EXPECT_EQ(f->description(), "sleeps");
  EXPECT_EQ(f->config().at("scale").int_value(), 2);
  EXPECT_EQ(f->max_attempts(), 5);
  EXPECT_EQ(f->timeout_ms(), 60000);
  auto got = client->GetFunction("slow");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->max_attempts(), 5);
  EXPECT_EQ(got->timeout_ms(), 60000);

  // Its tasks take the defaults unless the submit overrides them.
  auto id = client->Submit("ep", "slow", {});
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(state_.task(*id).max_attempts(), 5);
  EXPECT_EQ(state_.task(*id).timeout_ms(), 60000);
  id = client->Submit("ep", "slow", {}, {}, {.max_attempts = 2, .timeout_ms = 10});
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(state_.task(*id).max_attempts(), 2);
  EXPECT_EQ(state_.task(*id).timeout_ms(), 10);
}

TEST_F(ClientTest, SubmitWithTheSameIdempotencyKeyReturnsTheSameTask) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto first = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {}, {.idempotency_key = "k1"});
  auto again = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {}, {.idempotency_key = "k1"});
  auto other = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {}, {.idempotency_key = "k2"});
  ASSERT_TRUE(first.ok() && again.ok() && other.ok());
  EXPECT_EQ(*again, *first);
  EXPECT_NE(*other, *first);
  EXPECT_EQ(state_.task_ids().size(), 2u);
}

// A submit that fails with UNAVAILABLE or DEADLINE_EXCEEDED may have created its task (here it
// did: the fake commits, then fails), so only a keyed one is sent again.
class SubmitRetryTest : public ClientTest, public ::testing::WithParamInterface<grpc::StatusCode> {};

TEST_P(SubmitRetryTest, KeyedSubmitIsRetriedAndCreatesOneTask) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  state_.FailNextSubmits(2, GetParam(), /*after_commit=*/true);
  auto id = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {}, {.idempotency_key = "once"});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(state_.submit_calls(), 3);
  EXPECT_THAT(state_.task_ids(), ElementsAre(*id));
}

TEST_P(SubmitRetryTest, SubmitWithoutAKeyIsNotRetried) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  state_.FailNextSubmits(1, GetParam(), /*after_commit=*/true);
  auto id = client->Submit("ep", "add", {IntValue(1), IntValue(2)});
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(static_cast<int>(id.status().code()), static_cast<int>(GetParam()));
  EXPECT_EQ(state_.submit_calls(), 1);
  EXPECT_EQ(state_.task_ids().size(), 1u);  // created once; a blind retry would have made two
}

TEST_P(SubmitRetryTest, SubmitBatchRetriesAChunkOnlyWhenEveryTaskHasAKey) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  state_.FailNextSubmits(1, GetParam(), /*after_commit=*/true);
  std::vector<v1::SubmitRequest> keyed;
  for (int i = 0; i < 3; ++i) {
    keyed.push_back(MakeSubmitRequest("ep", "add", {IntValue(i), IntValue(i)}, {},
                                      {.idempotency_key = "batch-" + std::to_string(i)}));
  }
  auto ids = client->SubmitBatch(keyed);
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(state_.submit_calls(), 2);
  EXPECT_THAT(state_.task_ids(), ElementsAreArray(*ids));

  state_.FailNextSubmits(1, GetParam(), /*after_commit=*/true);
  keyed.push_back(MakeSubmitRequest("ep", "add", {IntValue(9), IntValue(9)}));  // no key
  ids = client->SubmitBatch(keyed);
  EXPECT_EQ(static_cast<int>(ids.status().code()), static_cast<int>(GetParam()));
  EXPECT_EQ(state_.submit_calls(), 3);
}

INSTANTIATE_TEST_SUITE_P(Codes, SubmitRetryTest,
                         ::testing::Values(grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::DEADLINE_EXCEEDED),
                         [](const ::testing::TestParamInfo<grpc::StatusCode>& param) {
                           return param.param == grpc::StatusCode::UNAVAILABLE ? "Unavailable" : "DeadlineExceeded";
                         });

TEST_F(ClientTest, KeyedSubmitGivesUpAfterSubmitRetriesAndNeverRetriesOtherErrors) {
  ClientOptions options;
  options.submit_retries = 2;
  auto client = Connect(options);
  ASSERT_NE(client, nullptr);
  state_.FailNextSubmits(10);
  auto id = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {}, {.idempotency_key = "k"});
  EXPECT_EQ(id.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(state_.submit_calls(), 3);

  state_.FailNextSubmits(1, grpc::StatusCode::INTERNAL);
  id = client->Submit("ep", "add", {IntValue(1), IntValue(2)}, {}, {.idempotency_key = "k"});
  EXPECT_EQ(id.status().code(), StatusCode::kInternal);
  EXPECT_EQ(state_.submit_calls(), 4);
  EXPECT_EQ(client->Submit("ep", "nope", {}, {}, {.idempotency_key = "n"}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(state_.submit_calls(), 5);
}

TEST_F(ClientTest, DeleteTasksDeletesFinishedTasksAndRefusesUnfinishedOnes) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = client->Submit("ep", "add", {IntValue(i), IntValue(i)}, {}, {.idempotency_key = "d" + std::to_string(i)});
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  state_.Complete(ids[0], IntValue(0));
  state_.Fail(ids[1], "boom");

  // One unfinished task fails the whole call: nothing is deleted.
  auto refused = client->DeleteTasks({ids[0], ids[2]});
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr(ids[2]));
  EXPECT_TRUE(state_.has_task(ids[0]));

  auto deleted = client->DeleteTasks({ids[0], ids[1], "task-9999"});  // unknown ids are skipped
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 2);
  EXPECT_FALSE(state_.has_task(ids[0]));
  EXPECT_FALSE(state_.has_task(ids[1]));
  EXPECT_EQ(client->GetStatus(ids[0]).status().code(), StatusCode::kNotFound);
  auto none = client->DeleteTasks({});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);

  // Deleting a task frees its idempotency key.
  auto reused = client->Submit("ep", "add", {IntValue(0), IntValue(0)}, {}, {.idempotency_key = "d0"});
  ASSERT_TRUE(reused.ok());
  EXPECT_NE(*reused, ids[0]);
}

TEST_F(ClientTest, DeleteTasksSplitsLongIdListsAndCountsAcrossCalls) {
  ClientOptions options;
  options.max_batch = 2;
  auto client = Connect(options);
  ASSERT_NE(client, nullptr);
  std::vector<std::string> ids = SubmitAdds(*client, 5);
  for (const auto& id : ids) state_.Complete(id, IntValue(0));
  auto deleted = client->DeleteTasks(ids);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 5);
  EXPECT_TRUE(state_.task_ids().empty());

  // A later call failing says what the earlier ones deleted.
  std::vector<std::string> more = SubmitAdds(*client, 3);
  state_.Complete(more[0], IntValue(0));
  state_.Complete(more[1], IntValue(0));
  auto partial = client->DeleteTasks(more);
  EXPECT_EQ(partial.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(partial.status().message(), HasSubstr("2 task(s) among the first 2 of 3 ids were deleted"));
}

TEST_F(ClientTest, GetResultOnAServiceThatIsGoneReportsUnavailable) {
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  auto id = client->Submit("ep", "add", {IntValue(1), IntValue(2)});
  ASSERT_TRUE(id.ok());
  server_.Stop();
  auto result = client->GetResult(*id, std::chrono::milliseconds(500));
  EXPECT_EQ(result.status().code(), StatusCode::kUnavailable) << result.status().ToString();
}

}  // namespace
}  // namespace loom
