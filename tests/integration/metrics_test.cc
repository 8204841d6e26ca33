// Prometheus metrics end to end (docs/METRICS.md): a real fabric with --metrics-address
// 127.0.0.1:0 on the service and the endpoint, tasks run through the SDK, and both /metrics
// pages scraped over loopback HTTP and checked by name, label and value.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/local_fabric.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/http_get.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::HttpGet;
using loom::testing::ScrapeValue;
using loom::testing::WaitFor;

std::unique_ptr<LocalFabric> MakeMetricsFabric(const std::string& name, std::vector<std::string> service_args = {}) {
  LocalFabricOptions o;
  o.service_args = std::move(service_args);
  o.bin_dir = loom::testing::BinDir();
  o.state_dir = loom::testing::MakeTempDir(name);
  o.log_level = "info";
  o.metrics = true;
  o.remove_state_dir = std::getenv("LOOM_KEEP_TEST_STATE") == nullptr;
  return std::make_unique<LocalFabric>(o);
}

std::string Scrape(const std::string& address) {
  auto body = HttpGet(address);
  EXPECT_TRUE(body.ok()) << body.status().ToString();
  return body.ok() ? *body : "";
}

// Polls the scrape at `address` until `series` has `want` (metrics are updated after results
// are published, and queue depths are sampled on a timer).
::testing::AssertionResult EventuallyEquals(const std::string& address, const std::string& series, double want) {
  std::optional<double> last;
  std::string scrape;
  if (WaitFor(
          [&] {
            scrape = Scrape(address);
            last = ScrapeValue(scrape, series);
            return last && *last == want;
          },
          20s)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << series << " is " << (last ? std::to_string(*last) : "missing")
                                       << ", expected " << want << "; scrape:\n"
                                       << scrape.substr(0, 6000);
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fabric_ = MakeMetricsFabric("metrics");
    Status s = fabric_->StartAll("ep", 2);
    ASSERT_TRUE(s.ok()) << s.ToString();
    svc_ = fabric_->service_metrics_address();
    ep_ = fabric_->endpoint_metrics_address("ep");
    ASSERT_FALSE(svc_.empty()) << "the service's ready file names no metrics address";
    ASSERT_FALSE(ep_.empty()) << "the endpoint's ready file names no metrics address";
    client_ = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client_, nullptr);
    loom::testing::RegisterBuiltins(*client_);
  }
  std::unique_ptr<LocalFabric> fabric_;
  std::unique_ptr<Client> client_;
  std::string svc_, ep_;
};

