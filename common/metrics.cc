#include "common/metrics.h"

#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <charconv>

#include "common/allocator.h"

namespace loom::metrics {

Result<std::string> CheckListenAddress(const std::string& address, const std::string& flag) {
  const std::string use = "; use HOST:PORT, e.g. 127.0.0.1:9464 (port 0 picks a free one)";
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgument(flag + " '" + address + "' has no port" + use);
  }
  const std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  if (host.empty()) return InvalidArgument(flag + " '" + address + "' has no host" + use);
  if (host.front() != '[' && host.find(':') != std::string::npos) {
    return InvalidArgument(flag + " '" + address + "': write an IPv6 address in brackets, e.g. [::1]:9464");
  }
  int value = -1;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 0 || value > 65535) {
    return InvalidArgument(flag + " '" + address + "': port '" + port + "' is not a number from 0 to 65535" + use);
  }
  return address;
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> kBuckets = {50e-6,  100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                                               100e-3, 250e-3, 500e-3, 1,      2.5,  5,      10,   30,    60};
  return kBuckets;
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address, const std::vector<std::shared_ptr<prometheus::Collectable>>& what) {
  LOOM_ASSIGN_OR_RETURN(std::string checked, CheckListenAddress(address));
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {
    // Two threads: scrapes are rare and cheap; a stuck scraper cannot hold more than these.
    server->exposer_ = std::make_unique<prometheus::Exposer>(checked, 2);
  } catch (const std::exception& e) {
    return Unavailable("cannot serve metrics on '" + checked +
                       "': the port is taken or the host is not an address of this machine (" + e.what() + ")");
  }
  for (const auto& c : what) server->exposer_->RegisterCollectable(c);
  server->what_ = what;
  server->build_info_ = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge()
      .Name("loom_build_info")
      .Help("Always 1; the labels say which Loom this is and which malloc it runs on")
      .Register(*server->build_info_)
      .Add({{"version", LOOM_VERSION}, {"allocator", AllocatorName()}})
      .Set(1);
  server->exposer_->RegisterCollectable(server->build_info_);
  const auto ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) return Unavailable("metrics server on '" + checked + "' reports no listening port");
  server->address_ = checked.substr(0, checked.rfind(':')) + ":" + std::to_string(ports.front());
  return server;
}

MetricsServer::~MetricsServer() = default;

void HistogramBatch::Add(double value) {
  value = std::max(value, 0.0);
  // Prometheus buckets hold values <= their bound: the first bound >= value.
  const auto it = std::lower_bound(bounds_->begin(), bounds_->end(), value);
  counts_[static_cast<size_t>(it - bounds_->begin())] += 1;
  sum_ += value;
  ++n_;
}

void HistogramBatch::FlushTo(prometheus::Histogram& h) {
  if (n_ == 0) return;
  h.ObserveMultiple(counts_, sum_);
  std::fill(counts_.begin(), counts_.end(), 0.0);
  sum_ = 0;
  n_ = 0;
}

void CallbackCollector::Add(std::string name, std::string help, prometheus::MetricType type, Labels labels,
                            std::function<double()> read) {
  auto it = std::find_if(families_.begin(), families_.end(), [&](const Family& f) { return f.name == name; });
  if (it == families_.end()) {
    families_.push_back({std::move(name), std::move(help), type, {}});
    it = std::prev(families_.end());
  }
  it->series.push_back({std::move(labels), std::move(read)});
}

std::vector<prometheus::MetricFamily> CallbackCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  out.reserve(families_.size());
  for (const auto& f : families_) {
    prometheus::MetricFamily mf;
    mf.name = f.name;
    mf.help = f.help;
    mf.type = f.type;
    for (const auto& s : f.series) {
      prometheus::ClientMetric m;
      for (const auto& [k, v] : s.labels) m.label.push_back({k, v});
      const double value = s.read();
      if (f.type == prometheus::MetricType::Counter) {
        m.counter.value = value;
      } else {
        m.gauge.value = value;
      }
      mf.metric.push_back(std::move(m));
    }
    out.push_back(std::move(mf));
  }
  return out;
}

Ticker::Ticker(std::chrono::milliseconds period, std::function<void()> tick) {
  thread_ = std::thread([this, period, tick = std::move(tick)] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      tick();
      lock.lock();
      cv_.wait_for(lock, period, [&] { return stop_; });
    }
  });
}

Ticker::~Ticker() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

}  // namespace loom::metrics
