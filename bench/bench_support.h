// Pieces the end-to-end benchmarks (loom-bench, loom-bench-vision) share: percentiles, the hops of
// a task read from its timestamps, and a local fabric (or a running service) with a client.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
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
// at `received_ns` (wall clock, NowNanos) whose record is `r`. Hops with a missing stage are skipped;
// a client time of 0 counts as missing.
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
  // Local fabric only: extra loom-service flags, and extra flags of the endpoint (none is started
  // when `endpoint` is empty).
  std::vector<std::string> service_args;
  std::vector<std::string> endpoint_args;
  int64_t client_max_message_bytes = 0;  // 0: ClientOptions' default
};
Result<BenchFabric> StartBenchFabric(const BenchFabricOptions& options);

// ---------------------------------------------------------------- resources (Linux /proc)

// VmRSS (resident set) of a process in bytes; -1 when it cannot be read (e.g. the process is gone).
int64_t ProcessRssBytes(pid_t pid);
// VmHWM (peak resident set) of a process in bytes; -1 when it cannot be read.
int64_t ProcessPeakRssBytes(pid_t pid);
// Pss (proportional set size: shared pages divided among the processes sharing them) in bytes,
// from /proc/PID/smaps_rollup; -1 when it cannot be read.
int64_t ProcessPssBytes(pid_t pid);
// CPU time (user + system, all threads) a process has used, in seconds; with `reaped_children`,
// plus that of the children it has waited for (Redis's AOF rewrites). -1 when it cannot be read.
double ProcessCpuSeconds(pid_t pid, bool reaped_children = false);
// CPU time this process has used, in seconds (all threads).
double SelfCpuSeconds();
// The live children of `pid`.
std::vector<pid_t> ChildPids(pid_t pid);
// The children of each of `parents`, in one pass over /proc.
std::map<pid_t, std::vector<pid_t>> ChildPids(const std::vector<pid_t>& parents);
// Live processes other than this one whose executable lies in directory `dir`.
std::vector<pid_t> ProcessesRunningFrom(const std::string& dir);
// MemAvailable from /proc/meminfo in bytes; -1 when it cannot be read.
int64_t MemAvailableBytes();

// An integer field of Redis INFO (e.g. "used_memory") from a local fabric's Redis.
Result<int64_t> RedisInfoInt(const LocalFabric& fabric, const std::string& field);
// Rewrites Redis's AOF now (BGREWRITEAOF) and waits, up to `timeout`, until no rewrite is
// running or scheduled: a run measured next does not pay for a rewrite that earlier runs' writes
// set off (a fork of Redis plus a pass over its data: a tenth of the machine for seconds).
Status RewriteAofAndWait(const LocalFabric& fabric, std::chrono::seconds timeout);
// The integer reply of one Redis command (e.g. MEMORY USAGE key) on a local fabric's Redis.
Result<int64_t> RedisInt(const LocalFabric& fabric, const std::vector<std::string>& argv);

// Redis's own count of each command since its last CONFIG RESETSTAT (INFO commandstats):
// command -> {calls, microseconds}. A command run by a script counts under its own name too, so
// evalsha's time minus theirs is what the scripts' Lua cost.
struct RedisCommandStat {
  int64_t calls = 0;
  int64_t usec = 0;
};
Result<std::map<std::string, RedisCommandStat>> RedisCommandStats(const LocalFabric& fabric);
// The same from the text of INFO commandstats.
std::map<std::string, RedisCommandStat> ParseCommandStats(std::string_view info);
Status RedisResetStats(const LocalFabric& fabric);

// Jain's fairness index of `x`: (sum x)^2 / (n * sum x^2); 1 when all are equal, 1/n when one
// has everything. 1 for no samples or all zero.
double JainIndex(const std::vector<double>& x);

// One JSON object on one line, built field by field: JsonLine().Str("a", "b").Int("n", 3).str().
class JsonLine {
 public:
  JsonLine& Str(const std::string& key, const std::string& value);
  JsonLine& Int(const std::string& key, int64_t value);
  JsonLine& Num(const std::string& key, double value, int decimals = 3);
  JsonLine& Bool(const std::string& key, bool value);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void Key(const std::string& key);
  std::string body_;
};

}  // namespace loom::bench
