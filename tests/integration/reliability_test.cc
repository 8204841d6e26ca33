// The fault suite: Loom's promise under real failures. Real redis-server, loom-service,
// loom-endpoint and loom-worker processes on 127.0.0.1 (ports picked at run time), killed with
// SIGKILL, stopped with SIGSTOP, or cut off by a TCP fault proxy. A DeliveryChecker records
// every acknowledged submit and every terminal record the client sees, and asserts at the end:
// every acknowledged task has exactly one terminal result, no result for an unknown task,
// attempts within the maximum, values correct.
//
// Liveness settings are shortened where a case waits for them (--heartbeat-period-ms), so the
// suite stays fast; case 1 keeps the defaults (1 s period, 3 misses).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "common/local_fabric.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/delivery_checker.h"
#include "tests/support/fabric_client.h"
#include "tests/support/fault_proxy.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::ConnectAsEndpoint;
using loom::testing::ConnectClient;
using loom::testing::DeliveryChecker;
using loom::testing::MakeFabric;
using loom::testing::RegisterBuiltins;
using loom::testing::WaitFor;
using Clock = std::chrono::steady_clock;

v1::SubmitRequest Req(const std::string& ep, const std::string& fn, std::vector<Value> args, int max_attempts = 0,
                      int64_t timeout_ms = 0, const std::string& key = "") {
  v1::SubmitRequest r;
  r.set_endpoint(ep);
  r.set_function(fn);
  for (auto& a : args) *r.add_args() = std::move(a);
  r.set_max_attempts(max_attempts);
  r.set_timeout_ms(timeout_ms);
  r.set_idempotency_key(key);
  return r;
}

std::string SubmitOne(Client& c, v1::SubmitRequest req) {
  auto ids = c.SubmitBatch({std::move(req)});
  EXPECT_TRUE(ids.ok()) << ids.status().ToString();
  return ids.ok() ? (*ids)[0] : std::string();
}

v1::TaskState StateOf(Client& c, const std::string& id) {
  auto r = c.GetStatus(id);
  return r.ok() ? r->state() : v1::TASK_STATE_UNSPECIFIED;
}

// Submits a `sleep` task and returns its id once it runs ("" if it never started).
std::string SubmitSleepAndWaitUntilRunning(Client& c, double seconds) {
  const std::string id = SubmitOne(c, Req("ep", "sleep", {DoubleValue(seconds)}));
  const bool running = WaitFor([&] { return StateOf(c, id) == v1::TASK_STATE_RUNNING; }, 10s);
  EXPECT_TRUE(running) << "task " << id << " never started";
  return running ? id : std::string();
}

// Waits for every task's terminal record and hands each to the checker.
void CollectAll(Client& c, DeliveryChecker& checker, const std::vector<std::string>& ids,
                std::chrono::milliseconds timeout = 120s) {
  Status s = c.StreamResults(
      ids,
      [&](const v1::TaskRecord& r) {
        checker.Observed(r);
        return true;
      },
      timeout);
  EXPECT_TRUE(s.ok()) << s.ToString();
  // Read every record once more: a second read must show the same terminal result.
  for (size_t i = 0; i < ids.size(); i += 1000) {
    std::vector<std::string> chunk(ids.begin() + i, ids.begin() + std::min(ids.size(), i + 1000));
    auto recs = c.GetTasks(chunk);
    ASSERT_TRUE(recs.ok()) << recs.status().ToString();
    for (const auto& r : *recs) checker.Observed(r);
  }
}

