// ServiceMetrics without processes: finished records with hand-made timestamps, the
// per-endpoint gauges sampled from an InMemoryTaskStore, the label cap, and the helpers of
// common/metrics.h. Values are read back through prometheus-cpp's own text serializer.
#include "service/metrics.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include "common/util.h"
#include "common/value.h"
#include "service/broker.h"
#include "service/memory_task_store.h"
#include "tests/support/http_get.h"

namespace loom::service {
namespace {

using loom::testing::ScrapeValue;

std::string Text(const ServiceMetrics& m) {
  std::vector<prometheus::MetricFamily> all;
  for (const auto& c : m.collectables()) {
    auto f = c->Collect();
    all.insert(all.end(), f.begin(), f.end());
  }
  return prometheus::TextSerializer().Serialize(all);
}

v1::TaskRecord Record(v1::TaskState state, std::vector<std::pair<std::string, int64_t>> stamps,
                      v1::FailureKind failure = v1::FAILURE_KIND_UNSPECIFIED) {
  v1::TaskRecord r;
  r.set_id(NewId());
  r.set_state(state);
  r.set_failure(failure);
  for (const auto& [stage, ns] : stamps) {
    auto* t = r.add_timestamps();
    t->set_stage(stage);
    t->set_unix_nanos(ns);
  }
  return r;
}

constexpr int64_t kUs = 1000, kMs = 1000 * kUs;

TEST(ServiceMetricsTest, CountsFinishedTasksByStateAndFailureKind) {
  ServiceMetrics m;
  m.TasksSubmitted(4);
  m.TasksFinished({Record(v1::TASK_STATE_SUCCESS, {}), Record(v1::TASK_STATE_SUCCESS, {}),
                   Record(v1::TASK_STATE_FAILED, {}, v1::FAILURE_KIND_POISON)});
  m.TasksFinished({Record(v1::TASK_STATE_CANCELLED, {{"received", 1}, {"cancelled", 2}})});
  m.TasksFinished({});
  const std::string t = Text(m);
  EXPECT_EQ(ScrapeValue(t, "loom_tasks_submitted_total"), 4);
  EXPECT_EQ(ScrapeValue(t, R"(loom_tasks_completed_total{state="success"})"), 2);
  EXPECT_EQ(ScrapeValue(t, R"(loom_tasks_completed_total{state="failed"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_tasks_completed_total{state="cancelled"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_tasks_failed_total{failure="poison"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_tasks_failed_total{failure="kernel_error"})"), 0);
  // A cancelled task has no hops.
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_count{hop="total"})"), 0);
}

TEST(ServiceMetricsTest, ObservesEachHopFromTheFinalAttemptsTimestamps) {
  ServiceMetrics m;
  const int64_t t0 = 1'700'000'000'000'000'000;
  // Requeued once: the hops use the last occurrence of each stage (the attempt that finished).
  m.TasksFinished({Record(v1::TASK_STATE_SUCCESS, {{"received", t0},
                                                   {"waiting-for-endpoint", t0 + 10 * kUs},
                                                   {"dispatched", t0 + 20 * kUs},
                                                   {"requeued", t0 + 1 * kMs},
                                                   {"dispatched", t0 + 2 * kMs},
                                                   {"endpoint_received", t0 + 2 * kMs + 80 * kUs},
                                                   {"worker_started", t0 + 2 * kMs + 120 * kUs},
                                                   {"kernel_finished", t0 + 7 * kMs},
                                                   {"endpoint_result", t0 + 7 * kMs + 40 * kUs},
                                                   {"success", t0 + 9 * kMs}})});
  const std::string t = Text(m);
  auto sum = [&](const char* hop) {
    return ScrapeValue(t, std::string("loom_task_hop_seconds_sum{hop=\"") + hop + "\"}").value_or(-1);
  };
  EXPECT_NEAR(sum("queue"), 2e-3, 1e-9);
  EXPECT_NEAR(sum("to_endpoint"), 80e-6, 1e-9);
  EXPECT_NEAR(sum("endpoint_to_worker"), 40e-6, 1e-9);
  EXPECT_NEAR(sum("kernel"), 7e-3 - 2.12e-3, 1e-9);
  EXPECT_NEAR(sum("worker_to_endpoint"), 40e-6, 1e-9);
  EXPECT_NEAR(sum("commit"), 2e-3 - 40e-6, 1e-9);
  EXPECT_NEAR(sum("total"), 9e-3, 1e-9);
  // Bucket bounds hold values <= bound: 80 us lands in le=0.0001, not le=5e-05.
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_bucket{hop="to_endpoint",le="5e-05"})"), 0);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_bucket{hop="to_endpoint",le="0.0001"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_bucket{hop="total",le="0.01"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_bucket{hop="total",le="0.005"})"), 0);
}

