// End-to-end tests: real redis-server, loom-service, loom-endpoint and loom-worker processes on
// 127.0.0.1 with ports picked at run time, driven through the C++ SDK.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <zmq.hpp>

#include "common/local_fabric.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::MakeFabric;
using loom::testing::WaitFor;

using loom::testing::ChildPids;
using loom::testing::RegisterBuiltins;

std::unique_ptr<Client> Connect(const LocalFabric& f) { return loom::testing::ConnectClient(f); }

// Runs one task and waits for its terminal record.
v1::TaskRecord RunTask(Client& c, const std::string& ep, const std::string& fn, std::vector<Value> args,
                       std::chrono::milliseconds timeout = 30s) {
  auto id = c.Submit(ep, fn, std::move(args));
  EXPECT_TRUE(id.ok()) << id.status().ToString();
  if (!id.ok()) return {};
  auto r = c.GetResult(*id, timeout);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r.ok() && r->has_value()) << "task " << *id << " did not finish in time";
  return r.ok() && r->has_value() ? **r : v1::TaskRecord();
}

std::vector<std::string> Stages(const v1::TaskRecord& r) {
  std::vector<std::string> out;
  for (const auto& t : r.timestamps()) out.push_back(t.stage());
  return out;
}

// One fabric shared by the tests that do not kill anything.
class FabricTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fabric_ = MakeFabric("fabric").release();
    Status s = fabric_->StartAll("ep", 2);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    delete fabric_;
    fabric_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(fabric_, nullptr);
    client_ = Connect(*fabric_);
    ASSERT_NE(client_, nullptr);
    RegisterBuiltins(*client_);
  }
  static LocalFabric* fabric_;
  std::unique_ptr<Client> client_;
};
LocalFabric* FabricTest::fabric_ = nullptr;

TEST_F(FabricTest, EndpointRegistersItsKernelsDevicesAndWorkers) {
  auto ep = client_->GetEndpoint("ep");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  EXPECT_EQ(ep->status(), v1::ENDPOINT_STATUS_ONLINE);
  EXPECT_EQ(ep->worker_count(), 2);
  std::set<std::string> kernels;
  for (const auto& k : ep->kernels()) kernels.insert(k.name() + "@" + k.version());
  for (const char* k : {"echo@1", "add@1", "sleep@1", "fail@1", "crash@1"}) EXPECT_TRUE(kernels.contains(k)) << k;
  ASSERT_GE(ep->devices_size(), 1);
  EXPECT_EQ(ep->devices(0).kind(), "cpu");
  auto list = client_->ListEndpoints();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1u);
}

TEST_F(FabricTest, EchoReturnsEveryKindOfValue) {
  std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  Value nested = MapValue({{"list", ListValue({IntValue(1), StringValue("two"), NullValue()})},
                           {"t", TensorValue({2, 3}, std::span<const float>(data))},
                           {"b", BytesValue(std::string("\0\1\2", 3))}});
  auto r = RunTask(*client_, "ep", "echo", {nested});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r.result(), nested)) << DebugString(r.result());
  EXPECT_EQ(RunTask(*client_, "ep", "echo", {StringValue("hello")}).result().string_value(), "hello");
}

TEST_F(FabricTest, AddWorksOnNumbersAndTensors) {
  EXPECT_EQ(RunTask(*client_, "ep", "add", {IntValue(40), IntValue(2)}).result().int_value(), 42);
  EXPECT_DOUBLE_EQ(RunTask(*client_, "ep", "add", {DoubleValue(1.25), IntValue(2)}).result().double_value(), 3.25);
  std::vector<double> a = {1, 2, 3}, b = {10, 20, 30};
  auto r = RunTask(*client_, "ep", "add",
                   {TensorValue({3}, std::span<const double>(a)), TensorValue({3}, std::span<const double>(b))});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  const auto& t = r.result().tensor_value();
  ASSERT_EQ(t.shape_size(), 1);
  EXPECT_EQ(t.shape(0), 3);
  EXPECT_DOUBLE_EQ(TensorElementAsDouble(t, 0), 11);
  EXPECT_DOUBLE_EQ(TensorElementAsDouble(t, 2), 33);
}