TEST_F(MetricsTest, ServiceAndEndpointCountTasksByOutcomeWithHopLatencies) {
  constexpr int kOk = 7;
  std::vector<std::string> ids;
  for (int i = 0; i < kOk; ++i) {
    auto id = client_->Submit("ep", "echo", {IntValue(i)});
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  auto failed = client_->Submit("ep", "fail", {StringValue("on purpose")});
  ASSERT_TRUE(failed.ok()) << failed.status().ToString();
  ids.push_back(*failed);
  for (const auto& id : ids) {
    auto r = client_->GetResult(id, 30s);
    ASSERT_TRUE(r.ok() && r->has_value()) << id;
  }

  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_tasks_completed_total{state="success"})", kOk));
  const std::string s = Scrape(svc_);
  EXPECT_EQ(ScrapeValue(s, R"(loom_tasks_completed_total{state="failed"})"), 1);
  EXPECT_EQ(ScrapeValue(s, R"(loom_tasks_completed_total{state="cancelled"})"), 0);
  EXPECT_EQ(ScrapeValue(s, R"(loom_tasks_failed_total{failure="kernel_error"})"), 1);
  EXPECT_EQ(ScrapeValue(s, R"(loom_tasks_failed_total{failure="worker_lost"})"), 0);
  EXPECT_EQ(ScrapeValue(s, "loom_tasks_submitted_total"), kOk + 1);
  EXPECT_EQ(ScrapeValue(s, "loom_tasks_dispatched_total"), kOk + 1);
  EXPECT_EQ(ScrapeValue(s, "loom_results_committed_total"), kOk + 1);
  EXPECT_EQ(ScrapeValue(s, "loom_results_rejected_total"), 0);
  EXPECT_EQ(ScrapeValue(s, "loom_sessions_fenced_total"), 0);
  EXPECT_EQ(ScrapeValue(s, "loom_endpoints_online"), 1);
  EXPECT_EQ(ScrapeValue(s, "loom_redis_circuit_open"), 0);
  EXPECT_EQ(ScrapeValue(s, R"(loom_store_errors_total{code="UNAVAILABLE"})"), 0);
  EXPECT_EQ(ScrapeValue(s, R"(loom_grpc_requests_total{code="OK",method="Submit"})"), kOk + 1);
  EXPECT_GE(ScrapeValue(s, R"(loom_grpc_requests_total{code="OK",method="RegisterFunction"})").value_or(0), 1);
  // Every hop of every finished task is observed once, and a task takes more than no time.
  for (const char* hop :
       {"queue", "to_endpoint", "endpoint_to_worker", "kernel", "worker_to_endpoint", "commit", "total"}) {
    const std::string count = std::string("loom_task_hop_seconds_count{hop=\"") + hop + "\"}";
    EXPECT_EQ(ScrapeValue(s, count), kOk + 1) << count;
    EXPECT_EQ(ScrapeValue(s, std::string("loom_task_hop_seconds_bucket{hop=\"") + hop + "\",le=\"+Inf\"}"), kOk + 1);
  }
  EXPECT_GT(ScrapeValue(s, R"(loom_task_hop_seconds_sum{hop="total"})").value_or(0), 0);
  EXPECT_LT(ScrapeValue(s, R"(loom_task_hop_seconds_sum{hop="total"})").value_or(1e9), 60.0 * (kOk + 1));
  // The per-endpoint gauges are sampled: the queue drains to zero.
  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_endpoint_queue_depth{endpoint="ep"})", 0));
  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_endpoint_in_flight{endpoint="ep"})", 0));

  EXPECT_TRUE(EventuallyEquals(ep_, R"(loom_endpoint_tasks_completed_total{outcome="success"})", kOk));
  const std::string e = Scrape(ep_);
  EXPECT_EQ(ScrapeValue(e, R"(loom_endpoint_tasks_completed_total{outcome="failed"})"), 1);
  EXPECT_EQ(ScrapeValue(e, "loom_endpoint_tasks_received_total"), kOk + 1);
  EXPECT_EQ(ScrapeValue(e, "loom_endpoint_results_spooled_total"), kOk + 1);
  EXPECT_EQ(ScrapeValue(e, "loom_endpoint_kernel_seconds_count"), kOk + 1);
  EXPECT_EQ(ScrapeValue(e, "loom_endpoint_task_seconds_count"), kOk + 1);
  EXPECT_EQ(ScrapeValue(e, "loom_endpoint_worker_slots"), 2);
  EXPECT_EQ(ScrapeValue(e, "loom_endpoint_registered"), 1);
  EXPECT_EQ(ScrapeValue(e, "loom_endpoint_registrations_total"), 1);
  EXPECT_EQ(ScrapeValue(e, R"(loom_endpoint_worker_restarts_total{reason="crash"})"), 0);
  // Every result acknowledged, both workers back to idle.
  EXPECT_TRUE(EventuallyEquals(ep_, "loom_endpoint_results_unacknowledged", 0));
  EXPECT_TRUE(EventuallyEquals(ep_, R"(loom_endpoint_workers{state="idle"})", 2));
}

TEST_F(MetricsTest, BuildInfoNamesTheVersionAndTheMallocOfEachDaemon) {
#if LOOM_EXPECT_JEMALLOC
  const std::string allocator = R"(allocator="jemalloc 5.)";
#else
  const std::string allocator = R"(allocator="glibc )";
#endif
  for (const auto& address : {svc_, ep_}) {
    const std::string s = Scrape(address);
    const size_t at = s.find("\nloom_build_info{");
    ASSERT_NE(at, std::string::npos) << address << ":\n" << s;
    const std::string line = s.substr(at + 1, s.find('\n', at + 1) - at - 1);
    if (line.find(R"(allocator="sanitizer malloc")") == std::string::npos) {
      EXPECT_NE(line.find(allocator), std::string::npos) << line;
    }
    EXPECT_NE(line.find(R"(version=")" LOOM_VERSION "\""), std::string::npos) << line;
    EXPECT_EQ(line.substr(line.rfind(' ') + 1), "1") << line;
  }
}