void ExpectDelivered(const DeliveryChecker& checker, int max_attempts) {
  auto report = checker.Check(max_attempts);
  EXPECT_TRUE(report.ok()) << report.Summary();
  EXPECT_EQ(report.lost, 0);
  EXPECT_EQ(report.duplicated, 0);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

// ---------------------------------------------------------------- 1. endpoint killed

TEST(ReliabilityTest, EndpointKilledDuringALongTaskIsDetectedWithinTheThresholdAndTheTaskRunsAgainOnce) {
  auto fabric = MakeFabric("rel-endpoint-kill");  // defaults: 1 s heartbeats, 3 misses
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  DeliveryChecker checker;
  const std::string id = SubmitSleepAndWaitUntilRunning(*client, 5);
  ASSERT_FALSE(id.empty());
  checker.Acknowledged(id);  // sleep returns the time it slept
  const auto killed = Clock::now();
  fabric->KillEndpoint("ep", SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return StateOf(*client, id) == v1::TASK_STATE_WAITING_FOR_ENDPOINT; }, 10s));
  const auto detected = Clock::now() - killed;
  // Threshold 3 s, checked once a period: at most about 4 s.
  EXPECT_LT(detected, 4500ms) << std::chrono::duration_cast<std::chrono::milliseconds>(detected).count() << " ms";
  EXPECT_EQ(client->GetEndpoint("ep")->status(), v1::ENDPOINT_STATUS_OFFLINE);
  ASSERT_TRUE(fabric->StartEndpoint("ep", 1).ok());
  CollectAll(*client, checker, {id}, 30s);
  ExpectDelivered(checker, 3);
  auto rec = *client->GetStatus(id);
  EXPECT_EQ(rec.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(rec.attempts(), 2);
  ASSERT_EQ(rec.attempt_history_size(), 1);
  EXPECT_EQ(rec.attempt_history(0).failure(), v1::FAILURE_KIND_ENDPOINT_LOST);
  EXPECT_NE(rec.attempt_history(0).error().find("missed heartbeats"), std::string::npos);
}

TEST(ReliabilityTest, ALostEndpointsTasksThatAllowFailoverRunOnAnotherEndpointOfItsGroup) {
  auto fabric = MakeFabric("rel-failover", {"--heartbeat-period-ms", "200", "--heartbeat-misses", "3"});
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  ASSERT_TRUE(fabric->StartEndpoint("ep-a", 1, {"--group", "beamline"}).ok());
  ASSERT_TRUE(fabric->StartEndpoint("ep-b", 1, {"--group", "beamline"}).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  DeliveryChecker checker;
  v1::SubmitRequest moves = Req("ep-a", "sleep", {DoubleValue(3)});
  moves.set_failover(true);
  const std::string running = SubmitOne(*client, moves);
  const std::string queued = SubmitOne(*client, moves);                                     // waits behind it on ep-a
  const std::string stays = SubmitOne(*client, Req("ep-a", "sleep", {DoubleValue(0.01)}));  // no failover
  for (const auto& id : {running, queued, stays}) checker.Acknowledged(id);
  ASSERT_TRUE(WaitFor([&] { return StateOf(*client, running) == v1::TASK_STATE_RUNNING; }, 10s));
  fabric->KillEndpoint("ep-a", SIGKILL);
  CollectAll(*client, checker, {running, queued}, 30s);
  for (const auto& id : {running, queued}) {
    auto rec = *client->GetStatus(id);
    EXPECT_EQ(rec.state(), v1::TASK_STATE_SUCCESS);
    EXPECT_EQ(rec.endpoint(), "ep-b");
  }
  EXPECT_EQ(client->GetStatus(running)->attempt_history(0).failure(), v1::FAILURE_KIND_ENDPOINT_LOST);
  // The task that does not allow failover waits for its own endpoint.
  EXPECT_EQ(StateOf(*client, stays), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  ASSERT_TRUE(fabric->StartEndpoint("ep-a", 1, {"--group", "beamline"}).ok());
  CollectAll(*client, checker, {stays}, 30s);
  EXPECT_EQ(client->GetStatus(stays)->endpoint(), "ep-a");
  ExpectDelivered(checker, 3);
}

// ---------------------------------------------------------------- 2. worker killed

TEST(ReliabilityTest, WorkerKilledMidTaskIsReportedAsWorkerLostAndRetried) {
  auto fabric = MakeFabric("rel-worker-kill");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  const pid_t ep_pid = fabric->endpoint("ep")->pid();
  DeliveryChecker checker;
  const std::string id = SubmitSleepAndWaitUntilRunning(*client, 1);
  ASSERT_FALSE(id.empty());
  checker.Acknowledged(id);  // sleep returns the time it slept
  auto workers = loom::testing::ChildPids(ep_pid);
  ASSERT_EQ(workers.size(), 1u);
  ::kill(*workers.begin(), SIGKILL);
  CollectAll(*client, checker, {id}, 30s);
  ExpectDelivered(checker, 3);
  auto rec = *client->GetStatus(id);
  EXPECT_EQ(rec.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(rec.attempts(), 2);
  ASSERT_EQ(rec.attempt_history_size(), 1);
  EXPECT_EQ(rec.attempt_history(0).failure(), v1::FAILURE_KIND_WORKER_LOST);
  EXPECT_NE(rec.attempt_history(0).error().find("signal 9"), std::string::npos) << rec.attempt_history(0).error();
}

// ---------------------------------------------------------------- results survive an endpoint restart

int64_t SpoolBytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind("seg-", 0) == 0) total += static_cast<int64_t>(e.file_size(ec));
  }
  return total;
}