TEST_F(FabricTest, SleepRunsAndReportsRunningOnTheWay) {
  auto id = client_->Submit("ep", "sleep", {DoubleValue(0.3)});
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        auto s = client_->GetStatus(*id);
        return s.ok() && s->state() == v1::TASK_STATE_RUNNING;
      },
      10s))
      << "the task was never seen running";
  auto r = client_->GetResult(*id, 30s);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_GE((*r)->result().double_value(), 0.3);
}

TEST_F(FabricTest, KernelErrorBecomesAFailedTaskWithItsMessage) {
  auto r = RunTask(*client_, "ep", "fail", {StringValue("detector saturated")});
  EXPECT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(r.error(), "detector saturated");
}

// Fault case 3: a kernel that always kills its worker is retried, then fails as poison after
// max_worker_deaths (3) workers; tasks submitted around it are unaffected.
TEST_F(FabricTest, AKernelThatAlwaysCrashesItsWorkerFailsAsPoisonAndOthersAreUnaffected) {
  std::vector<std::string> adds;
  for (int i = 0; i < 10; ++i) adds.push_back(*client_->Submit("ep", "add", {IntValue(i), IntValue(1)}));
  auto r = RunTask(*client_, "ep", "crash", {});
  for (int i = 10; i < 20; ++i) adds.push_back(*client_->Submit("ep", "add", {IntValue(i), IntValue(1)}));
  EXPECT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(r.failure(), v1::FAILURE_KIND_POISON);
  EXPECT_EQ(r.attempts(), 3);
  ASSERT_EQ(r.attempt_history_size(), 3);
  for (const auto& a : r.attempt_history()) EXPECT_EQ(a.failure(), v1::FAILURE_KIND_WORKER_LOST);
  EXPECT_NE(r.error().find("poison: this task killed 3 worker(s)"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("signal 9"), std::string::npos) << r.error();
  for (int i = 0; i < 20; ++i) {
    auto done = client_->GetResult(adds[i], 30s);
    ASSERT_TRUE(done.ok() && done->has_value());
    EXPECT_EQ((*done)->state(), v1::TASK_STATE_SUCCESS);
    EXPECT_EQ((*done)->result().int_value(), i + 1);
    EXPECT_EQ((*done)->attempt_history_size(), 0);
  }
}

// The record of a traced task, streamed as it finishes, carries every hop in time order and ends
// with the moment its result's write to Redis returned; read back later it ends with its final
// state. An untraced task has neither of the service's commit stamps.
TEST_F(FabricTest, RecordsATimestampForEveryHop) {
  SubmitOptions traced;
  traced.trace = true;
  auto id = client_->Submit("ep", "echo", {IntValue(1)}, {}, traced);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto plain = client_->Submit("ep", "echo", {IntValue(2)});
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  std::map<std::string, v1::TaskRecord> got;
  ASSERT_TRUE(client_
                  ->StreamResults(
                      {*id, *plain},
                      [&](const v1::TaskRecord& rec) {
                        got[rec.id()] = rec;
                        return true;
                      },
                      30s)
                  .ok());
  const v1::TaskRecord& r = got[*id];
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS);
  auto stages = Stages(r);
  const std::vector<std::string> hops = {"received",          "waiting-for-endpoint", "dispatched",
                                         "service_committed", "service_sent",         "endpoint_received",
                                         "worker_started",    "kernel_finished",      "endpoint_result",
                                         "success",           "result_committed"};
  int64_t last = 0;
  size_t at = 0;
  for (const auto& want : hops) {
    auto it = std::find(stages.begin() + static_cast<std::ptrdiff_t>(at), stages.end(), want);
    ASSERT_NE(it, stages.end()) << "missing stage " << want << ", or out of order";
    at = static_cast<size_t>(it - stages.begin());
    EXPECT_GE(r.timestamps(static_cast<int>(at)).unix_nanos(), last) << want << " stamped before the stage ahead of it";
    last = r.timestamps(static_cast<int>(at)).unix_nanos();
  }
  EXPECT_EQ(stages.front(), "received");
  EXPECT_EQ(stages.back(), "result_committed");
  auto stored = client_->GetTasks({*id, *plain});
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  ASSERT_EQ(stored->size(), 2u);
  auto again = Stages((*stored)[0]);
  EXPECT_EQ(again.back(), "success");
  EXPECT_NE(std::find(again.begin(), again.end(), "service_committed"), again.end());
  EXPECT_EQ(std::find(again.begin(), again.end(), "result_committed"), again.end());
  for (const auto& untraced : {got[*plain], (*stored)[1]}) {
    ASSERT_EQ(untraced.state(), v1::TASK_STATE_SUCCESS);
    auto st = Stages(untraced);
    EXPECT_NE(std::find(st.begin(), st.end(), "service_sent"), st.end());
    EXPECT_EQ(std::find(st.begin(), st.end(), "service_committed"), st.end());
    EXPECT_EQ(std::find(st.begin(), st.end(), "result_committed"), st.end());
    EXPECT_EQ(st.back(), "success");
  }
}