// An endpoint "ep" with 2 workers and `endpoint_args`, whose echo kernel counts as short (timed
// three times, under 10 s whatever the machine's speed); counts the messages to its workers.
class PackingFabric {
 public:
  void Start(const std::string& name, std::vector<std::string> endpoint_args) {
    fabric_ = MakeMetricsFabric(name);
    ASSERT_TRUE(fabric_->StartRedis().ok());
    ASSERT_TRUE(fabric_->StartService().ok());
    endpoint_args.insert(endpoint_args.end(), {"--pack-tasks-under-us", "10000000"});
    ASSERT_TRUE(fabric_->StartEndpoint("ep", 2, endpoint_args).ok());
    ep_ = fabric_->endpoint_metrics_address("ep");
    client_ = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client_, nullptr);
    loom::testing::RegisterBuiltins(*client_);
    for (int i = 0; i < 3; ++i) Run("echo", 1);
  }
  // Submits `n` tasks of `fn` in one batch and waits for them all to succeed, then for both
  // workers to be idle again.
  void Run(const std::string& fn, int n) {
    std::vector<v1::SubmitRequest> reqs;
    for (int i = 0; i < n; ++i) {
      reqs.push_back(MakeSubmitRequest(
          "ep", fn, fn == "add" ? std::vector<Value>{IntValue(i), IntValue(1)} : std::vector<Value>{IntValue(i)}));
    }
    auto ids = client_->SubmitBatch(std::move(reqs));
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    for (const auto& id : *ids) {
      auto r = client_->GetResult(id, 60s);
      ASSERT_TRUE(r.ok() && r->has_value());
      ASSERT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
    }
    ASSERT_TRUE(EventuallyEquals(ep_, R"(loom_endpoint_workers{state="idle"})", 2));
  }
  // Messages to the workers while Run(fn, n) ran.
  double HandoffsFor(const std::string& fn, int n) {
    const double before = Handoffs();
    Run(fn, n);
    return Handoffs() - before;
  }
  double Handoffs() const { return ScrapeValue(Scrape(ep_), "loom_endpoint_worker_handoffs_total").value_or(-1); }

 private:
  std::unique_ptr<LocalFabric> fabric_;
  std::string ep_;
  std::unique_ptr<Client> client_;
};

// A burst of a kernel known to be short goes to one worker in one message; a burst of a kernel
// not yet timed is spread over the idle workers.
TEST(MetricsPackingTest, ABurstOfAShortKernelGoesToOneWorkerAndOthersAreSpread) {
  PackingFabric f;
  ASSERT_NO_FATAL_FAILURE(f.Start("metrics-pack", {}));
  EXPECT_EQ(f.HandoffsFor("echo", 4), 1) << "4 short tasks, 2 idle workers: one message";
  EXPECT_EQ(f.HandoffsFor("add", 2), 2) << "2 tasks of a kernel never timed, 2 idle workers: one each";
}

// --pack-prefetch: a worker takes up to that many tasks of a short kernel in one message, past
// its --prefetch; tasks of a kernel not known to be short still stop at the prefetch.
TEST(MetricsPackingTest, ShortTasksArePackedPastThePrefetchUpToThePackPrefetch) {
  PackingFabric f;
  ASSERT_NO_FATAL_FAILURE(f.Start("metrics-pack-prefetch", {"--prefetch", "2", "--pack-prefetch", "8"}));
  EXPECT_EQ(f.HandoffsFor("echo", 8), 1) << "8 short tasks, 2 idle workers, pack prefetch 8: one message";
  // Spread a share at a time and never past the prefetch: 2 to one worker, 1 to the other, then
  // the last to the one holding fewer.
  EXPECT_EQ(f.HandoffsFor("add", 4), 3) << "4 tasks of a kernel never timed, 2 idle workers, prefetch 2";
}