TEST(ReliabilityTest, AResultHeldWhileTheServiceIsDownSurvivesAnEndpointRestartAndIsNotRunAgain) {
  auto fabric = MakeFabric("rel-spool");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  const std::string spool = fabric->state_dir() + "/endpoint-ep-spool";
  const std::string id = SubmitSleepAndWaitUntilRunning(*client, 0.5);
  ASSERT_FALSE(id.empty());
  fabric->KillService(SIGKILL);
  // The task finishes with no service to hear it: its result goes to the spool.
  const int64_t before = SpoolBytes(spool);
  ASSERT_TRUE(WaitFor([&] { return SpoolBytes(spool) > before; }, 10s));
  fabric->KillEndpoint("ep", SIGKILL);
  ASSERT_TRUE(fabric->StartService().ok());
  ASSERT_TRUE(fabric->StartEndpoint("ep", 1).ok());
  DeliveryChecker checker;
  checker.Acknowledged(id);
  CollectAll(*client, checker, {id}, 30s);
  ExpectDelivered(checker, 3);
  auto rec = *client->GetStatus(id);
  EXPECT_EQ(rec.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(rec.attempts(), 1) << "the task ran again instead of its spooled result being used";
  EXPECT_EQ(rec.attempt_history_size(), 0);
}

// ---------------------------------------------------------------- fencing

TEST(ReliabilityTest, ASecondEndpointProcessWithTheSameIdFencesTheFirstWhichStops) {
  auto fabric = MakeFabric("rel-fence");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  const std::string dir = fabric->state_dir();
  SpawnOptions so;
  so.log_path = dir + "/endpoint-ep-second.log";
  std::vector<std::string> argv = {loom::testing::BinDir() + "/loom-endpoint",
                                   "--id",
                                   "ep",
                                   "--service",
                                   fabric->endpoint_address(),
                                   "--workers",
                                   "1",
                                   "--run-dir",
                                   dir + "/second-run",
                                   "--spool-dir",
                                   dir + "/second-spool",
                                   "--log-level",
                                   "info"};
  const auto auth = fabric->EndpointAuthArgs("ep");  // the same endpoint: its key pair
  argv.insert(argv.end(), auth.begin(), auth.end());
  auto second = Subprocess::Spawn(argv, so);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto status = fabric->endpoint("ep")->Wait(15s);
  ASSERT_TRUE(status.has_value()) << "the first endpoint did not stop";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 3) << DescribeWaitStatus(*status);
  EXPECT_NE(ReadFile(fabric->LogPath("endpoint-ep")).find("fenced off by the service"), std::string::npos);
  // The second one serves.
  auto r = client->GetResult(SubmitOne(*client, Req("ep", "echo", {IntValue(5)})), 10s);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->result().int_value(), 5);
  second->Stop(std::chrono::milliseconds(5000));
}

// ---------------------------------------------------------------- 4. endpoint stopped past its lease