TEST_F(FabricTest, BadSubmitsGetClearErrors) {
  auto unknown_fn = client_->Submit("ep", "no-such-function", {});
  EXPECT_EQ(unknown_fn.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown_fn.status().message().find("no-such-function"), std::string::npos);
  auto unknown_ep = client_->Submit("no-such-endpoint", "echo", {IntValue(1)});
  EXPECT_EQ(unknown_ep.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown_ep.status().message().find("no-such-endpoint"), std::string::npos);
  auto wrong = client_->Submit("ep", "add", {StringValue("one"), IntValue(2)});
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("'a' must be number or tensor, got string"), std::string::npos)
      << wrong.status().message();
  auto bad_kernel = client_->RegisterFunction("badref", "no-version");
  EXPECT_EQ(bad_kernel.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(FabricTest, MessageOverTheSizeLimitGetsAClearError) {
  auto r = client_->Submit("ep", "echo", {BytesValue(std::string(11 * 1024 * 1024, 'x'))});
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_FALSE(r.status().message().empty());
  // The service is unharmed.
  EXPECT_EQ(RunTask(*client_, "ep", "echo", {IntValue(5)}).result().int_value(), 5);
}

TEST_F(FabricTest, BatchOfTenThousandEchoTasksReturnsEveryResultExactlyOnce) {
  constexpr int kN = 10000;
  std::vector<v1::SubmitRequest> reqs;
  for (int i = 0; i < kN; ++i) reqs.push_back(MakeSubmitRequest("ep", "echo", {IntValue(i)}));
  auto ids = client_->SubmitBatch(std::move(reqs));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  ASSERT_EQ(ids->size(), static_cast<size_t>(kN));
  std::map<std::string, int> index;
  for (int i = 0; i < kN; ++i) index[(*ids)[i]] = i;
  ASSERT_EQ(index.size(), static_cast<size_t>(kN)) << "task ids are not unique";
  std::map<std::string, int> seen;
  int wrong = 0;
  Status s = client_->StreamResults(
      *ids,
      [&](const v1::TaskRecord& r) {
        ++seen[r.id()];
        if (r.state() != v1::TASK_STATE_SUCCESS || r.result().int_value() != index[r.id()]) ++wrong;
        return true;
      },
      120s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen.size(), static_cast<size_t>(kN));
  EXPECT_EQ(wrong, 0);
  for (const auto& [id, n] : seen) ASSERT_EQ(n, 1) << id;
  // And the store agrees: every one is a success with the right value. Each was dispatched
  // once, in time order: most of them were leased from the queue (the endpoint has credit for
  // far fewer than 10,000), whose lease writes no stamp, so theirs came back with the result.
  auto recs = client_->GetTasks(*ids);
  ASSERT_TRUE(recs.ok()) << recs.status().ToString();
  for (int i = 0; i < kN; ++i) {
    const v1::TaskRecord& r = (*recs)[i];
    ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS);
    ASSERT_EQ(r.result().int_value(), i);
    ASSERT_EQ(r.attempts(), 1);
    auto stages = Stages(r);
    ASSERT_EQ(std::count(stages.begin(), stages.end(), "dispatched"), 1) << r.DebugString();
    const auto at = [&](const char* stage) { return std::find(stages.begin(), stages.end(), stage) - stages.begin(); };
    ASSERT_LT(at("waiting-for-endpoint"), at("dispatched")) << r.DebugString();
    ASSERT_LT(at("dispatched"), at("endpoint_received")) << r.DebugString();
    for (int k = 1; k < r.timestamps_size(); ++k) {
      ASSERT_GE(r.timestamps(k).unix_nanos(), r.timestamps(k - 1).unix_nanos()) << r.DebugString();
    }
  }
}