// --queue-bytes: an endpoint asks for no more tasks than fit in it (at the size it expects:
// at first the largest it accepts), so while its worker is busy the rest wait at the service,
// where another endpoint could have them; without the bound they all come to the endpoint.
TEST(MetricsQueueBytesTest, AnEndpointHoldsWhatItsBytesAllowAndTheRestWaitAtTheService) {
  // The gauges are read every 100 ms, so that they are seen while the sleep runs.
  auto fabric = MakeMetricsFabric("metrics-queue-bytes", {"--metrics-sample-ms", "100"});
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  ASSERT_TRUE(fabric->StartEndpoint("bounded", 1, {"--prefetch", "1", "--queue-bytes", "1048576"}).ok());
  ASSERT_TRUE(fabric->StartEndpoint("unbounded", 1, {"--prefetch", "1", "--queue-bytes", "0"}).ok());
  const std::string svc = fabric->service_metrics_address();
  auto client = loom::testing::ConnectClient(*fabric);
  ASSERT_NE(client, nullptr);
  loom::testing::RegisterBuiltins(*client);
  std::vector<std::string> ids;
  for (const std::string ep : {"bounded", "unbounded"}) {
    // The worker is busy with this one; 10 tasks of 300 KB come after it.
    auto busy = client->Submit(ep, "sleep", {DoubleValue(5)});
    ASSERT_TRUE(busy.ok()) << busy.status().ToString();
    ids.push_back(*busy);
    std::vector<v1::SubmitRequest> reqs;
    for (int i = 0; i < 10; ++i) reqs.push_back(MakeSubmitRequest(ep, "echo", {BytesValue(std::string(300000, 'x'))}));
    auto more = client->SubmitBatch(std::move(reqs));
    ASSERT_TRUE(more.ok()) << more.status().ToString();
    ids.insert(ids.end(), more->begin(), more->end());
  }
  EXPECT_TRUE(EventuallyEquals(svc, R"(loom_endpoint_in_flight{endpoint="bounded"})", 1));
  EXPECT_TRUE(EventuallyEquals(svc, R"(loom_endpoint_queue_depth{endpoint="bounded"})", 10));
  EXPECT_TRUE(EventuallyEquals(svc, R"(loom_endpoint_in_flight{endpoint="unbounded"})", 11));
  EXPECT_TRUE(EventuallyEquals(svc, R"(loom_endpoint_queue_depth{endpoint="unbounded"})", 0));
  for (const auto& id : ids) {
    auto r = client->GetResult(id, 60s);
    ASSERT_TRUE(r.ok() && r->has_value()) << id;
    EXPECT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
  }
}

TEST_F(MetricsTest, QueueDepthOfAnEndpointWithoutSessionAndCancelledTasksAreReported) {
  ASSERT_TRUE(client_->CreateEndpoint("offline").ok());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = client_->Submit("offline", "echo", {IntValue(i)});
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_endpoint_queue_depth{endpoint="offline"})", 3));
  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_endpoint_in_flight{endpoint="offline"})", 0));
  auto c = client_->Cancel(ids[0]);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  // A repeated cancel finds it cancelled already: counted once.
  ASSERT_TRUE(client_->Cancel(ids[0]).ok());
  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_endpoint_queue_depth{endpoint="offline"})", 2));
  const std::string s = Scrape(svc_);
  EXPECT_EQ(ScrapeValue(s, R"(loom_tasks_completed_total{state="cancelled"})"), 1);
  EXPECT_EQ(ScrapeValue(s, R"(loom_grpc_requests_total{code="OK",method="Cancel"})"), 2);
  EXPECT_EQ(ScrapeValue(s, "loom_endpoints_online"), 1);
  // An error is counted under its code.
  EXPECT_FALSE(client_->Submit("no-such-endpoint", "echo", {IntValue(1)}).ok());
  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_grpc_requests_total{code="NOT_FOUND",method="Submit"})", 1));
}

TEST_F(MetricsTest, WorkerCrashesAndTimeoutsCountAsRestartsAndRetries) {
  auto crash = client_->Submit("ep", "crash", {});
  ASSERT_TRUE(crash.ok()) << crash.status().ToString();
  auto r = client_->GetResult(*crash, 60s);
  ASSERT_TRUE(r.ok() && r->has_value());
  ASSERT_EQ((*r)->failure(), v1::FAILURE_KIND_POISON);
  SubmitOptions quick;
  quick.timeout_ms = 200;
  auto slow = client_->Submit("ep", "sleep", {DoubleValue(30)}, {}, quick);
  ASSERT_TRUE(slow.ok()) << slow.status().ToString();
  r = client_->GetResult(*slow, 60s);
  ASSERT_TRUE(r.ok() && r->has_value());
  ASSERT_EQ((*r)->failure(), v1::FAILURE_KIND_TIMEOUT);

  EXPECT_TRUE(EventuallyEquals(ep_, R"(loom_endpoint_worker_restarts_total{reason="crash"})", 3));
  EXPECT_TRUE(EventuallyEquals(ep_, R"(loom_endpoint_worker_restarts_total{reason="timeout"})", 1));
  EXPECT_TRUE(EventuallyEquals(svc_, R"(loom_tasks_failed_total{failure="poison"})", 1));
  const std::string s = Scrape(svc_);
  EXPECT_EQ(ScrapeValue(s, R"(loom_tasks_failed_total{failure="timeout"})"), 1);
  EXPECT_EQ(ScrapeValue(s, "loom_task_retries_total"), 2);  // 3 deaths: 2 retries, then poison
  EXPECT_EQ(ScrapeValue(s, R"(loom_tasks_completed_total{state="failed"})"), 2);
  EXPECT_TRUE(EventuallyEquals(ep_, R"(loom_endpoint_workers{state="idle"})", 2));
}