TEST(ReliabilityTest, EndpointStoppedPastItsLeaseHasItsLateResultFencedOffAndOneResultIsVisible) {
  auto fabric = MakeFabric("rel-sigstop", {"--heartbeat-period-ms", "200", "--heartbeat-misses", "3"});
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  DeliveryChecker checker;
  // The task (0.3 s) is shorter than the liveness threshold (0.6 s), so when the service
  // declares the stopped endpoint offline, its worker has finished and the result waits.
  const std::string id = SubmitSleepAndWaitUntilRunning(*client, 0.3);
  ASSERT_FALSE(id.empty());
  checker.Acknowledged(id);  // sleep returns the time it slept
  fabric->endpoint("ep")->Signal(SIGSTOP);
  ASSERT_TRUE(WaitFor([&] { return StateOf(*client, id) == v1::TASK_STATE_WAITING_FOR_ENDPOINT; }, 10s));
  ASSERT_TRUE(WaitFor([&] { return client->GetEndpoint("ep")->status() == v1::ENDPOINT_STATUS_OFFLINE; }, 10s));
  fabric->endpoint("ep")->Signal(SIGCONT);
  CollectAll(*client, checker, {id}, 30s);
  ExpectDelivered(checker, 3);
  // The late result was refused and counted: sent on the expired session, or sent again after
  // the endpoint registered anew, when the task was no longer leased to it.
  ASSERT_TRUE(WaitFor(
      [&] { return ReadFile(fabric->LogPath("service")).find("rejected 1 result(s)") != std::string::npos; }, 10s))
      << fabric->LogTail("service");
  auto rec = *client->GetStatus(id);
  EXPECT_EQ(rec.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(rec.attempt_history_size(), 1);
  EXPECT_EQ(rec.attempt_history(0).failure(), v1::FAILURE_KIND_ENDPOINT_LOST);
}

// ---------------------------------------------------------------- 5. service killed

TEST(ReliabilityTest, ServiceKilledWithTasksInFlightFinishesThemAllAndARetriedSubmitCreatesNoDuplicate) {
  auto fabric = MakeFabric("rel-service-kill");
  ASSERT_TRUE(fabric->StartAll("ep", 2).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  constexpr int kN = 1000;
  auto batch = [&] {
    std::vector<v1::SubmitRequest> reqs;
    for (int i = 0; i < kN; ++i) {
      reqs.push_back(Req("ep", "sleep", {DoubleValue(0.003)}, 0, 0, "service-kill-" + std::to_string(i)));
    }
    return reqs;
  };
  DeliveryChecker checker;
  auto ids = client->SubmitBatch(batch());
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  for (const auto& id : *ids) checker.Acknowledged(id);  // sleep returns the time it slept
  ASSERT_TRUE(WaitFor(
      [&] {
        auto recs = client->GetTasks(*ids);
        if (!recs.ok()) return false;
        int done = 0;
        for (const auto& r : *recs) done += r.state() == v1::TASK_STATE_SUCCESS;
        return done >= 50;
      },
      30s));
  fabric->KillService(SIGKILL);
  ASSERT_TRUE(fabric->StartService().ok());
  // The client did not hear back (say) and submits the same batch again with the same keys.
  auto again = client->SubmitBatch(batch());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *ids);
  CollectAll(*client, checker, *ids);
  ExpectDelivered(checker, 3);
  EXPECT_EQ(checker.Check(3).succeeded, kN);
}

// ---------------------------------------------------------------- 6. Redis killed

TEST(ReliabilityTest, RedisKilledUnderLoadAndRestartedOnItsAofLosesNoAcknowledgedTask) {
  auto fabric = MakeFabric("rel-redis-kill");
  ASSERT_TRUE(fabric->StartAll("ep", 2).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  DeliveryChecker checker;
  std::vector<std::string> acked;
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0};
  std::thread load([&] {
    for (int round = 0; !stop; ++round) {
      std::vector<v1::SubmitRequest> reqs;
      for (int i = 0; i < 20; ++i) reqs.push_back(Req("ep", "echo", {IntValue(round * 100 + i)}));
      auto ids = client->SubmitBatch(std::move(reqs));
      if (!ids.ok()) {
        ++refused;
        EXPECT_EQ(ids.status().code(), StatusCode::kUnavailable) << ids.status().ToString();
        std::this_thread::sleep_for(20ms);  // pacing of the load, not synchronisation
        continue;
      }
      std::lock_guard lock(mu);
      for (int i = 0; i < 20; ++i) {
        checker.Acknowledged((*ids)[i], IntValue(round * 100 + i));
        acked.push_back((*ids)[i]);
      }
    }
  });
  auto count = [&] {
    std::lock_guard lock(mu);
    return acked.size();
  };
  ASSERT_TRUE(WaitFor([&] { return count() >= 500; }, 30s));
  fabric->KillRedis(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return refused > 0; }, 10s));
  ASSERT_TRUE(fabric->StartRedis().ok());
  // The service recovers by itself: submits are acknowledged again.
  const size_t before = count();
  ASSERT_TRUE(WaitFor([&] { return count() >= before + 200; }, 30s)) << fabric->LogTail("service");
  stop = true;
  load.join();
  std::vector<std::string> all;
  {
    std::lock_guard lock(mu);
    all = acked;
  }
  CollectAll(*client, checker, all);
  ExpectDelivered(checker, 3);
  EXPECT_TRUE(fabric->service().Running());
}

// ---------------------------------------------------------------- 7. Redis stopped

