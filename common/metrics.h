// Prometheus plumbing shared by loom-service and loom-endpoint (library loom_metrics, on
// prometheus-cpp): checking a --metrics-address, the embedded HTTP server that serves
// /metrics, the latency buckets every Loom histogram uses, a batch that folds many
// observations into one histogram update, metrics read from callbacks at scrape time, and a
// timer thread for samplers. The metric names themselves live in service/metrics.* and
// endpoint/metrics.*, and are listed in docs/METRICS.md.
//
// Thread-safety: prometheus-cpp's counters, gauges, histograms and registries are thread-safe;
// the exposer answers scrapes on threads of its own. Each class below says what it allows.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_type.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace loom::metrics {

// Checks a metrics listen address, HOST:PORT (port 0: pick a free one; "[v6]:PORT" for an
// IPv6 literal), and returns it unchanged; kInvalidArgument saying what is wrong otherwise.
// `flag` names the setting in the message (e.g. "--metrics-address").
Result<std::string> CheckListenAddress(const std::string& address, const std::string& flag = "--metrics-address");

// Upper bounds in seconds for every Loom latency histogram: 50 us to 60 s, about three per
// decade (1, 2.5, 5), so a no-op round trip and a minute-long kernel both land in a useful bucket.
const std::vector<double>& LatencyBuckets();

// Serves GET /metrics on its own threads (prometheus-cpp's Exposer, civetweb inside), with
// `loom_build_info{version, allocator}` besides the collectables. Thread-safe.
class MetricsServer {
 public:
  // Listens on `address` (checked with CheckListenAddress) and serves the collectables, which
  // must outlive the server (destroy the server first). kUnavailable if it cannot listen.
  static Result<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, const std::vector<std::shared_ptr<prometheus::Collectable>>& what);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // HOST:PORT with the port actually bound (the picked one for port 0).
  const std::string& address() const { return address_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::vector<std::shared_ptr<prometheus::Collectable>> what_;
  std::shared_ptr<prometheus::Registry> build_info_;  // loom_build_info
  std::string address_;
};

// Observations gathered locally and added to a histogram in one update (one lock and one add
// per bucket, instead of one lock per observation): for loops that finish many tasks a round.
// Not thread-safe: one per thread or per call.
class HistogramBatch {
 public:
  explicit HistogramBatch(const std::vector<double>& bounds = LatencyBuckets())
      : bounds_(&bounds), counts_(bounds.size() + 1, 0.0) {}
  // Negative values (clock skew between hosts) count as 0.
  void Add(double value);
  bool empty() const { return n_ == 0; }
  // Adds what was gathered to `h` (whose buckets must be the same bounds) and starts over.
  void FlushTo(prometheus::Histogram& h);

 private:
  const std::vector<double>* bounds_;
  std::vector<double> counts_;
  double sum_ = 0;
  int64_t n_ = 0;
};

// Metrics whose value is read from a function at scrape time: for numbers that already exist
// elsewhere (atomic counters, a pool's state), so the hot path pays nothing for them.
// Add everything before the server starts; afterwards Collect() may run on any thread, so the
// functions must be thread-safe and must not block.
class CallbackCollector final : public prometheus::Collectable {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  // `type`: Counter or Gauge. Series of one name share its help and type.
  void Add(std::string name, std::string help, prometheus::MetricType type, Labels labels,
           std::function<double()> read);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  struct Series {
    Labels labels;
    std::function<double()> read;
  };
  struct Family {
    std::string name, help;
    prometheus::MetricType type;
    std::vector<Series> series;
  };
  std::vector<Family> families_;
};

// Calls `tick` every `period` on a thread of its own until destroyed (first call at once).
// For samplers that must stay off the hot path. Thread-safe.
class Ticker {
 public:
  Ticker(std::chrono::milliseconds period, std::function<void()> tick);
  ~Ticker();
  Ticker(const Ticker&) = delete;
  Ticker& operator=(const Ticker&) = delete;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace loom::metrics
