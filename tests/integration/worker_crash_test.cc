// Which task a worker's death is charged to, with a real loom-endpoint and loom-worker driven by
// a fake service (the test's own ROUTER), so the test decides exactly which tasks reach the worker
// together. A worker batches its results and sends them as it goes on, so a worker
// that finishes a task and then dies in the next (the crash kernel SIGKILLs its own process)
// takes the finished task's result with it. The death must be charged to the task that crashed
// alone; the finished ones run again (at-least-once) and succeed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "common/wire.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::BinDir;
using loom::testing::WaitFor;

// The service's side of one endpoint connection: registers it, answers heartbeats, sends task
// batches, collects results and acknowledges them.
class FakeService {
 public:
  FakeService() : router_(ctx_, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    address_ = router_.get(zmq::sockopt::last_endpoint);
  }
  const std::string& address() const { return address_; }

  // Serves until `done` holds or `timeout` passes; returns whether it held.
  bool ServeUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    return WaitFor(
        [&] {
          while (auto env = Receive(done() ? 0ms : 50ms)) Handle(*env);
          return done();
        },
        timeout);
  }
  void Send(const v1::Envelope& env) {
    router_.send(zmq::buffer(peer_), zmq::send_flags::sndmore);
    router_.send(ToMessage(env), zmq::send_flags::none);
  }

  bool registered = false;
  std::map<std::string, std::vector<v1::TaskResult>> results;  // every result received, by task

 private:
  std::optional<v1::Envelope> Receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
    zmq::message_t id, body;
    if (!router_.recv(id, zmq::recv_flags::dontwait) || !id.more() || !router_.recv(body)) return std::nullopt;
    peer_ = id.to_string();
    v1::Envelope env;
    if (!FromMessage(body, &env)) return std::nullopt;
    return env;
  }
  void Handle(const v1::Envelope& env) {
    if (env.has_register_()) {
      v1::Envelope ok;
      ok.mutable_registered()->set_session_id(env.register_().session_id());
      ok.mutable_registered()->set_heartbeat_period_ms(1000);
      ok.mutable_registered()->set_heartbeat_misses(30);
      ok.mutable_registered()->set_max_message_bytes(10 << 20);
      ok.mutable_registered()->set_lease_epoch(1);
      Send(ok);
      registered = true;
    } else if (env.has_heartbeat()) {
      Send(env);
    } else if (env.has_results() && env.results().results_size() > 0) {
      v1::Envelope ack;
      for (const auto& r : env.results().results()) {
        results[r.task_id()].push_back(r);
        ack.mutable_ack()->add_task_ids(r.task_id());
      }
      Send(ack);
    }
  }

  zmq::context_t ctx_;
  zmq::socket_t router_;
  std::string address_;
  std::string peer_;
};

v1::TaskSpec Spec(const std::string& id, const std::string& kernel, std::vector<Value> args) {
  v1::TaskSpec t;
  t.set_task_id(id);
  t.set_function(kernel.substr(0, kernel.find('@')));
  t.set_kernel(kernel);
  for (auto& a : args) *t.add_args() = std::move(a);
  return t;
}