TEST(ReliabilityTest, RedisStoppedForTenSecondsGivesQuickUnavailableBoundedMemoryAndTheServiceResumes) {
  auto fabric = MakeFabric("rel-redis-stop");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  ASSERT_EQ(client->GetResult(SubmitOne(*client, Req("ep", "echo", {IntValue(1)})), 10s)->value().state(),
            v1::TASK_STATE_SUCCESS);
  const pid_t service_pid = fabric->service().pid();
  const int64_t rss_before = RssKiB(service_pid);
  fabric->redis().Signal(SIGSTOP);
  const auto stopped = Clock::now();
  int calls = 0;
  std::chrono::milliseconds slowest{0};
  while (Clock::now() - stopped < 10s) {
    const auto t0 = Clock::now();
    auto r = client->Submit("ep", "echo", {IntValue(2)});
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    slowest = std::max(slowest, took);
    ++calls;
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  }
  // One call may wait out the Redis command timeout (2 s); the others fail fast.
  EXPECT_LE(slowest, 2500ms);
  EXPECT_GT(calls, 20);
  const int64_t rss_during = RssKiB(service_pid);
  EXPECT_LT(rss_during - rss_before, 64 * 1024) << rss_before << " KiB -> " << rss_during << " KiB";
  fabric->redis().Signal(SIGCONT);
  DeliveryChecker checker;
  std::string id;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = client->Submit("ep", "echo", {IntValue(3)});
        if (r.ok()) id = *r;
        return r.ok();
      },
      15s));
  checker.Acknowledged(id, IntValue(3));
  CollectAll(*client, checker, {id}, 30s);
  ExpectDelivered(checker, 3);
}

// ---------------------------------------------------------------- 8. a faulty network

TEST(ReliabilityTest, ThroughDelayResetAndBlackHoleTheEndpointReconnectsAndNoResultIsDuplicated) {
  auto fabric = MakeFabric("rel-proxy", {"--heartbeat-period-ms", "200", "--heartbeat-misses", "3"});
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  const std::string addr = fabric->endpoint_address();
  const int port = std::stoi(addr.substr(addr.rfind(':') + 1));
  loom::testing::FaultProxy proxy("127.0.0.1", port);
  ASSERT_TRUE(proxy.Start().ok());
  ASSERT_TRUE(fabric->StartEndpoint("ep", 2, {"--service", proxy.endpoint()}).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  DeliveryChecker checker;
  std::vector<std::string> ids;
  auto submit = [&](int n, double seconds) {
    std::vector<v1::SubmitRequest> reqs;
    for (int i = 0; i < n; ++i) reqs.push_back(Req("ep", "sleep", {DoubleValue(seconds)}));
    auto got = client->SubmitBatch(std::move(reqs));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    for (const auto& id : *got) {
      checker.Acknowledged(id);  // sleep returns the time it slept
      ids.push_back(id);
    }
  };
  auto all_done = [&] {
    auto recs = client->GetTasks(ids);
    if (!recs.ok()) return false;
    for (const auto& r : *recs) {
      if (r.state() != v1::TASK_STATE_SUCCESS) return false;
    }
    return true;
  };
  // Delay: slower, but everything arrives.
  proxy.Delay(100ms);
  submit(50, 0.005);
  ASSERT_TRUE(WaitFor(all_done, 60s));
  // Reset: every connection dies; ZeroMQ reconnects and the endpoint carries on.
  proxy.Pass();
  submit(200, 0.01);
  proxy.Reset();
  ASSERT_TRUE(WaitFor(all_done, 60s)) << fabric->LogTail("endpoint-ep");
  // Black hole longer than the liveness threshold: the service requeues, the endpoint opens a
  // new connection once the route is back, and nothing runs into a duplicate commit.
  submit(200, 0.01);
  proxy.BlackHole();
  ASSERT_TRUE(WaitFor([&] { return client->GetEndpoint("ep")->status() == v1::ENDPOINT_STATUS_OFFLINE; }, 10s));
  proxy.Pass();
  ASSERT_TRUE(WaitFor(all_done, 60s)) << fabric->LogTail("endpoint-ep");
  CollectAll(*client, checker, ids);
  ExpectDelivered(checker, 3);
  EXPECT_GE(proxy.counters().resets, 1);
}

// ---------------------------------------------------------------- 9. cancel and deadlines

TEST(ReliabilityTest, CancelStopsARunningTaskWithinASecondAndRemovesAQueuedOne) {
  auto fabric = MakeFabric("rel-cancel");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  const pid_t ep_pid = fabric->endpoint("ep")->pid();
  const std::string running = SubmitOne(*client, Req("ep", "sleep", {DoubleValue(60)}));
  const std::string queued = SubmitOne(*client, Req("ep", "sleep", {DoubleValue(60)}));
  ASSERT_TRUE(WaitFor([&] { return StateOf(*client, running) == v1::TASK_STATE_RUNNING; }, 10s));
  auto worker = loom::testing::ChildPids(ep_pid);
  ASSERT_EQ(worker.size(), 1u);
  const auto t0 = Clock::now();
  auto c1 = client->Cancel(running);
  ASSERT_TRUE(c1.ok());
  EXPECT_EQ(c1->state(), v1::TASK_STATE_CANCELLED);
  auto c2 = client->Cancel(queued);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->state(), v1::TASK_STATE_CANCELLED);
  // The worker running it is stopped and replaced within a second.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto now = loom::testing::ChildPids(ep_pid);
        return now.size() == 1 && *now.begin() != *worker.begin();
      },
      5s));
  EXPECT_LT(Clock::now() - t0, 1500ms);
  // The replacement serves at once; neither cancelled task ever reports anything else.
  auto next = client->GetResult(SubmitOne(*client, Req("ep", "echo", {IntValue(7)})), 10s);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->result().int_value(), 7);
  EXPECT_EQ(StateOf(*client, running), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(StateOf(*client, queued), v1::TASK_STATE_CANCELLED);
}