TEST_F(FabricTest, CancelledQueuedTaskNeverRuns) {
  ASSERT_TRUE(client_->CreateEndpoint("parked", "parked").ok());
  auto id = client_->Submit("parked", "echo", {IntValue(1)});
  ASSERT_TRUE(id.ok());
  auto c = client_->Cancel(*id);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->state(), v1::TASK_STATE_CANCELLED);
  auto r = client_->GetResult(*id, 1s);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(client_->GetEndpoint("parked")->queue_depth(), 0);
}

TEST_F(FabricTest, GarbageOnTheEndpointSocketDoesNotCrashOrStallTheService) {
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  // Authenticated as "ep" (a second connection with its key), so the garbage reaches the broker.
  loom::testing::ConnectAsEndpoint(*fabric_, "ep", s);
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    std::string junk(rng() % 512, '\0');
    for (auto& ch : junk) ch = static_cast<char>(rng());
    s.send(zmq::buffer(junk), zmq::send_flags::none);
  }
  s.send(zmq::str_buffer("part one"), zmq::send_flags::sndmore);
  s.send(zmq::str_buffer("part two"), zmq::send_flags::none);
  s.send(zmq::message_t(), zmq::send_flags::none);
  // A well-formed message from a session the service never saw.
  v1::Envelope env;
  auto* res = env.mutable_results()->add_results();
  res->set_task_id("forged");
  res->set_ok(true);
  std::string body = env.SerializeAsString();
  s.send(zmq::buffer(body), zmq::send_flags::none);
  // A frame over the size limit: the service drops that connection.
  s.send(zmq::buffer(std::string(12 * 1024 * 1024, 'z')), zmq::send_flags::none);
  // Still serving, promptly.
  EXPECT_EQ(RunTask(*client_, "ep", "echo", {IntValue(99)}, 10s).result().int_value(), 99);
  EXPECT_TRUE(fabric_->service().Running());
}

// ---------------------------------------------------------------- faults, each on its own fabric

// Large tasks that pile up at an endpoint must reach its workers in messages within the size
// limit. They pile up when an endpoint starts with work waiting: the service sends it all at
// once. The endpoint once handed a worker its whole share (here about 8 x 3 MB) in one message,
// over the worker's limit; the worker's connection dropped and the tasks never ran.
TEST(FabricFaultTest, LargeTasksWaitingForAnEndpointReachItsWorkersInMessagesWithinTheLimit) {
  auto fabric = MakeFabric("large");
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  auto client = Connect(*fabric);
  ASSERT_NE(client, nullptr);
  RegisterBuiltins(*client);
  ASSERT_TRUE(client->CreateEndpoint("big", "big").ok());
  constexpr int kN = 16;
  constexpr size_t kBytes = 3'000'000;
  std::vector<v1::SubmitRequest> reqs;
  for (int i = 0; i < kN; ++i) {
    reqs.push_back(MakeSubmitRequest("big", "echo", {BytesValue(std::string(kBytes, static_cast<char>('a' + i)))}));
  }
  auto ids = client->SubmitBatch(std::move(reqs));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  ASSERT_TRUE(fabric->StartEndpoint("big", 2).ok());
  std::map<std::string, int> index;
  for (int i = 0; i < kN; ++i) index[(*ids)[i]] = i;
  int ok = 0;
  Status s = client->StreamResults(
      *ids,
      [&](const v1::TaskRecord& r) {
        EXPECT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
        const std::string& got = r.result().bytes_value();
        if (got.size() == kBytes && got.front() == static_cast<char>('a' + index[r.id()]) &&
            got.back() == got.front()) {
          ++ok;
        }
        return true;
      },
      60s);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ok, kN);
}