// Both ways a worker the endpoint started talks to it (--worker-link): a socket of its own, and
// the ZeroMQ ROUTER socket that workers in containers use.
class WorkerCrashLinkTest : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Links, WorkerCrashLinkTest, ::testing::Values("socket", "zmq"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST_P(WorkerCrashLinkTest, ADeathIsChargedToTheTaskThatCrashedNotToTasksThatFinishedBeforeIt) {
  loom::testing::TempDir dir("worker-crash");
  FakeService service;
  const std::string log = dir.path() + "/endpoint.log";
  SpawnOptions o;
  o.log_path = log;
  // One worker: every task of a batch goes to it, in order, in one message.
  auto ep = Subprocess::Spawn(
      {BinDir() + "/loom-endpoint", "--id", "ep", "--service", service.address(), "--workers", "1", "--run-dir",
       dir.path() + "/run", "--spool-dir", dir.path() + "/spool", "--log-level", "debug", "--worker-link", GetParam()},
      o);
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  ASSERT_TRUE(service.ServeUntil([&] { return service.registered; }, 20s)) << ReadFileOrEmpty(log);

  // Each round: two adds that finish, then a crash, then an add that waits behind it. Before a
  // worker's death was charged through its running slot, the first add of each batch took the
  // blame: its result was still in the worker when the crash kernel killed it.
  constexpr int kRounds = 10;
  for (int round = 0; round < kRounds; ++round) {
    const std::string n = std::to_string(round);
    v1::Envelope batch;
    auto* tasks = batch.mutable_tasks();
    *tasks->add_tasks() = Spec("a" + n, "add@1", {IntValue(round), IntValue(1)});
    *tasks->add_tasks() = Spec("b" + n, "add@1", {IntValue(round), IntValue(2)});
    *tasks->add_tasks() = Spec("crash" + n, "crash@1", {});
    *tasks->add_tasks() = Spec("d" + n, "add@1", {IntValue(round), IntValue(4)});
    service.Send(batch);
    ASSERT_TRUE(service.ServeUntil(
        [&] {
          for (const char* p : {"a", "b", "crash", "d"}) {
            if (!service.results.contains(p + n)) return false;
          }
          return true;
        },
        30s))
        << "round " << round << "\n"
        << ReadFileOrEmpty(log);
    for (const auto& [p, add] : std::vector<std::pair<std::string, int>>{{"a", 1}, {"b", 2}, {"d", 4}}) {
      const auto& got = service.results.at(p + n);
      ASSERT_EQ(got.size(), 1u) << p + n;
      EXPECT_TRUE(got[0].ok()) << p + n << ": " << got[0].error();
      EXPECT_EQ(got[0].failure(), v1::FAILURE_KIND_UNSPECIFIED) << p + n;
      EXPECT_EQ(got[0].value().int_value(), round + add) << p + n;
    }
    const auto& crash = service.results.at("crash" + n);
    ASSERT_EQ(crash.size(), 1u);
    EXPECT_FALSE(crash[0].ok());
    EXPECT_EQ(crash[0].failure(), v1::FAILURE_KIND_WORKER_LOST);
    EXPECT_NE(crash[0].error().find("signal 9"), std::string::npos) << crash[0].error();
  }
  EXPECT_EQ(service.results.size(), 4u * kRounds);
  ep->Stop();
  // The workers went the way asked for.
  const std::string said = ReadFileOrEmpty(log);
  if (GetParam() == "socket") {
    EXPECT_NE(said.find("on its endpoint's socket"), std::string::npos) << said;
  } else {
    EXPECT_NE(said.find("connecting to ipc://"), std::string::npos) << said;
  }
}

// A worker that dies before it says hello (a missing library, a sandbox that cannot start it) is
// started again with backoff, 0.5 s doubling, not in a tight loop; while none has started, the
// endpoint says so rather than blaming the service. The stand-in worker fails its first three
// starts, then runs the real loom-worker, and records when each start happened.
TEST(WorkerCrashTest, AWorkerThatFailsToStartIsStartedAgainWithBackoff) {
  loom::testing::TempDir dir("worker-backoff");
  const std::string starts = dir.path() + "/starts";
  const std::string script = dir.path() + "/flaky-worker";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\n"
        << "date +%s%N >> '" << starts << "'\n"
        << "[ \"$(wc -l < '" << starts << "')\" -le 3 ] && exit 1\n"
        << "exec '" << BinDir() << "/loom-worker' \"$@\"\n";
  }
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  FakeService service;
  const std::string log = dir.path() + "/endpoint.log";
  SpawnOptions o;
  o.log_path = log;
  // A short liveness threshold (0.6 s): the three failed starts outlast it.
  auto ep =
      Subprocess::Spawn({BinDir() + "/loom-endpoint", "--id", "ep", "--service", service.address(), "--workers", "1",
                         "--worker-binary", script, "--heartbeat-period-ms", "200", "--heartbeat-misses", "3",
                         "--run-dir", dir.path() + "/run", "--spool-dir", dir.path() + "/spool", "--log-level", "info"},
                        o);
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  ASSERT_TRUE(service.ServeUntil([&] { return service.registered; }, 30s)) << ReadFileOrEmpty(log);

  std::vector<int64_t> at;
  {
    std::ifstream in(starts);
    for (int64_t ns; in >> ns;) at.push_back(ns);
  }
  ASSERT_EQ(at.size(), 4u) << ReadFileOrEmpty(log);
  const int64_t backoff_ms[] = {500, 1000, 2000};
  for (size_t k = 0; k + 1 < at.size(); ++k) {
    EXPECT_GE((at[k + 1] - at[k]) / 1000000, backoff_ms[k]) << "start " << k + 2 << " came too soon";
  }
  const std::string text = ReadFileOrEmpty(log);
  for (int ms : backoff_ms) {
    EXPECT_NE(text.find("before it connected; starting slot w0 again in " + std::to_string(ms) + " ms"),
              std::string::npos)
        << text;
  }
  EXPECT_NE(text.find("no worker has said hello yet"), std::string::npos) << text;
  EXPECT_EQ(text.find("no answer from the service"), std::string::npos) << text;

  // The fourth start is a real worker, and it works.
  v1::Envelope batch;
  *batch.mutable_tasks()->add_tasks() = Spec("t1", "add@1", {IntValue(40), IntValue(2)});
  service.Send(batch);
  ASSERT_TRUE(service.ServeUntil([&] { return service.results.contains("t1"); }, 30s)) << ReadFileOrEmpty(log);
  ASSERT_TRUE(service.results.at("t1")[0].ok()) << service.results.at("t1")[0].error();
  EXPECT_EQ(service.results.at("t1")[0].value().int_value(), 42);
  ep->Stop();
}

}  // namespace
}  // namespace loom