TEST(ServiceMetricsTest, ALargeRoundIsObservedAsItsTasksOneByOneWouldBe) {
  // Rounds of many tasks go through HistogramBatch; small ones are observed one by one.
  ServiceMetrics one_by_one, as_round;
  std::vector<v1::TaskRecord> round;
  for (int i = 0; i < 40; ++i) {
    round.push_back(Record(v1::TASK_STATE_SUCCESS,
                           {{"received", kMs}, {"dispatched", kMs + i * 30 * kUs}, {"success", kMs + i * 5 * kMs}}));
    one_by_one.TasksFinished({round.back()});
  }
  as_round.TasksFinished(round);
  EXPECT_EQ(Text(one_by_one), Text(as_round));
  EXPECT_EQ(ScrapeValue(Text(as_round), R"(loom_task_hop_seconds_count{hop="queue"})"), 40);
}

TEST(ServiceMetricsTest, HopsWithAMissingStampAreSkippedAndClockSkewCountsAsZero) {
  ServiceMetrics m;
  // Failed for good when its endpoint was lost: no endpoint or worker stamps.
  m.TasksFinished(
      {Record(v1::TASK_STATE_FAILED, {{"received", 1000}, {"dispatched", 2000}, {"failed", 5000}},
              v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED),
       // The endpoint's clock runs behind the service's.
       Record(v1::TASK_STATE_SUCCESS,
              {{"received", 1000}, {"dispatched", 9000}, {"endpoint_received", 4000}, {"success", 20000}})});
  const std::string t = Text(m);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_count{hop="queue"})"), 2);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_count{hop="total"})"), 2);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_count{hop="kernel"})"), 0);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_count{hop="to_endpoint"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_task_hop_seconds_sum{hop="to_endpoint"})"), 0);
  EXPECT_EQ(ScrapeValue(t, R"(loom_tasks_failed_total{failure="attempts_exhausted"})"), 1);
}

TEST(ServiceMetricsTest, CountsGrpcRequestsByMethodAndCodeCreatingSeriesOnlyWhenSeen) {
  ServiceMetrics m;
  m.GrpcRequest(GrpcMethod::kSubmit, 0);
  m.GrpcRequest(GrpcMethod::kSubmit, 0);
  m.GrpcRequest(GrpcMethod::kSubmit, static_cast<int>(StatusCode::kNotFound));
  m.GrpcRequest(GrpcMethod::kWaitResults, 99);  // out of range: UNKNOWN
  const std::string t = Text(m);
  EXPECT_EQ(ScrapeValue(t, R"(loom_grpc_requests_total{code="OK",method="Submit"})"), 2);
  EXPECT_EQ(ScrapeValue(t, R"(loom_grpc_requests_total{code="NOT_FOUND",method="Submit"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_grpc_requests_total{code="UNKNOWN",method="WaitResults"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_grpc_requests_total{code="OK",method="Cancel"})"), std::nullopt);
}

NewTask Queued(const std::string& endpoint) {
  NewTask t;
  t.id = NewId();
  t.owner = "local";
  t.function = "f";
  t.endpoint = endpoint;
  t.spec.set_task_id(t.id);
  t.spec.set_kernel("echo@1");
  return t;
}

TEST(ServiceMetricsTest, SamplesQueueDepthPerEndpointAndSumsThoseOverTheLabelCap) {
  InMemoryTaskStore store;
  for (const char* id : {"a", "b", "c", "d"}) {
    v1::EndpointRecord e;
    e.set_id(id);
    ASSERT_TRUE(store.PutEndpoint(e).ok());
  }
  std::vector<NewTask> tasks;
  for (int i = 0; i < 1; ++i) tasks.push_back(Queued("a"));
  for (int i = 0; i < 2; ++i) tasks.push_back(Queued("b"));
  for (int i = 0; i < 3; ++i) tasks.push_back(Queued("c"));
  for (int i = 0; i < 4; ++i) tasks.push_back(Queued("d"));
  ASSERT_TRUE(store.SubmitTasks(tasks, 1).ok());
  // Sessions of epoch 1: the store leases only to an endpoint's latest session.
  ASSERT_EQ(store.RegisterSession("c", {}, "test", 1)->lease_epoch, 1);
  ASSERT_EQ(store.RegisterSession("d", {}, "test", 1)->lease_epoch, 1);
  auto leased = store.LeaseTasks("d", 1, 1, 2);
  ASSERT_TRUE(leased.ok() && leased->size() == 1);

  ServiceMetrics m(ServiceMetricsOptions{.max_endpoint_labels = 2});
  ASSERT_TRUE(m.SampleEndpoints(store).ok());
  std::string t = Text(m);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_queue_depth{endpoint="a"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_queue_depth{endpoint="b"})"), 2);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_queue_depth{endpoint="c"})"), std::nullopt);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_queue_depth{endpoint="_other"})"), 3 + 3);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_in_flight{endpoint="_other"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_in_flight{endpoint="a"})"), 0);

  // The labelled set is sticky, and _other follows the rest as they change.
  ASSERT_TRUE(store.SubmitTasks({Queued("a")}, 3).ok());
  ASSERT_TRUE(store.LeaseTasks("c", 1, 3, 4).ok());
  ASSERT_TRUE(m.SampleEndpoints(store).ok());
  t = Text(m);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_queue_depth{endpoint="a"})"), 2);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_queue_depth{endpoint="_other"})"), 0 + 3);
  EXPECT_EQ(ScrapeValue(t, R"(loom_endpoint_in_flight{endpoint="_other"})"), 3 + 1);
  EXPECT_EQ(ScrapeValue(t, "loom_metrics_sample_errors_total"), 0);
}