TEST(FabricFaultTest, TaskSubmittedToAnOfflineEndpointRunsOnceItStarts) {
  auto fabric = MakeFabric("offline");
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  auto client = Connect(*fabric);
  ASSERT_NE(client, nullptr);
  RegisterBuiltins(*client);
  ASSERT_TRUE(client->CreateEndpoint("late", "late").ok());
  auto id = client->Submit("late", "add", {IntValue(2), IntValue(3)});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(client->GetStatus(*id)->state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  ASSERT_TRUE(fabric->StartEndpoint("late", 1).ok());
  auto r = client->GetResult(*id, 30s);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*r)->result().int_value(), 5);

  // The same after the endpoint was killed: its tasks wait in Redis for its return.
  fabric->KillEndpoint("late", SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return client->GetEndpoint("late")->status() == v1::ENDPOINT_STATUS_OFFLINE; }, 20s));
  auto id2 = client->Submit("late", "echo", {StringValue("waited")});
  ASSERT_TRUE(id2.ok());
  ASSERT_TRUE(fabric->StartEndpoint("late", 1).ok());
  auto r2 = client->GetResult(*id2, 30s);
  ASSERT_TRUE(r2.ok() && r2->has_value());
  EXPECT_EQ((*r2)->result().string_value(), "waited");
}

// Redis and a service (`service_args`) of a fabric named `name`, and a client of it that has
// the built-in functions registered; no endpoint.
void StartServiceAndClient(const std::string& name, std::vector<std::string> service_args,
                           std::unique_ptr<LocalFabric>* fabric, std::unique_ptr<Client>* client) {
  *fabric = MakeFabric(name, std::move(service_args));
  ASSERT_TRUE((*fabric)->StartRedis().ok());
  ASSERT_TRUE((*fabric)->StartService().ok());
  *client = Connect(**fabric);
  ASSERT_NE(*client, nullptr);
  RegisterBuiltins(**client);
}

// A stand-in for endpoint "ep" on `ep` (a DEALER socket): connected, registered with `credit`,
// and online when this returns. Receives time out after 10 s.
void RegisterStandIn(LocalFabric& fabric, Client& client, zmq::socket_t& ep, int credit) {
  ep.set(zmq::sockopt::linger, 0);
  ep.set(zmq::sockopt::rcvtimeo, 10000);
  loom::testing::ConnectAsEndpoint(fabric, "ep", ep);
  v1::Envelope reg;
  reg.mutable_register_()->set_endpoint_id("ep");
  reg.mutable_register_()->set_session_id("stand-in");
  reg.mutable_register_()->set_credit(credit);
  std::string bytes = reg.SerializeAsString();
  ASSERT_TRUE(ep.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto e = client.GetEndpoint("ep");
        return e.ok() && e->status() == v1::ENDPOINT_STATUS_ONLINE;
      },
      10s));
}

