// Pieces the end-to-end benchmarks (loom-bench, loom-bench-vision) share: percentiles, the hops of
// a task read from its timestamps, and a local fabric (or a running service) with a client.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/local_fabric.h"
#include "common/status.h"
#include "loom/client.h"

namespace loom::bench {

// The p-th percentile (0..100) of `v`, nearest rank; 0 for no samples.
double Percentile(std::vector<double> v, double p);

// The hops of a task: name -> (from stage, to stage). "client_sent" and "client_received" are the
// client's own clocks; the rest are the stages of the task's timestamps.
const std::vector<std::pair<std::string, std::pair<std::string, std::string>>>& TaskHops();

// Adds each hop's duration in microseconds to `hops_us`, for a task sent at `sent_ns` and received
// at `received_ns` (wall clock, NowNanos) whose record is `r`. Hops with a missing stage are skipped.
void AddHops(const v1::TaskRecord& r, int64_t sent_ns, int64_t received_ns,
             std::map<std::string, std::vector<double>>* hops_us);

// A client of `service`, or, when `service` is empty, of a local fabric started here (redis with
// appendonly, loom-service, one endpoint `endpoint` with `workers` workers) that is stopped when
// this object goes away.
struct BenchFabric {
  std::unique_ptr<LocalFabric> fabric;  // null when using a running service
  std::unique_ptr<Client> client;
};
struct BenchFabricOptions {
  std::string service;  // a running service; empty starts a local fabric
  std::string endpoint = "bench";
  int workers = 2;
  std::string appendfsync = "everysec";
  bool metrics = false;
  std::string name = "loom-bench";  // names the state directory
};
Result<BenchFabric> StartBenchFabric(const BenchFabricOptions& options);

}  // namespace loom::bench