TEST(ServiceMetricsTest, ReadsBrokerCountersAtScrapeTime) {
  ServiceMetrics m;
  BrokerStats stats;
  m.AttachBroker(stats);
  stats.tasks_dispatched += 5;
  stats.results_rejected += 2;
  stats.sessions_fenced += 1;
  stats.tasks_requeued += 7;
  stats.endpoints_online = 3;
  ++stats.store_errors_by_code[static_cast<size_t>(StatusCode::kUnavailable)];
  const std::string t = Text(m);
  EXPECT_EQ(ScrapeValue(t, "loom_tasks_dispatched_total"), 5);
  EXPECT_EQ(ScrapeValue(t, "loom_results_rejected_total"), 2);
  EXPECT_EQ(ScrapeValue(t, "loom_sessions_fenced_total"), 1);
  EXPECT_EQ(ScrapeValue(t, "loom_tasks_requeued_total"), 7);
  EXPECT_EQ(ScrapeValue(t, "loom_endpoints_online"), 3);
  EXPECT_EQ(ScrapeValue(t, R"(loom_store_errors_total{code="UNAVAILABLE"})"), 1);
  EXPECT_EQ(ScrapeValue(t, R"(loom_store_errors_total{code="INTERNAL"})"), 0);
}

TEST(MetricsHelpersTest, AHistogramBatchBucketsExactlyAsObserveDoes) {
  prometheus::Histogram direct(metrics::LatencyBuckets()), batched(metrics::LatencyBuckets());
  metrics::HistogramBatch batch;
  for (double v : {0.0, 50e-6, 50.000001e-6, 1e-3, 0.7, 60.0, 61.0, 1e6}) {
    direct.Observe(v);
    batch.Add(v);
  }
  EXPECT_FALSE(batch.empty());
  batch.FlushTo(batched);
  EXPECT_TRUE(batch.empty());
  const auto a = direct.Collect().histogram, b = batched.Collect().histogram;
  EXPECT_EQ(a.sample_count, b.sample_count);
  EXPECT_DOUBLE_EQ(a.sample_sum, b.sample_sum);
  ASSERT_EQ(a.bucket.size(), b.bucket.size());
  for (size_t i = 0; i < a.bucket.size(); ++i) EXPECT_EQ(a.bucket[i].cumulative_count, b.bucket[i].cumulative_count);
}

TEST(MetricsHelpersTest, ListenAddressesNeedAHostAndAPortFrom0To65535) {
  EXPECT_TRUE(metrics::CheckListenAddress("127.0.0.1:0").ok());
  EXPECT_TRUE(metrics::CheckListenAddress("0.0.0.0:9464").ok());
  EXPECT_TRUE(metrics::CheckListenAddress("[::1]:9464").ok());
  EXPECT_TRUE(metrics::CheckListenAddress("localhost:65535").ok());
  auto no_port = metrics::CheckListenAddress("127.0.0.1");
  ASSERT_FALSE(no_port.ok());
  EXPECT_EQ(no_port.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(no_port.status().message().find("has no port; use HOST:PORT"), std::string::npos);
  EXPECT_FALSE(metrics::CheckListenAddress(":9464").ok());
  EXPECT_FALSE(metrics::CheckListenAddress("127.0.0.1:").ok());
  EXPECT_FALSE(metrics::CheckListenAddress("127.0.0.1:65536").ok());
  EXPECT_FALSE(metrics::CheckListenAddress("127.0.0.1:-1").ok());
  EXPECT_FALSE(metrics::CheckListenAddress("127.0.0.1:80x").ok());
  EXPECT_FALSE(metrics::CheckListenAddress("::1:9464").ok());
}

TEST(MetricsHelpersTest, AServerOnPort0ReportsThePortItBoundAndATakenPortIsAnError) {
  auto m = std::make_shared<ServiceMetrics>();
  auto server = metrics::MetricsServer::Start("127.0.0.1:0", m->collectables());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string addr = (*server)->address();
  EXPECT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << addr;
  EXPECT_NE(addr, "127.0.0.1:0");
  m->TasksSubmitted(3);
  auto body = loom::testing::HttpGet(addr);
  ASSERT_TRUE(body.ok()) << body.status().ToString();
  EXPECT_EQ(ScrapeValue(*body, "loom_tasks_submitted_total"), 3);
  auto again = metrics::MetricsServer::Start(addr, m->collectables());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(again.status().message().find("cannot serve metrics on '" + addr + "'"), std::string::npos);
}

}  // namespace
}  // namespace loom::service
