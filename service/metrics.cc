#include "service/metrics.h"

#include <algorithm>
#include <optional>
#include <string_view>

#include "common/redis.h"
#include "service/broker.h"
#include "service/task_store.h"

namespace loom::service {

namespace pm = prometheus;

const char* GrpcMethodName(GrpcMethod m) {
  switch (m) {
    case GrpcMethod::kRegisterFunction:
      return "RegisterFunction";
    case GrpcMethod::kGetFunction:
      return "GetFunction";
    case GrpcMethod::kListFunctions:
      return "ListFunctions";
    case GrpcMethod::kCreateEndpoint:
      return "CreateEndpoint";
    case GrpcMethod::kListEndpoints:
      return "ListEndpoints";
    case GrpcMethod::kGetEndpoint:
      return "GetEndpoint";
    case GrpcMethod::kSubmit:
      return "Submit";
    case GrpcMethod::kSubmitBatch:
      return "SubmitBatch";
    case GrpcMethod::kGetTasks:
      return "GetTasks";
    case GrpcMethod::kWaitResults:
      return "WaitResults";
    case GrpcMethod::kStreamResults:
      return "StreamResults";
    case GrpcMethod::kCancel:
      return "Cancel";
    case GrpcMethod::kDeleteTasks:
      return "DeleteTasks";
    case GrpcMethod::kUpdateEndpoint:
      return "UpdateEndpoint";
    case GrpcMethod::kCreateToken:
      return "CreateToken";
    case GrpcMethod::kRevokeToken:
      return "RevokeToken";
    case GrpcMethod::kListTokens:
      return "ListTokens";
    case GrpcMethod::kWhoAmI:
      return "WhoAmI";
    case GrpcMethod::kCount:
      break;
  }
  return "unknown";
}

const char* ServiceMetrics::HopName(Hop h) {
  switch (h) {
    case kQueue:
      return "queue";
    case kToEndpoint:
      return "to_endpoint";
    case kEndpointToWorker:
      return "endpoint_to_worker";
    case kKernel:
      return "kernel";
    case kWorkerToEndpoint:
      return "worker_to_endpoint";
    case kCommit:
      return "commit";
    case kTotal:
      return "total";
    case kHopCount:
      break;
  }
  return "unknown";
}

namespace {
const char* FailureLabel(int kind) {
  switch (kind) {
    case v1::FAILURE_KIND_KERNEL_ERROR:
      return "kernel_error";
    case v1::FAILURE_KIND_WORKER_LOST:
      return "worker_lost";
    case v1::FAILURE_KIND_ENDPOINT_LOST:
      return "endpoint_lost";
    case v1::FAILURE_KIND_TIMEOUT:
      return "timeout";
    case v1::FAILURE_KIND_POISON:
      return "poison";
    case v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED:
      return "attempts_exhausted";
    case v1::FAILURE_KIND_REJECTED:
      return "rejected";
    default:
      return "unspecified";
  }
}
const char* kOther = "_other";
}  // namespace

ServiceMetrics::ServiceMetrics(ServiceMetricsOptions options)
    : options_(options),
      registry_(std::make_shared<pm::Registry>()),
      callbacks_(std::make_shared<metrics::CallbackCollector>()) {
  submitted_ = &pm::BuildCounter()
                    .Name("loom_tasks_submitted_total")
                    .Help("Tasks created by Submit and SubmitBatch (an idempotent repeat creates none)")
                    .Register(*registry_)
                    .Add({});
  completed_family_ = &pm::BuildCounter()
                           .Name("loom_tasks_completed_total")
                           .Help("Tasks that reached a terminal state, by state: success, failed, cancelled")
                           .Register(*registry_);
  completed_success_ = &completed_family_->Add({{"state", "success"}});
  completed_failed_ = &completed_family_->Add({{"state", "failed"}});
  completed_cancelled_ = &completed_family_->Add({{"state", "cancelled"}});
  auto& failed = pm::BuildCounter()
                     .Name("loom_tasks_failed_total")
                     .Help("Tasks that failed for good, by failure kind (FailureKind in proto/loom.proto)")
                     .Register(*registry_);
  for (int k = 0; k < kFailureKinds; ++k) failed_by_kind_[k] = &failed.Add({{"failure", FailureLabel(k)}});
  auto& hops = pm::BuildHistogram()
                   .Name("loom_task_hop_seconds")
                   .Help(
                       "Time between two timestamps of a finished task (success or failed), by hop; hops across "
                       "hosts include their clock difference")
                   .Register(*registry_);
  for (int h = 0; h < kHopCount; ++h) {
    hops_[h] = &hops.Add({{"hop", HopName(static_cast<Hop>(h))}}, metrics::LatencyBuckets());
  }
  grpc_family_ = &pm::BuildCounter()
                      .Name("loom_grpc_requests_total")
                      .Help("Finished gRPC requests by method and status code")
                      .Register(*registry_);
  queue_depth_family_ = &pm::BuildGauge()
                             .Name("loom_endpoint_queue_depth")
                             .Help(
                                 "Tasks waiting for the endpoint (sampled); endpoints over the label cap are summed "
                                 "into endpoint=\"_other\"")
                             .Register(*registry_);
  in_flight_family_ = &pm::BuildGauge()
                           .Name("loom_endpoint_in_flight")
                           .Help(
                               "Tasks dispatched to the endpoint and not finished (sampled); endpoints over the "
                               "label cap are summed into endpoint=\"_other\"")
                           .Register(*registry_);
  sample_errors_ = &pm::BuildCounter()
                        .Name("loom_metrics_sample_errors_total")
                        .Help("Per-endpoint samples that failed to read the store (the gauges keep their last value)")
                        .Register(*registry_)
                        .Add({});
}

std::vector<std::shared_ptr<pm::Collectable>> ServiceMetrics::collectables() const { return {registry_, callbacks_}; }

void ServiceMetrics::AttachBroker(const BrokerStats& s) {
  using T = pm::MetricType;
  auto load = [](const std::atomic<uint64_t>& a) { return [&a] { return static_cast<double>(a.load()); }; };
  callbacks_->Add("loom_tasks_dispatched_total", "Tasks sent to endpoints (each attempt counts)", T::Counter, {},
                  load(s.tasks_dispatched));
  callbacks_->Add("loom_results_committed_total", "Results committed that finished their task", T::Counter, {},
                  load(s.results_committed));
  callbacks_->Add("loom_results_rejected_total",
                  "Results refused: sent under a stale lease epoch or session, or for a task no longer in flight",
                  T::Counter, {}, load(s.results_rejected));
  callbacks_->Add("loom_task_retries_total", "Failed attempts (worker lost) put back in the queue to run again",
                  T::Counter, {}, load(s.results_retried));
  callbacks_->Add("loom_tasks_requeued_total",
                  "Tasks put back in their queue because the endpoint session holding them was lost or replaced",
                  T::Counter, {}, load(s.tasks_requeued));
  callbacks_->Add("loom_sessions_fenced_total",
                  "Endpoint sessions fenced off because another process registered the same endpoint id", T::Counter,
                  {}, load(s.sessions_fenced));
  callbacks_->Add("loom_sessions_lost_total", "Endpoint sessions dropped for missed heartbeats or a dead link",
                  T::Counter, {}, load(s.sessions_lost));
  callbacks_->Add("loom_garbage_frames_total", "Unreadable or malformed messages from endpoints", T::Counter, {},
                  load(s.garbage_frames));
  callbacks_->Add("loom_auth_refused_total",
                  "Endpoint messages refused: unauthenticated, registering as another endpoint, or sent with a "
                  "replaced CURVE key",
                  T::Counter, {}, load(s.auth_refused));
  const char* zap_help =
      "Answers of the ZAP handler to CURVE handshakes: 200 accepted, 300 key not known yet (the client retries), "
      "400 refused (unknown key, malformed)";
  callbacks_->Add("loom_zap_replies_total", zap_help, T::Counter, {{"status", "200"}}, load(s.zap.accepted));
  callbacks_->Add("loom_zap_replies_total", zap_help, T::Counter, {{"status", "300"}}, load(s.zap.deferred));
  callbacks_->Add("loom_zap_replies_total", zap_help, T::Counter, {{"status", "400"}}, load(s.zap.denied));
  callbacks_->Add("loom_endpoints_online", "Endpoints with a live session", T::Gauge, {},
                  [&s] { return static_cast<double>(s.endpoints_online.load()); });
  for (size_t c = 0; c < s.store_errors_by_code.size(); ++c) {
    // Only the codes a store call can fail with, to keep the scrape short.
    const auto code = static_cast<StatusCode>(c);
    if (code != StatusCode::kUnavailable && code != StatusCode::kInternal && code != StatusCode::kDeadlineExceeded &&
        code != StatusCode::kResourceExhausted && code != StatusCode::kUnknown) {
      continue;
    }
    callbacks_->Add("loom_store_errors_total",
                    "Store (Redis) calls of the broker that failed, by status code: UNAVAILABLE is an outage (I/O "
                    "failure or open circuit), INTERNAL an error reply",
                    T::Counter, {{"code", StatusCodeName(code)}}, load(s.store_errors_by_code[c]));
  }
}

void ServiceMetrics::AttachRedisPool(const RedisPool& pool) {
  using T = pm::MetricType;
  callbacks_->Add("loom_redis_io_failures_total",
                  "Redis I/O failures seen by the connection pool: failed connects, failed probes, broken connections",
                  T::Counter, {}, [&pool] { return static_cast<double>(pool.failures()); });
  callbacks_->Add("loom_redis_reconnects_total", "Times the Redis circuit breaker closed again after an outage",
                  T::Counter, {}, [&pool] { return static_cast<double>(pool.reconnects()); });
  callbacks_->Add("loom_redis_circuit_open",
                  "1 while the Redis circuit breaker is open (calls fail fast with UNAVAILABLE), else 0", T::Gauge, {},
                  [&pool] { return pool.available() ? 0.0 : 1.0; });
}

void ServiceMetrics::TasksFinished(const std::vector<v1::TaskRecord>& records) {
  if (records.empty()) return;
  int64_t success = 0, failed = 0, cancelled = 0;
  std::array<int64_t, kFailureKinds> by_kind{};
  // A few records (the latency path: one task a round) are observed one by one; a larger round
  // is gathered locally first, so it costs one histogram update per hop, not one per task.
  const bool batched = records.size() >= kBatchFrom;
  std::optional<std::array<metrics::HistogramBatch, kHopCount>> hops;
  if (batched) hops.emplace();
  // Stages used, in order; each takes its last occurrence (a retried task's final attempt).
  enum Stage { kReceived, kDispatched, kEndpointReceived, kWorkerStarted, kKernelFinished, kEndpointResult, kDone, kN };
  for (const auto& r : records) {
    switch (r.state()) {
      case v1::TASK_STATE_SUCCESS:
        ++success;
        break;
      case v1::TASK_STATE_FAILED: {
        ++failed;
        const int k = static_cast<int>(r.failure());
        ++by_kind[k >= 0 && k < kFailureKinds ? k : 0];
        break;
      }
      case v1::TASK_STATE_CANCELLED:
        ++cancelled;
        continue;
      default:
        continue;
    }
    std::array<int64_t, kN> at{};
    for (const auto& t : r.timestamps()) {
      const std::string_view s = t.stage();
      Stage which;
      if (s == "received") {
        which = kReceived;
      } else if (s == "dispatched") {
        which = kDispatched;
      } else if (s == "endpoint_received") {
        which = kEndpointReceived;
      } else if (s == "worker_started") {
        which = kWorkerStarted;
      } else if (s == "kernel_finished") {
        which = kKernelFinished;
      } else if (s == "endpoint_result") {
        which = kEndpointResult;
      } else if (s == "success" || s == "failed") {
        which = kDone;
      } else {
        continue;
      }
      at[which] = t.unix_nanos();
    }
    auto hop = [&](Hop h, Stage from, Stage to) {
      if (at[from] == 0 || at[to] == 0) return;
      const double seconds = static_cast<double>(at[to] - at[from]) * 1e-9;
      if (batched) {
        (*hops)[h].Add(seconds);
      } else {
        hops_[h]->Observe(std::max(seconds, 0.0));  // as HistogramBatch::Add: clock skew counts as 0
      }
    };
    hop(kQueue, kReceived, kDispatched);
    hop(kToEndpoint, kDispatched, kEndpointReceived);
    hop(kEndpointToWorker, kEndpointReceived, kWorkerStarted);
    hop(kKernel, kWorkerStarted, kKernelFinished);
    hop(kWorkerToEndpoint, kKernelFinished, kEndpointResult);
    hop(kCommit, kEndpointResult, kDone);
    hop(kTotal, kReceived, kDone);
  }
  if (success > 0) completed_success_->Increment(static_cast<double>(success));
  if (failed > 0) completed_failed_->Increment(static_cast<double>(failed));
  if (cancelled > 0) completed_cancelled_->Increment(static_cast<double>(cancelled));
  for (int k = 0; k < kFailureKinds; ++k) {
    if (by_kind[k] > 0) failed_by_kind_[k]->Increment(static_cast<double>(by_kind[k]));
  }
  if (batched) {
    for (int h = 0; h < kHopCount; ++h) (*hops)[h].FlushTo(*hops_[h]);
  }
}

void ServiceMetrics::GrpcRequest(GrpcMethod method, int code) {
  const auto m = static_cast<size_t>(method);
  if (m >= grpc_.size()) return;
  if (code < 0 || code > 16) code = static_cast<int>(StatusCode::kUnknown);
  auto& slot = grpc_[m][static_cast<size_t>(code)];
  pm::Counter* c = slot.load(std::memory_order_acquire);
  if (c == nullptr) {
    c = &grpc_family_->Add(
        {{"method", GrpcMethodName(method)}, {"code", StatusCodeName(static_cast<StatusCode>(code))}});
    slot.store(c, std::memory_order_release);
  }
  c->Increment();
}

ServiceMetrics::EndpointGauges* ServiceMetrics::GaugesFor(const std::string& endpoint) {
  auto it = endpoint_gauges_.find(endpoint);
  if (it != endpoint_gauges_.end()) return &it->second;
  const size_t own = endpoint_gauges_.size() - (endpoint_gauges_.contains(kOther) ? 1 : 0);
  if (endpoint != kOther && own >= static_cast<size_t>(options_.max_endpoint_labels)) return nullptr;
  EndpointGauges g{&queue_depth_family_->Add({{"endpoint", endpoint}}),
                   &in_flight_family_->Add({{"endpoint", endpoint}})};
  return &endpoint_gauges_.emplace(endpoint, g).first->second;
}

Status ServiceMetrics::SampleEndpoints(TaskStore& store) {
  auto eps = store.ListEndpoints();
  if (!eps.ok()) {
    sample_errors_->Increment();
    return eps.status();
  }
  std::lock_guard lock(sample_mu_);
  int64_t other_depth = 0, other_in_flight = 0;
  bool any_other = false;
  Status first_error;
  for (const auto& e : *eps) {
    if (e.id() == kOther) continue;  // cannot happen with valid ids; keeps _other unambiguous
    auto depth = store.QueueDepth(e.id());
    auto in_flight = depth.ok() ? store.InFlightCount(e.id()) : Result<int64_t>(depth.status());
    if (!in_flight.ok()) {
      sample_errors_->Increment();
      if (first_error.ok()) first_error = in_flight.status();
      continue;
    }
    if (EndpointGauges* g = GaugesFor(e.id())) {
      g->queue_depth->Set(static_cast<double>(*depth));
      g->in_flight->Set(static_cast<double>(*in_flight));
    } else {
      any_other = true;
      other_depth += *depth;
      other_in_flight += *in_flight;
    }
  }
  if (any_other || endpoint_gauges_.contains(kOther)) {
    EndpointGauges* g = GaugesFor(kOther);
    g->queue_depth->Set(static_cast<double>(other_depth));
    g->in_flight->Set(static_cast<double>(other_in_flight));
  }
  return first_error;
}

}  // namespace loom::service
