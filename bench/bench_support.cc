#include "bench/bench_support.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/util.h"

namespace loom::bench {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

const std::vector<std::pair<std::string, std::pair<std::string, std::string>>>& TaskHops() {
  static const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> kHops = {
      {"client -> service", {"client_sent", "received"}},
      {"service: commit to Redis", {"received", "waiting-for-endpoint"}},
      {"service: queue -> dispatch", {"waiting-for-endpoint", "dispatched"}},
      {"service -> endpoint", {"dispatched", "endpoint_received"}},
      {"endpoint -> worker", {"endpoint_received", "worker_started"}},
      {"kernel", {"worker_started", "kernel_finished"}},
      {"worker -> endpoint", {"kernel_finished", "endpoint_result"}},
      {"endpoint -> service, commit", {"endpoint_result", "success"}},
      {"service -> client", {"success", "client_received"}},
  };
  return kHops;
}

void AddHops(const v1::TaskRecord& r, int64_t sent_ns, int64_t received_ns,
             std::map<std::string, std::vector<double>>* hops_us) {
  std::map<std::string, int64_t> at = {{"client_sent", sent_ns}, {"client_received", received_ns}};
  for (const auto& t : r.timestamps()) at[t.stage()] = t.unix_nanos();
  for (const auto& [name, stages] : TaskHops()) {
    auto a = at.find(stages.first), b = at.find(stages.second);
    if (a != at.end() && b != at.end()) (*hops_us)[name].push_back((b->second - a->second) / 1000.0);
  }
}

Result<BenchFabric> StartBenchFabric(const BenchFabricOptions& options) {
  BenchFabric out;
  std::string service = options.service;
  if (service.empty()) {
    LocalFabricOptions o;
    o.bin_dir = ExecutableDir();
    o.state_dir = (std::filesystem::temp_directory_path() / (options.name + "-" + std::to_string(::getpid()))).string();
    o.appendfsync = options.appendfsync;
    o.remove_state_dir = true;
    o.metrics = options.metrics;
    out.fabric = std::make_unique<LocalFabric>(o);
    spdlog::info("starting a local fabric: redis (appendonly, appendfsync {}), service, endpoint with {} workers{}",
                 options.appendfsync, options.workers, options.metrics ? ", metrics on" : "");
    LOOM_RETURN_IF_ERROR(out.fabric->StartAll(options.endpoint, options.workers));
    service = out.fabric->grpc_address();
  }
  ClientOptions co;
  co.address = service;
  LOOM_ASSIGN_OR_RETURN(out.client, Client::Connect(co));
  return out;
}

}  // namespace loom::bench