TEST(ReliabilityTest, ATaskPastItsDeadlineFailsWithATimeoutAndItsWorkerIsReplaced) {
  auto fabric = MakeFabric("rel-deadline");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  const auto t0 = Clock::now();
  auto r = client->GetResult(SubmitOne(*client, Req("ep", "sleep", {DoubleValue(30)}, 0, /*timeout_ms=*/300)), 10s);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_EQ((*r)->state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ((*r)->failure(), v1::FAILURE_KIND_TIMEOUT);
  EXPECT_NE((*r)->error().find("deadline of 300 ms"), std::string::npos) << (*r)->error();
  EXPECT_EQ((*r)->attempts(), 1);  // a timeout is not retried
  auto next = client->GetResult(SubmitOne(*client, Req("ep", "echo", {IntValue(8)})), 10s);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->result().int_value(), 8);
}

// ---------------------------------------------------------------- 10. back-pressure

TEST(ReliabilityTest, SubmitPastTheQueueDepthLimitIsRefusedAndEarlierTasksAreUnaffected) {
  auto fabric = MakeFabric("rel-queue-limit", {"--max-queue-depth", "5"});
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  ASSERT_TRUE(client->CreateEndpoint("ep").ok());
  DeliveryChecker checker;
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(SubmitOne(*client, Req("ep", "echo", {IntValue(i)})));
    checker.Acknowledged(ids.back(), IntValue(i));
  }
  auto refused = client->SubmitBatch({Req("ep", "echo", {IntValue(5)})});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("max_queue_depth"), std::string::npos) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("limit of 5"), std::string::npos) << refused.status().ToString();
  ASSERT_TRUE(fabric->StartEndpoint("ep", 1).ok());
  CollectAll(*client, checker, ids, 30s);
  ExpectDelivered(checker, 3);
  EXPECT_EQ(checker.Check(3).succeeded, 5);
}