TEST_F(MetricsTest, AFenceIsCountedAndTheSecondEndpointServesItsOwnMetrics) {
  // A second process with the same id fences the first.
  const std::string dir = fabric_->state_dir();
  const std::string ready = dir + "/second.ready";
  SpawnOptions so;
  so.log_path = dir + "/endpoint-second.log";
  std::vector<std::string> argv = {loom::testing::BinDir() + "/loom-endpoint",
                                   "--id",
                                   "ep",
                                   "--service",
                                   fabric_->endpoint_address(),
                                   "--workers",
                                   "1",
                                   "--run-dir",
                                   dir + "/second-run",
                                   "--spool-dir",
                                   dir + "/second-spool",
                                   "--ready-file",
                                   ready,
                                   "--metrics-address",
                                   "127.0.0.1:0"};
  const auto auth = fabric_->EndpointAuthArgs("ep");  // the same endpoint: its key pair
  argv.insert(argv.end(), auth.begin(), auth.end());
  auto second = Subprocess::Spawn(argv, so);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ready); }, 20s)) << ReadFileOrEmpty(so.log_path);
  std::string twin;
  {
    std::ifstream in(ready);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("metrics=", 0) == 0) twin = line.substr(8);
    }
  }
  ASSERT_FALSE(twin.empty()) << ReadFileOrEmpty(ready);
  EXPECT_NE(twin, ep_);
  EXPECT_TRUE(EventuallyEquals(svc_, "loom_sessions_fenced_total", 1));
  EXPECT_TRUE(EventuallyEquals(twin, "loom_endpoint_registered", 1));
  EXPECT_TRUE(EventuallyEquals(twin, "loom_endpoint_worker_slots", 1));
  EXPECT_TRUE(EventuallyEquals(svc_, "loom_endpoints_online", 1));
  second->Stop(std::chrono::milliseconds(5000));
}

// Runs `argv`, which must exit at once with code 2; returns what it wrote.
std::string RunExpectingUsageError(std::vector<std::string> argv) {
  loom::testing::TempDir dir("metrics-flags");
  SpawnOptions o;
  o.log_path = dir.path() + "/out.log";
  auto p = Subprocess::Spawn(argv, o);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (!p.ok()) return "";
  auto status = p->Wait(10s);
  EXPECT_TRUE(status.has_value()) << argv[0] << " did not exit";
  if (status) {
    EXPECT_TRUE(WIFEXITED(*status)) << DescribeWaitStatus(*status);
    EXPECT_EQ(WEXITSTATUS(*status), 2) << DescribeWaitStatus(*status);
  } else {
    p->Stop();
  }
  return ReadFileOrEmpty(o.log_path);
}

TEST(MetricsFlagsTest, BadMetricsAddressesAreRefusedWithAClearMessage) {
  const std::string bin = loom::testing::BinDir();
  for (const std::string prog : {"loom-service", "loom-endpoint"}) {
    std::vector<std::string> base = {bin + "/" + prog};
    if (prog == "loom-endpoint") base.insert(base.end(), {"--id", "x"});
    auto with = [&](const std::string& addr) {
      auto v = base;
      v.insert(v.end(), {"--metrics-address", addr});
      return v;
    };
    std::string out = RunExpectingUsageError(with("127.0.0.1"));
    EXPECT_NE(out.find("--metrics-address '127.0.0.1' has no port; use HOST:PORT"), std::string::npos)
        << prog << ": " << out;
    out = RunExpectingUsageError(with("127.0.0.1:99999"));
    EXPECT_NE(out.find("port '99999' is not a number from 0 to 65535"), std::string::npos) << prog << ": " << out;
    out = RunExpectingUsageError(with(":9464"));
    EXPECT_NE(out.find("has no host"), std::string::npos) << prog << ": " << out;
  }
  // A value from the config file is checked too.
  loom::testing::TempDir dir("metrics-config");
  const std::string config = dir.path() + "/service.yaml";
  std::ofstream(config) << "metrics_address: \"localhost:http\"\n";
  std::string out = RunExpectingUsageError({bin + "/loom-service", "--config", config});
  EXPECT_NE(out.find("port 'http' is not a number"), std::string::npos) << out;
}

TEST(MetricsFlagsTest, WithoutMetricsNothingIsServed) {
  auto fabric = loom::testing::MakeFabric("no-metrics");
  ASSERT_TRUE(fabric->StartAll("ep", 1).ok());
  EXPECT_EQ(fabric->service_metrics_address(), "");
  EXPECT_EQ(fabric->endpoint_metrics_address("ep"), "");
}

}  // namespace
}  // namespace loom
