// EndpointMetrics: loom-endpoint's Prometheus metrics (every name is listed in
// docs/METRICS.md): its workers (busy, idle, starting, restarts by reason), tasks received
// and finished, results spooled and waiting for acknowledgement, its link to the service
// (reconnects, dropped connections, heartbeat misses), and kernel and endpoint time histograms.
//
// The endpoint's loop thread is the only writer; label lookups happen once, here, and every
// reference is cached. Kernel times are gathered in a local batch (metrics::HistogramBatch) and
// added to the histogram once per loop round (FlushRound).
//
// Thread-safety: the counting methods are for the endpoint's loop thread only (the batches are
// not locked); the prometheus-cpp metrics they feed are thread-safe, and the exposer reads them
// on its own threads at any time.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <vector>

#include "common/metrics.h"
#include "loom.pb.h"

namespace loom::endpoint {

// Why a worker process was replaced.
enum class WorkerExit { kCrash, kTimeout, kCancel };

class EndpointMetrics {
 public:
  explicit EndpointMetrics(int worker_slots);
  EndpointMetrics(const EndpointMetrics&) = delete;
  EndpointMetrics& operator=(const EndpointMetrics&) = delete;

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  void TasksReceived(int64_t n) { received_->Increment(static_cast<double>(n)); }
  // One message handing tasks to a worker (however many it carries).
  void HandedToWorker() { handoffs_->Increment(); }
  // A result recorded for the service (from a worker, or made here for a timeout or a worker
  // lost); its stamps feed the kernel and endpoint histograms at the next FlushRound.
  void ResultAdded(const v1::TaskResult& result);
  void ResultsSpooled(int64_t n) { spooled_->Increment(static_cast<double>(n)); }
  void WorkerRestarted(WorkerExit why);
  void Reconnected() { reconnects_->Increment(); }
  void ConnectionDropped() { drops_->Increment(); }
  void HeartbeatMissed() { heartbeat_misses_->Increment(); }
  void Registered() { registrations_->Increment(); }
  void HandshakeFailed() { handshake_failures_->Increment(); }
  // A task refused by the endpoint's allow-list: for its user (`user`), or its function.
  void TaskRefused(bool user) { (user ? refused_user_ : refused_function_)->Increment(); }
  // The state gauges, set once per loop round.
  struct State {
    int busy = 0, idle = 0, starting = 0;
    int64_t held = 0, queued = 0, unacked = 0, spool_bytes = 0;
    bool registered = false;
  };
  void SetState(const State& s);
  // Adds the round's gathered observations to the histograms.
  void FlushRound();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* received_;
  prometheus::Counter* handoffs_;
  prometheus::Counter* completed_ok_;
  prometheus::Counter* completed_failed_;
  prometheus::Counter* spooled_;
  prometheus::Counter* restart_crash_;
  prometheus::Counter* restart_timeout_;
  prometheus::Counter* restart_cancel_;
  prometheus::Counter* reconnects_;
  prometheus::Counter* drops_;
  prometheus::Counter* heartbeat_misses_;
  prometheus::Counter* registrations_;
  prometheus::Counter* handshake_failures_;
  prometheus::Counter* refused_user_;
  prometheus::Counter* refused_function_;
  prometheus::Gauge* busy_;
  prometheus::Gauge* idle_;
  prometheus::Gauge* starting_;
  prometheus::Gauge* held_;
  prometheus::Gauge* queued_;
  prometheus::Gauge* unacked_;
  prometheus::Gauge* spool_bytes_;
  prometheus::Gauge* registered_;
  prometheus::Histogram* kernel_;
  prometheus::Histogram* at_endpoint_;
  metrics::HistogramBatch kernel_batch_;
  metrics::HistogramBatch at_endpoint_batch_;
};

}  // namespace loom::endpoint