TEST(ReliabilityTest, AnEndpointThatStopsReadingHitsTheHighWaterMarkAndIsDroppedWithItsTasksRequeued) {
  auto fabric = MakeFabric("rel-hwm", {"--zmq-high-water-mark", "2"});
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  // A stalled endpoint: registers, asks for plenty of work, and never reads again.
  zmq::context_t ctx;
  zmq::socket_t stalled(ctx, zmq::socket_type::dealer);
  stalled.set(zmq::sockopt::linger, 0);
  stalled.set(zmq::sockopt::rcvhwm, 1);
  stalled.set(zmq::sockopt::rcvbuf, 4096);
  stalled.set(zmq::sockopt::routing_id, "stalled-1");
  ConnectAsEndpoint(*fabric, "ep", stalled);
  v1::Envelope reg;
  reg.mutable_register_()->set_endpoint_id("ep");
  reg.mutable_register_()->set_session_id("stalled");
  reg.mutable_register_()->set_credit(100000);
  std::string bytes = reg.SerializeAsString();
  ASSERT_TRUE(stalled.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
  ASSERT_TRUE(WaitFor(
      [&] {
        return client->GetEndpoint("ep").ok() && client->GetEndpoint("ep")->status() == v1::ENDPOINT_STATUS_ONLINE;
      },
      10s));
  // 64 KiB tasks, sent as they are submitted: the socket buffers fill, then the queue for this
  // peer, and the service drops the session instead of growing without bound.
  DeliveryChecker checker;
  std::vector<std::string> ids;
  const std::string blob(64 * 1024, 'b');
  for (int i = 0; i < 400 && client->GetEndpoint("ep")->status() == v1::ENDPOINT_STATUS_ONLINE; ++i) {
    ids.push_back(SubmitOne(*client, Req("ep", "echo", {StringValue(blob)})));
    checker.Acknowledged(ids.back(), StringValue(blob));
  }
  ASSERT_TRUE(WaitFor([&] { return client->GetEndpoint("ep")->status() == v1::ENDPOINT_STATUS_OFFLINE; }, 20s))
      << fabric->LogTail("service");
  EXPECT_NE(ReadFile(fabric->LogPath("service")).find("cannot send to it"), std::string::npos);
  EXPECT_TRUE(fabric->service().Running());
  // A real endpoint with the same id takes over; every task runs once.
  stalled.close();
  ASSERT_TRUE(fabric->StartEndpoint("ep", 2).ok());
  CollectAll(*client, checker, ids, 60s);
  ExpectDelivered(checker, 3);
}

TEST(ReliabilityTest, AnOversizedFrameOnTheEndpointSocketIsDroppedAndTheServiceKeepsServing) {
  auto fabric = MakeFabric("rel-maxmsgsize", {"--max-message-bytes", "65536"});
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  auto client = ConnectClient(*fabric);
  RegisterBuiltins(*client);
  zmq::context_t ctx;
  zmq::socket_t rogue(ctx, zmq::socket_type::dealer);
  rogue.set(zmq::sockopt::linger, 0);
  ConnectAsEndpoint(*fabric, "ep", rogue);  // authenticated, so the frame reaches the size check
  std::string big(4 << 20, 'x');            // over ZMQ_MAXMSGSIZE (max_message_bytes + 1 MiB)
  ASSERT_TRUE(rogue.send(zmq::buffer(big), zmq::send_flags::none).has_value());
  for (int i = 0; i < 3; ++i) {
    auto r = client->GetResult(SubmitOne(*client, Req("ep", "echo", {IntValue(i)})), 10s);
    ASSERT_TRUE(r.ok() && r->has_value());
    EXPECT_EQ((*r)->result().int_value(), i);
  }
  EXPECT_TRUE(fabric->service().Running());
}

TEST(ReliabilityTest, ResultsReadyTogetherAreSplitIntoMessagesUnderTheSizeLimit) {
  // 40 results of 40 KiB finish before the client follows them: one burst of 1.6 MiB, which the
  // service must split, as one message would pass what this client accepts (2 x 64 KiB + 1 MiB).
  auto fabric = MakeFabric("rel-burst-split", {"--max-message-bytes", "65536"});
  ASSERT_TRUE(fabric->StartAll("ep", 2).ok());
  ClientOptions o;
  o.address = fabric->grpc_address();
  o.token = fabric->token();
  o.rpc_timeout = 10s;
  o.max_message_bytes = 65536;
  auto client = Client::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  RegisterBuiltins(**client);
  std::vector<std::string> ids;
  std::map<std::string, std::string> want;
  for (int i = 0; i < 40; ++i) {
    std::string blob(40 * 1024, static_cast<char>('a' + i % 26));
    blob += std::to_string(i);
    ids.push_back(SubmitOne(**client, Req("ep", "echo", {StringValue(blob)})));
    want[ids.back()] = blob;
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& id : ids) {
          if (StateOf(**client, id) != v1::TASK_STATE_SUCCESS) return false;
        }
        return true;
      },
      30s));
  std::map<std::string, std::string> got;
  Status s = (*client)->StreamResults(
      ids,
      [&](const v1::TaskRecord& r) {
        got[r.id()] = r.result().string_value();
        return true;
      },
      30s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace loom