// The service acknowledges committed results with the next tasks it sends the same endpoint,
// within --result-ack-hold-ms, and alone after it. A stand-in endpoint fails an attempt with a
// system failure: the retry goes out at once, carrying the ack of the failed attempt. The ack
// of its success waits for the next task submitted; the last one goes alone.
TEST(FabricFaultTest, AnAckRidesWithTheNextTasksForItsEndpointOrGoesAloneAfterTheHold) {
  std::unique_ptr<LocalFabric> fabric;
  std::unique_ptr<Client> client;
  ASSERT_NO_FATAL_FAILURE(StartServiceAndClient("ack-ride", {"--result-ack-hold-ms", "2000"}, &fabric, &client));
  zmq::context_t ctx;
  zmq::socket_t ep(ctx, zmq::socket_type::dealer);
  ASSERT_NO_FATAL_FAILURE(RegisterStandIn(*fabric, *client, ep, 4));
  auto send = [&](const v1::Envelope& env) {
    std::string bytes = env.SerializeAsString();
    ASSERT_TRUE(ep.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
  };
  // The next message other than a heartbeat or the registration's answer, within 10 s.
  auto receive = [&]() -> std::optional<v1::Envelope> {
    while (true) {
      zmq::message_t msg;
      if (!ep.recv(msg)) return std::nullopt;
      v1::Envelope env;
      if (!env.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) return std::nullopt;
      if (env.body_case() != v1::Envelope::kHeartbeat && env.body_case() != v1::Envelope::kRegistered) return env;
    }
  };
  auto result = [](const std::string& task, bool ok) {
    v1::Envelope env;
    auto* r = env.mutable_results()->add_results();
    r->set_task_id(task);
    r->set_ok(ok);
    if (ok) {
      *r->mutable_value() = IntValue(7);
    } else {
      r->set_failure(v1::FAILURE_KIND_WORKER_LOST);
      r->set_error("worker died");
    }
    return env;
  };
  auto submit = [&] {
    auto req = MakeSubmitRequest("ep", "echo", {IntValue(7)});
    req.set_max_attempts(2);
    auto ids = client->SubmitBatch({req});
    EXPECT_TRUE(ids.ok()) << ids.status().ToString();
    return ids.ok() ? ids->front() : std::string();
  };
  auto describe = [](const std::optional<v1::Envelope>& e) { return e ? e->ShortDebugString() : "nothing"; };
  const std::string a = submit();
  auto first = receive();
  ASSERT_TRUE(first && first->has_tasks()) << describe(first);
  ASSERT_EQ(first->tasks().tasks_size(), 1);
  EXPECT_EQ(first->tasks().tasks(0).task_id(), a);
  EXPECT_FALSE(first->tasks().has_ack());
  // A system failure: the retry leaves in the round that committed it, with the ack.
  send(result(a, false));
  auto retry = receive();
  ASSERT_TRUE(retry && retry->has_tasks()) << describe(retry);
  ASSERT_EQ(retry->tasks().tasks_size(), 1);
  EXPECT_EQ(retry->tasks().tasks(0).task_id(), a);
  ASSERT_EQ(retry->tasks().ack().task_ids_size(), 1);
  EXPECT_EQ(retry->tasks().ack().task_ids(0), a);
  // The success's ack waits (2 s) for the next task for this endpoint.
  send(result(a, true));
  auto done = client->GetResult(a, 10s);
  ASSERT_TRUE(done.ok() && done->has_value());
  EXPECT_EQ((*done)->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*done)->attempt_history_size(), 1);
  const std::string b = submit();
  auto next = receive();
  ASSERT_TRUE(next && next->has_tasks()) << describe(next);
  ASSERT_EQ(next->tasks().tasks_size(), 1);
  EXPECT_EQ(next->tasks().tasks(0).task_id(), b);
  ASSERT_EQ(next->tasks().ack().task_ids_size(), 1);
  EXPECT_EQ(next->tasks().ack().task_ids(0), a);
  // No task follows: the last ack goes alone once held for its time.
  send(result(b, true));
  auto alone = receive();
  ASSERT_TRUE(alone && alone->has_ack()) << describe(alone);
  ASSERT_EQ(alone->ack().task_ids_size(), 1);
  EXPECT_EQ(alone->ack().task_ids(0), b);
  auto last = client->GetResult(b, 10s);
  ASSERT_TRUE(last.ok() && last->has_value());
  EXPECT_EQ((*last)->result().int_value(), 7);
}

