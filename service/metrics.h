// ServiceMetrics: loom-service's Prometheus metrics (every name, type and label is listed in
// docs/METRICS.md). Three kinds of numbers feed it:
//  - counted here on the paths that see them: tasks submitted (the API), tasks finished by
//    state and failure kind with their per-hop latencies (the broker as results commit, the
//    API on cancel), gRPC requests by method and code (the gRPC service);
//  - read at scrape time from counters that already exist (BrokerStats, the Redis pool's
//    circuit breaker), so they cost the hot path nothing more;
//  - sampled off the hot path: queue depth and tasks in flight per endpoint, read from the
//    store by SampleEndpoints on a timer thread of its own, never by the broker and never
//    per scrape.
//
// Cost on the hot path: label lookups happen once (at construction, or once per gRPC method
// and code); every counter reference is cached. A round of finished tasks is folded into one
// increment per counter and one update per histogram (metrics::HistogramBatch), so a task
// costs a bucket search and a few local additions.
//
// Thread-safe: prometheus-cpp metrics are thread-safe; the exposer scrapes on its own threads
// while the broker, API and gRPC threads count. Attach* must be called before serving.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "loom.pb.h"

namespace loom {
class RedisPool;
}

namespace loom::service {

struct BrokerStats;
class TaskStore;

// The RPCs of loom.v1.Loom, for loom_grpc_requests_total{method}.
enum class GrpcMethod {
  kRegisterFunction,
  kGetFunction,
  kListFunctions,
  kCreateEndpoint,
  kListEndpoints,
  kGetEndpoint,
  kSubmit,
  kSubmitBatch,
  kGetTasks,
  kWaitResults,
  kStreamResults,
  kCancel,
  kDeleteTasks,
  kUpdateEndpoint,
  kCreateToken,
  kRevokeToken,
  kListTokens,
  kWhoAmI,
  kCount
};
const char* GrpcMethodName(GrpcMethod m);

struct ServiceMetricsOptions {
  // Endpoints that get a series of their own in the per-endpoint gauges; the first this many
  // seen keep theirs, every later one is summed into endpoint="_other". Bounds the scrape size
  // and Prometheus's memory whatever the number of endpoints.
  int max_endpoint_labels = 100;
};

class ServiceMetrics {
 public:
  explicit ServiceMetrics(ServiceMetricsOptions options = {});
  ServiceMetrics(const ServiceMetrics&) = delete;
  ServiceMetrics& operator=(const ServiceMetrics&) = delete;

  // What a metrics server serves: the registry and the scrape-time callbacks.
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables() const;
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // Exposes counters kept elsewhere, read at scrape time. REQUIRES: called before the metrics
  // server starts; `stats` and `pool` outlive it.
  void AttachBroker(const BrokerStats& stats);
  void AttachRedisPool(const RedisPool& pool);

  // Tasks newly created by a submit (an idempotent repeat creates none).
  void TasksSubmitted(int64_t n) { submitted_->Increment(static_cast<double>(n)); }
  // Tasks that reached a terminal state, each reported once: counted by state (and failure
  // kind), and for success and failed, each hop between the timestamps it carries observed in
  // loom_task_hop_seconds.
  void TasksFinished(const std::vector<v1::TaskRecord>& records);
  // One finished RPC; `code` is the gRPC status code (0-16).
  void GrpcRequest(GrpcMethod method, int code);

  // Reads every endpoint's queue depth and in-flight count from the store into the
  // per-endpoint gauges (1 + 2 x endpoints store calls). For a timer thread, not the broker.
  Status SampleEndpoints(TaskStore& store);

  // The hops of loom_task_hop_seconds, in the order a task meets them.
  enum Hop { kQueue, kToEndpoint, kEndpointToWorker, kKernel, kWorkerToEndpoint, kCommit, kTotal, kHopCount };
  static const char* HopName(Hop h);

 private:
  struct EndpointGauges {
    prometheus::Gauge* queue_depth;
    prometheus::Gauge* in_flight;
  };
  // REQUIRES: sample_mu_ held. Null when the endpoint is over the label cap.
  EndpointGauges* GaugesFor(const std::string& endpoint);

  // Rounds of at least this many finished tasks are gathered in HistogramBatches first.
  static constexpr size_t kBatchFrom = 16;

  const ServiceMetricsOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<metrics::CallbackCollector> callbacks_;

  prometheus::Counter* submitted_;
  prometheus::Family<prometheus::Counter>* completed_family_;
  prometheus::Counter* completed_success_;
  prometheus::Counter* completed_failed_;
  prometheus::Counter* completed_cancelled_;
  // By v1::FailureKind value (0-7); others count as unspecified (0).
  static constexpr int kFailureKinds = 8;
  std::array<prometheus::Counter*, kFailureKinds> failed_by_kind_{};
  std::array<prometheus::Histogram*, kHopCount> hops_{};

  prometheus::Family<prometheus::Counter>* grpc_family_;
  // Filled lazily, once per (method, code) seen: Family::Add returns the same counter to
  // racing callers, so a plain atomic slot suffices.
  std::array<std::array<std::atomic<prometheus::Counter*>, 17>, static_cast<size_t>(GrpcMethod::kCount)> grpc_{};

  prometheus::Family<prometheus::Gauge>* queue_depth_family_;
  prometheus::Family<prometheus::Gauge>* in_flight_family_;
  prometheus::Counter* sample_errors_;
  std::mutex sample_mu_;
  std::map<std::string, EndpointGauges> endpoint_gauges_;  // GUARDED_BY(sample_mu_); at most the cap, plus _other
};

}  // namespace loom::service