// Held acks are bounded: once 256 wait for one endpoint they go at once, whatever the hold
// (here 20 s, longer than this test waits for them).
TEST(FabricFaultTest, ManyHeldAcksForOneEndpointGoAtOnce) {
  std::unique_ptr<LocalFabric> fabric;
  std::unique_ptr<Client> client;
  ASSERT_NO_FATAL_FAILURE(StartServiceAndClient(
      "ack-many", {"--result-ack-hold-ms", "20000", "--heartbeat-period-ms", "10000"}, &fabric, &client));
  zmq::context_t ctx;
  zmq::socket_t ep(ctx, zmq::socket_type::dealer);
  ASSERT_NO_FATAL_FAILURE(RegisterStandIn(*fabric, *client, ep, 300));
  std::vector<v1::SubmitRequest> reqs;
  for (int i = 0; i < 256; ++i) reqs.push_back(MakeSubmitRequest("ep", "echo", {IntValue(i)}));
  auto ids = client->SubmitBatch(std::move(reqs));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  v1::Envelope results;
  while (results.results().results_size() < 256) {
    zmq::message_t msg;
    ASSERT_TRUE(ep.recv(msg)) << "got " << results.results().results_size() << " of 256 tasks";
    v1::Envelope env;
    ASSERT_TRUE(env.ParseFromArray(msg.data(), static_cast<int>(msg.size())));
    for (const auto& t : env.tasks().tasks()) {
      auto* r = results.mutable_results()->add_results();
      r->set_task_id(t.task_id());
      r->set_ok(true);
      *r->mutable_value() = IntValue(1);
    }
  }
  const std::string bytes = results.SerializeAsString();
  ASSERT_TRUE(ep.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
  std::set<std::string> acked;
  while (acked.size() < 256) {
    zmq::message_t msg;
    ASSERT_TRUE(ep.recv(msg)) << "acked " << acked.size() << " of 256 within 10 s";
    v1::Envelope env;
    ASSERT_TRUE(env.ParseFromArray(msg.data(), static_cast<int>(msg.size())));
    for (const auto& id : env.ack().task_ids()) acked.insert(id);
  }
  EXPECT_EQ(acked, std::set<std::string>(ids->begin(), ids->end()));
}

// The service deletes finished tasks once their result TTL has passed, and leaves unfinished
// ones alone.
TEST(FabricFaultTest, TheServiceDeletesFinishedTasksOnceTheirTtlHasPassed) {
  std::unique_ptr<LocalFabric> fabric;
  std::unique_ptr<Client> client;
  ASSERT_NO_FATAL_FAILURE(StartServiceAndClient("ttl", {"--result-ttl-seconds", "1"}, &fabric, &client));
  ASSERT_TRUE(client->CreateEndpoint("ttl", "ttl").ok());
  ASSERT_TRUE(client->CreateEndpoint("off", "off").ok());
  ASSERT_TRUE(fabric->StartEndpoint("ttl", 1).ok());
  auto done = client->Submit("ttl", "add", {IntValue(2), IntValue(3)});
  auto waiting = client->Submit("off", "add", {IntValue(1), IntValue(1)});
  ASSERT_TRUE(done.ok() && waiting.ok());
  auto r = client->GetResult(*done, 30s);
  ASSERT_TRUE(r.ok() && r->has_value());
  ASSERT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS);
  int64_t finished_ns = 0;
  for (const auto& t : (*r)->timestamps()) {
    if (t.stage() == "success") finished_ns = t.unix_nanos();
  }
  ASSERT_GT(finished_ns, 0);
  ASSERT_TRUE(WaitFor([&] { return client->GetStatus(*done).status().code() == StatusCode::kNotFound; }, 30s));
  EXPECT_GE(NowNanos() - finished_ns, 1'000'000'000) << "deleted before its TTL";
  auto left = client->GetStatus(*waiting);
  ASSERT_TRUE(left.ok()) << left.status().ToString();
  EXPECT_EQ(left->state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
}

TEST(FabricFaultTest, WorkerKilledWithSigkillIsReplacedAndTheEndpointKeepsServing) {
  auto fabric = MakeFabric("worker-kill");
  ASSERT_TRUE(fabric->StartAll("ep", 2).ok());
  auto client = Connect(*fabric);
  RegisterBuiltins(*client);
  const pid_t ep_pid = fabric->endpoint("ep")->pid();
  ASSERT_TRUE(WaitFor([&] { return ChildPids(ep_pid).size() == 2; }, 10s));
  auto before = ChildPids(ep_pid);
  // Kill a worker in the middle of a long task: with retries off, that task fails with the
  // worker loss in its history; nothing else does.
  v1::SubmitRequest req;
  req.set_endpoint("ep");
  req.set_function("sleep");
  *req.add_args() = DoubleValue(30);
  req.set_max_attempts(1);
  auto first = client->SubmitBatch({req});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  std::optional<std::string> long_id = (*first)[0];
  ASSERT_TRUE(WaitFor([&] { return client->GetStatus(*long_id)->state() == v1::TASK_STATE_RUNNING; }, 10s));
  // The busy worker is the one whose CPU time does not matter; kill both candidates in turn
  // until the long task fails (it runs on exactly one of them).
  std::set<pid_t> killed;
  for (pid_t w : before) {
    ::kill(w, SIGKILL);
    killed.insert(w);
    if (WaitFor([&] { return client->GetStatus(*long_id)->state() == v1::TASK_STATE_FAILED; }, 3s)) break;
  }
  auto rec = client->GetStatus(*long_id);
  ASSERT_EQ(rec->state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(rec->error().find("worker process died"), std::string::npos) << rec->error();
  EXPECT_EQ(rec->failure(), v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED);
  ASSERT_EQ(rec->attempt_history_size(), 1);
  EXPECT_EQ(rec->attempt_history(0).failure(), v1::FAILURE_KIND_WORKER_LOST);
  // Replacements come up: two workers, none of them a killed one.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto now = ChildPids(ep_pid);
        if (now.size() != 2) return false;
        for (pid_t p : now) {
          if (killed.contains(p)) return false;
        }
        return true;
      },
      15s));
  std::vector<v1::SubmitRequest> reqs;
  for (int i = 0; i < 200; ++i) reqs.push_back(MakeSubmitRequest("ep", "add", {IntValue(i), IntValue(i)}));
  auto ids = client->SubmitBatch(std::move(reqs));
  ASSERT_TRUE(ids.ok());
  int good = 0;
  ASSERT_TRUE(client
                  ->StreamResults(
                      *ids, [&](const v1::TaskRecord& r) { return r.state() == v1::TASK_STATE_SUCCESS && ++good; }, 60s)
                  .ok());
  EXPECT_EQ(good, 200);
}

// A service killed mid-batch: see reliability_test.cc (fault case 5).

TEST(FabricFaultTest, ServiceSurvivesRedisGoingAwayAndAnswersWithAnError) {
  auto fabric = MakeFabric("redis-gone");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = Connect(*fabric);
  RegisterBuiltins(*client);
  ASSERT_EQ(RunTask(*client, "ep", "echo", {IntValue(1)}).state(), v1::TASK_STATE_SUCCESS);
  fabric->KillRedis(SIGKILL);
  auto r = client->Submit("ep", "echo", {IntValue(2)});
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_TRUE(fabric->service().Running()) << fabric->LogTail("service");
  EXPECT_TRUE(fabric->endpoint("ep")->Running());
}

TEST(FabricFaultTest, PluginKernelRuns) {
  auto fabric = MakeFabric("plugin");
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  ASSERT_TRUE(fabric->StartEndpoint("ep", 1, {"--plugin", LOOM_EXAMPLE_PLUGIN}).ok());
  auto client = Connect(*fabric);
  ASSERT_TRUE(client->RegisterFunction("stats", "stats@1").ok());
  std::vector<double> v = {2, 4, 4, 4, 5, 5, 7, 9};
  auto r = RunTask(*client, "ep", "stats", {TensorValue({8}, std::span<const double>(v))});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  const auto& m = r.result().map_value().entries();
  EXPECT_EQ(m.at("count").int_value(), 8);
  EXPECT_DOUBLE_EQ(m.at("mean").double_value(), 5.0);
  EXPECT_DOUBLE_EQ(m.at("std").double_value(), 2.0);
  EXPECT_DOUBLE_EQ(m.at("min").double_value(), 2.0);
  EXPECT_DOUBLE_EQ(m.at("max").double_value(), 9.0);
}

}  // namespace
}  // namespace loom
