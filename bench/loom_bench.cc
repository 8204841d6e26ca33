// loom-bench: measures Loom end to end through the SDK. --scenario picks what:
//   throughput (default): no-op (echo) tasks submitted in batches, results streamed back, tasks/s
//               from the first submit to the last result; then the single-task round trip
//               (p50/p99/p99.9) and the median time spent in each hop (the original output);
//   batch:      no-op throughput vs tasks per SubmitBatch call (--batches, default 1,10,100,1000);
//   workers:    no-op throughput vs workers of one endpoint (1 to --max-workers);
//   endpoints:  no-op throughput vs endpoints (1, 2, 4, ... --max-endpoints), tasks round-robin;
//   latency:    single-task round trip p50/p99/p99.9 and each hop's p50/p99/p99.9, from the
//               task's own timestamps;
//   payload:    echo tasks with a bytes argument of each --payload-sizes (the result is the same
//               bytes): tasks/s and MB/s each way, plus the hops of single tasks of that size;
//   memory:     Redis bytes per queued task and the service's RSS with --queued tasks queued for
//               an endpoint that was created but never started (offline);
//   scale:      --scale-endpoints endpoints with --scale-workers workers each on this host (the
//               largest configuration that fits in memory), aggregate throughput against one
//               endpoint's, and fairness across endpoints;
//   all:        each of the above in turn, each on a fresh local fabric.
// Each scenario prints a table, or with --json one JSON line per row. It starts its own local fabric
// (redis-server with appendonly, loom-service, endpoints) on free loopback ports; throughput, batch,
// latency and payload can use a running service instead (--service).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "bench/bench_support.h"
#include "common/allocator.h"
#include "common/local_fabric.h"
#include "common/util.h"
#include "loom/client.h"

namespace fs = std::filesystem;
using namespace loom;  // NOLINT
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// ---------------------------------------------------------------- settings

struct Settings {
  std::string service;
  int workers = 2;
  int tasks = 100000;
  bool tasks_given = false;  // sweeps default to 20,000 tasks per row unless --tasks is given
  int batch = 1000;
  int samples = 2000;
  std::string appendfsync = "everysec";
  bool json = false;
  bool metrics = false;
  bool redis_commands = false;
  std::vector<int> batches = {1, 10, 100, 1000};
  int max_workers = 8;
  int max_endpoints = 16;
  int endpoint_workers = 2;
  std::vector<std::string> payload_sizes = {"1K", "10K", "100K", "1M", "10M"};
  int64_t payload_bytes = int64_t{100} << 20;
  int payload_max_tasks = 5000;
  int payload_samples = 10;
  int64_t queued = 1000000;
  int scale_endpoints = 100;
  int scale_workers = 10;
  int scale_tasks = 50000;
  double scale_mem_fraction = 0.5;
  std::vector<std::string> extra_service_args;   // --service-arg, appended to every service
  std::vector<std::string> extra_endpoint_args;  // --endpoint-arg, appended to every endpoint

  int SweepTasks() const { return tasks_given ? tasks : 20000; }
};

void PrintJson(const bench::JsonLine& j) { std::printf("%s\n", j.str().c_str()); }

std::string Mb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / kMiB);
  return buf;
}

// A size for a table: "512 B", "10 KiB", "1 MiB", "1.5 MiB".
std::string Size(int64_t bytes) {
  char buf[32];
  if (bytes < 1024)
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  else if (bytes < 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.4g KiB", static_cast<double>(bytes) / 1024);
  else
    std::snprintf(buf, sizeof buf, "%.4g MiB", static_cast<double>(bytes) / kMiB);
  return buf;
}

// "1K" -> 1024, "10M" -> 10485760, "512" -> 512 (binary multiples).
Result<int64_t> ParseSize(const std::string& s) {
  if (s.empty()) return InvalidArgument("empty size");
  int64_t mult = 1;
  std::string digits = s;
  const char last = static_cast<char>(std::toupper(static_cast<unsigned char>(s.back())));
  if (last == 'K' || last == 'M' || last == 'G') {
    mult = last == 'K' ? 1024 : last == 'M' ? 1024 * 1024 : int64_t{1024} * 1024 * 1024;
    digits = s.substr(0, s.size() - 1);
  }
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return InvalidArgument("size '" + s + "' is not N, NK or NM");
  return std::stoll(digits) * mult;
}

// ---------------------------------------------------------------- throughput

struct RunSpec {
  std::vector<std::string> endpoints;  // tasks go round-robin over these
  int tasks = 0;
  int batch = 1000;
  std::string function = "bench-noop";
  // The arguments of task i; default: IntValue(i).
  std::function<std::vector<Value>(int)> args;
  // 0: one result stream per submitted batch (the original behaviour); otherwise the consumer
  // follows every batch submitted so far on one stream, up to this many ids (small batches would
  // otherwise pay a stream per batch on the consumer's side).
  size_t max_stream_ids = 0;
  bool keep_records = false;  // per-endpoint completion times, hops and ids
  bool progress = true;
  std::string label = "throughput";
};

struct Throughput {
  int tasks = 0;
  double seconds = 0;
  double tasks_per_s = 0;
  int errors = 0;
  // keep_records only:
  std::vector<std::string> ids;
  std::map<std::string, std::vector<int64_t>> done_ns;  // endpoint -> time each task succeeded
  std::map<std::string, std::vector<double>> hops_us;
};

Throughput MeasureThroughput(Client& c, const RunSpec& spec) {
  struct Chunk {
    std::vector<std::string> ids;
    int64_t sent_ns = 0;
  };
  const int n = spec.tasks;
  const int batch = std::max(1, spec.batch);
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Chunk> chunks;
  bool submitted_all = false;
  int errors = 0;
  const auto t0 = Clock::now();
  std::thread producer([&] {
    for (int done = 0; done < n; done += batch) {
      std::vector<v1::SubmitRequest> reqs;
      for (int i = done; i < std::min(n, done + batch); ++i) {
        const std::string& ep = spec.endpoints[static_cast<size_t>(i) % spec.endpoints.size()];
        reqs.push_back(
            MakeSubmitRequest(ep, spec.function, spec.args ? spec.args(i) : std::vector<Value>{IntValue(i)}));
      }
      const int64_t sent_ns = NowNanos();
      auto ids = c.SubmitBatch(std::move(reqs));
      std::lock_guard lock(mu);
      if (!ids.ok()) {
        spdlog::error("submit failed: {}", ids.status().ToString());
        ++errors;
        break;
      }
      chunks.push_back({std::move(ids).value(), sent_ns});
      cv.notify_one();
    }
    std::lock_guard lock(mu);
    submitted_all = true;
    cv.notify_one();
  });
  Throughput t;
  int received = 0;
  int next_report = n / 10;
  while (true) {
    std::vector<std::string> ids;
    std::unordered_map<std::string, int64_t> sent_of;  // keep_records with merged chunks: id -> sent
    int64_t sent_ns = 0;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return !chunks.empty() || submitted_all; });
      if (chunks.empty()) break;
      sent_ns = chunks.front().sent_ns;
      ids = std::move(chunks.front().ids);
      chunks.pop_front();
      while (spec.max_stream_ids > 0 && !chunks.empty() &&
             ids.size() + chunks.front().ids.size() <= spec.max_stream_ids) {
        if (spec.keep_records)
          for (const auto& id : chunks.front().ids) sent_of[id] = chunks.front().sent_ns;
        ids.insert(ids.end(), chunks.front().ids.begin(), chunks.front().ids.end());
        chunks.pop_front();
      }
    }
    if (spec.keep_records) t.ids.insert(t.ids.end(), ids.begin(), ids.end());
    Status s = c.StreamResults(
        ids,
        [&](const v1::TaskRecord& r) {
          ++received;
          if (r.state() != v1::TASK_STATE_SUCCESS) ++errors;
          if (spec.keep_records) {
            for (const auto& ts : r.timestamps()) {
              if (ts.stage() == "success") t.done_ns[r.endpoint()].push_back(ts.unix_nanos());
            }
            auto it = sent_of.find(r.id());
            bench::AddHops(r, it == sent_of.end() ? sent_ns : it->second, NowNanos(), &t.hops_us);
          }
          return true;
        },
        std::chrono::minutes(5));
    if (!s.ok()) {
      spdlog::error("result stream failed: {}", s.ToString());
      ++errors;
    }
    if (spec.progress && n >= 10 && received >= next_report) {
      spdlog::info("{}: {}/{} results", spec.label, received, n);
      while (next_report <= received) next_report += n / 10;
    }
  }
  producer.join();
  t.tasks = received;
  t.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  t.tasks_per_s = received / t.seconds;
  t.errors = errors;
  return t;
}

// The original single-endpoint run.
Throughput MeasureThroughput(Client& c, const std::string& ep, int n, int batch) {
  RunSpec spec;
  spec.endpoints = {ep};
  spec.tasks = n;
  spec.batch = batch;
  return MeasureThroughput(c, spec);
}

// ---------------------------------------------------------------- latency

struct Latency {
  std::vector<double> rtt_ms;
  std::map<std::string, std::vector<double>> hops_us;  // hop name -> samples
};

Latency MeasureLatency(Client& c, const std::string& ep, int samples,
                       const std::function<std::vector<Value>(int)>& args = {}, bool progress = true) {
  Latency l;
  SubmitOptions traced;  // Redis's writes get hops of their own
  traced.trace = true;
  for (int i = 0; i < samples; ++i) {
    std::vector<Value> a = args ? args(i) : std::vector<Value>{IntValue(i)};
    const int64_t sent_ns = NowNanos();
    const auto t0 = Clock::now();
    auto id = c.Submit(ep, "bench-noop", std::move(a), {}, traced);
    if (!id.ok()) {
      spdlog::error("submit failed: {}", id.status().ToString());
      continue;
    }
    auto r = c.GetResult(*id, std::chrono::seconds(30));
    const auto t1 = Clock::now();
    const int64_t recv_ns = NowNanos();
    if (!r.ok() || !r->has_value()) continue;
    l.rtt_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    bench::AddHops(**r, sent_ns, recv_ns, &l.hops_us);
    if (progress && (i + 1) % std::max(1, samples / 5) == 0) spdlog::info("latency: {}/{} samples", i + 1, samples);
  }
  return l;
}

// ---------------------------------------------------------------- fabric

struct Fabric {
  bench::BenchFabric bf;
  Client& client() { return *bf.client; }
  LocalFabric* local() { return bf.fabric.get(); }
};

Result<Fabric> Start(const Settings& s, const std::string& name, const std::string& endpoint, int workers,
                     std::vector<std::string> service_args = {}, std::vector<std::string> endpoint_args = {},
                     int64_t client_max_message_bytes = 0) {
  Fabric f;
  service_args.insert(service_args.end(), s.extra_service_args.begin(), s.extra_service_args.end());
  endpoint_args.insert(endpoint_args.end(), s.extra_endpoint_args.begin(), s.extra_endpoint_args.end());
  LOOM_ASSIGN_OR_RETURN(f.bf, bench::StartBenchFabric({.service = s.service,
                                                       .endpoint = endpoint,
                                                       .workers = workers,
                                                       .appendfsync = s.appendfsync,
                                                       .metrics = s.metrics,
                                                       .name = name,
                                                       .service_args = std::move(service_args),
                                                       .endpoint_args = std::move(endpoint_args),
                                                       .client_max_message_bytes = client_max_message_bytes}));
  LOOM_RETURN_IF_ERROR(f.client().RegisterFunction("bench-noop", "echo@1", "loom-bench no-op").status());
  return f;
}

// For the scenarios that start their own endpoints (workers, endpoints, memory, scale): refuses
// --service, then starts redis-server and the service as loom-bench-<scenario>, no endpoint yet.
Result<Fabric> StartLocal(const Settings& s, const std::string& scenario, std::vector<std::string> service_args = {}) {
  if (!s.service.empty())
    return InvalidArgument("scenario '" + scenario + "' starts its own processes: it cannot use --service");
  return Start(s, "loom-bench-" + scenario, "", 0, std::move(service_args));
}

// Stops the local fabric and says whether anything started from the build's bin directory is
// still running.
void StopAndCheck(Fabric& f) {
  if (f.local() == nullptr) return;
  f.local()->StopAll();
  auto left = bench::ProcessesRunningFrom(ExecutableDir());
  for (int i = 0; i < 50 && !left.empty(); ++i) {  // workers exit a moment after their endpoint
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = bench::ProcessesRunningFrom(ExecutableDir());
  }
  if (!left.empty()) {
    std::string pids;
    for (pid_t p : left) pids += " " + std::to_string(p);
    spdlog::warn("{} processes from {} still run after stopping the fabric:{}", left.size(), ExecutableDir(), pids);
  }
}

// ---------------------------------------------------------------- cost per task

// CPU seconds used so far by each part of a local fabric, and Redis's AOF size: read before and
// after a run, they give what one task costs each part, a measure that holds on a noisy machine
// where tasks/s does not.
struct CpuSnapshot {
  std::vector<std::pair<std::string, double>> cpu_s;  // part -> CPU seconds; -1 unknown
  int64_t aof_bytes = -1;
};

// `endpoints` (and their workers) are summed; one that is not running is unknown.
CpuSnapshot TakeCpuSnapshot(LocalFabric* lf, const std::vector<std::string>& endpoints) {
  CpuSnapshot snap;
  if (lf == nullptr) return snap;  // a running service: its processes are not ours to read
  // Read first: what this snapshot costs (reading /proc) is not the client's work.
  const double client = bench::SelfCpuSeconds();
  snap.cpu_s.emplace_back("redis", bench::ProcessCpuSeconds(lf->redis().pid(), /*reaped_children=*/true));
  snap.cpu_s.emplace_back("service", bench::ProcessCpuSeconds(lf->service().pid()));
  std::vector<pid_t> ep_pids;
  for (const auto& name : endpoints) {
    Subprocess* ep = lf->endpoint(name);
    if (ep != nullptr) ep_pids.push_back(ep->pid());
  }
  double eps = -1, workers = -1;  // unknown unless every endpoint runs
  if (!ep_pids.empty() && ep_pids.size() == endpoints.size()) {
    eps = workers = 0;
    for (const auto& [ep, kids] : bench::ChildPids(ep_pids)) {
      eps += std::max(0.0, bench::ProcessCpuSeconds(ep));
      for (pid_t w : kids) workers += std::max(0.0, bench::ProcessCpuSeconds(w));
    }
  }
  snap.cpu_s.emplace_back(endpoints.size() == 1 ? "endpoint" : "endpoints", eps);
  snap.cpu_s.emplace_back("workers", workers);
  snap.cpu_s.emplace_back("client", client);
  if (auto aof = bench::RedisInfoInt(*lf, "aof_current_size"); aof.ok()) snap.aof_bytes = *aof;
  return snap;
}

struct CpuCost {
  std::vector<std::pair<std::string, double>> us_per_task;  // part -> CPU microseconds per task
  double aof_bytes_per_task = -1;
  bool known() const { return !us_per_task.empty(); }
  double total() const {
    double sum = 0;
    for (const auto& [part, us] : us_per_task) sum += us;
    return sum;
  }
  std::string Json() const {
    if (!known()) return "";
    std::string out;
    char buf[96];
    for (const auto& [part, us] : us_per_task) {
      std::snprintf(buf, sizeof buf, ",\"cpu_us_per_task_%s\":%.1f", part.c_str(), us);
      out += buf;
    }
    std::snprintf(buf, sizeof buf, ",\"cpu_us_per_task\":%.1f,\"aof_bytes_per_task\":%.0f", total(),
                  aof_bytes_per_task);
    return out + buf;
  }
  // Adds "<prefix>cpu_us_per_task_<part>" per part and "<prefix>cpu_us_per_task" to `j`.
  void AddTo(bench::JsonLine& j, const std::string& prefix) const {
    for (const auto& [part, us] : us_per_task) j.Num(prefix + "cpu_us_per_task_" + part, us, 1);
    if (known()) j.Num(prefix + "cpu_us_per_task", total(), 1);
  }
  // One line: "redis 31.0, service 20.1, ..., total 90.2".
  std::string Line() const {
    std::string out;
    char buf[64];
    for (const auto& [part, us] : us_per_task) {
      std::snprintf(buf, sizeof buf, "%s %.1f, ", part.c_str(), us);
      out += buf;
    }
    std::snprintf(buf, sizeof buf, "total %.1f", total());
    return out + buf;
  }
  void Print() const {
    if (!known()) return;
    std::printf("  CPU per task (us, all threads; throughput run):\n");
    for (const auto& [part, us] : us_per_task) std::printf("    %-30s %8.1f\n", part.c_str(), us);
    std::printf("    %-30s %8.1f\n", "total", total());
    if (aof_bytes_per_task >= 0) std::printf("  Redis AOF written per task: %.0f bytes\n", aof_bytes_per_task);
  }
};

CpuCost CostPerTask(const CpuSnapshot& before, const CpuSnapshot& after, int tasks) {
  CpuCost cost;
  if (tasks <= 0 || before.cpu_s.size() != after.cpu_s.size()) return cost;
  for (size_t i = 0; i < before.cpu_s.size(); ++i) {
    if (before.cpu_s[i].second < 0 || after.cpu_s[i].second < 0) continue;
    cost.us_per_task.emplace_back(before.cpu_s[i].first,
                                  (after.cpu_s[i].second - before.cpu_s[i].second) * 1e6 / tasks);
  }
  // An AOF rewrite shrinks the file mid-run; the growth is then unknown.
  if (before.aof_bytes >= 0 && after.aof_bytes >= before.aof_bytes) {
    cost.aof_bytes_per_task = static_cast<double>(after.aof_bytes - before.aof_bytes) / tasks;
  }
  return cost;
}

// What Redis spent on each command per task (INFO commandstats over the run), busiest first, and
// the scripts' own time: evalsha's (and eval's) time less that of the commands they ran.
void PrintRedisCommands(const std::map<std::string, bench::RedisCommandStat>& stats, int tasks, bool json) {
  std::vector<std::pair<std::string, bench::RedisCommandStat>> rows(stats.begin(), stats.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.usec > b.second.usec; });
  int64_t scripts = 0, inside = 0;
  for (const auto& [name, st] : rows) {
    if (name == "evalsha" || name == "eval") {
      scripts += st.usec;
    } else if (name != "info" && name.rfind("config", 0) != 0 && name != "exec" && name != "multi") {
      inside += st.usec;  // a command a client sends itself also counts: nearly all come from scripts
    }
  }
  const double n = tasks;
  if (json) {
    bench::JsonLine j;
    j.Str("scenario", "redis_commands").Int("tasks", tasks);
    for (const auto& [name, st] : rows) {
      j.Num(name + "_calls_per_task", static_cast<double>(st.calls) / n, 3);
      j.Num(name + "_us_per_task", static_cast<double>(st.usec) / n, 2);
    }
    j.Num("lua_us_per_task", static_cast<double>(scripts - inside) / n, 2);
    PrintJson(j);
    return;
  }
  std::printf("  Redis per task, by command (INFO commandstats; scripts' commands count twice):\n");
  std::printf("    %-24s %10s %10s\n", "command", "calls", "us");
  for (const auto& [name, st] : rows) {
    if (st.usec == 0 && st.calls == 0) continue;
    std::printf("    %-24s %10.3f %10.2f\n", name.c_str(), static_cast<double>(st.calls) / n,
                static_cast<double>(st.usec) / n);
  }
  std::printf("    %-24s %10s %10.2f\n", "scripts' own (Lua)", "", static_cast<double>(scripts - inside) / n);
}

// ---------------------------------------------------------------- scenarios

int ScenarioThroughput(const Settings& s) {
  const std::string endpoint = "bench";
  auto f = Start(s, "loom-bench", endpoint, s.workers);
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  // Warm up: connections, caches, workers.
  (void)MeasureThroughput(c, endpoint, std::min(s.tasks, 2000), s.batch);
  if (s.redis_commands && f->local() != nullptr) {
    if (Status st = bench::RedisResetStats(*f->local()); !st.ok()) spdlog::warn("{}", st.ToString());
  }
  const CpuSnapshot before = TakeCpuSnapshot(f->local(), {endpoint});
  Throughput t = MeasureThroughput(c, endpoint, s.tasks, s.batch);
  const CpuCost cost = CostPerTask(before, TakeCpuSnapshot(f->local(), {endpoint}), t.tasks);
  std::map<std::string, bench::RedisCommandStat> commands;
  if (s.redis_commands && f->local() != nullptr) {
    auto got = bench::RedisCommandStats(*f->local());
    if (got.ok()) {
      commands = std::move(*got);
    } else {
      spdlog::warn("{}", got.status().ToString());
    }
  }
  Latency l = MeasureLatency(c, endpoint, s.samples);
  const double p50 = bench::Percentile(l.rtt_ms, 50), p99 = bench::Percentile(l.rtt_ms, 99),
               p999 = bench::Percentile(l.rtt_ms, 99.9);
  if (s.json) {
    std::printf(
        "{\"tasks\":%d,\"batch\":%d,\"workers\":%d,\"seconds\":%.3f,\"tasks_per_s\":%.0f,\"errors\":%d,"
        "\"latency_samples\":%zu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"appendfsync\":\"%s\","
        "\"metrics\":%s,\"malloc\":\"%s\"%s}\n",
        t.tasks, s.batch, s.workers, t.seconds, t.tasks_per_s, t.errors, l.rtt_ms.size(), p50, p99, p999,
        s.appendfsync.c_str(), s.metrics ? "true" : "false", AllocatorName().c_str(), cost.Json().c_str());
  } else {
    std::printf("\nLoom no-op benchmark (%d workers, Redis appendonly, appendfsync %s; malloc %s)\n", s.workers,
                s.appendfsync.c_str(), AllocatorName().c_str());
    std::printf("  throughput  %d tasks in batches of %d: %.3f s, %.0f tasks/s, %d errors\n", t.tasks, s.batch,
                t.seconds, t.tasks_per_s, t.errors);
    std::printf("  round trip  %zu single tasks: p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms\n", l.rtt_ms.size(), p50, p99,
                p999);
    std::printf("  median time per hop (us):\n");
    for (const auto& [name, pair] : bench::TaskHops()) {
      auto it = l.hops_us.find(name);
      if (it != l.hops_us.end()) std::printf("    %-30s %8.1f\n", name.c_str(), bench::Percentile(it->second, 50));
    }
    cost.Print();
  }
  if (!commands.empty() && t.tasks > 0) PrintRedisCommands(commands, t.tasks, s.json);
  std::fflush(stdout);
  StopAndCheck(*f);
  return t.errors == 0 ? 0 : 1;
}

int ScenarioBatch(const Settings& s) {
  const std::string endpoint = "bench";
  auto f = Start(s, "loom-bench-batch", endpoint, s.workers);
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  (void)MeasureThroughput(c, endpoint, 2000, 1000);  // warm up
  int errors = 0;
  if (!s.json) {
    std::printf(
        "\nno-op throughput vs batch size (%d workers, one submitting thread, results followed on one stream\n"
        "for every batch submitted so far, up to 10,000 ids)\n",
        s.workers);
    std::printf("  %8s %8s %9s %10s %7s\n", "batch", "tasks", "seconds", "tasks/s", "errors");
  }
  for (int b : s.batches) {
    RunSpec spec;
    spec.endpoints = {endpoint};
    // Small batches are slow: fewer tasks, still a few seconds' worth.
    spec.tasks = std::min(s.SweepTasks(), std::max(1000, 2000 * b));
    spec.batch = b;
    spec.max_stream_ids = 10000;
    spec.label = "batch " + std::to_string(b);
    spdlog::info("batch {}: {} tasks", b, spec.tasks);
    Throughput t = MeasureThroughput(c, spec);
    errors += t.errors;
    if (s.json) {
      PrintJson(bench::JsonLine()
                    .Str("scenario", "batch")
                    .Int("batch", b)
                    .Int("tasks", t.tasks)
                    .Int("workers", s.workers)
                    .Num("seconds", t.seconds)
                    .Num("tasks_per_s", t.tasks_per_s, 0)
                    .Int("errors", t.errors));
    } else {
      std::printf("  %8d %8d %9.3f %10.0f %7d\n", b, t.tasks, t.seconds, t.tasks_per_s, t.errors);
    }
    std::fflush(stdout);
  }
  StopAndCheck(*f);
  return errors == 0 ? 0 : 1;
}

int ScenarioWorkers(const Settings& s) {
  auto f = StartLocal(s, "workers");
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  int errors = 0;
  if (!s.json) {
    std::printf("\nno-op throughput vs workers of one endpoint (batches of %d)\n", s.batch);
    std::printf("  %8s %8s %9s %10s %7s\n", "workers", "tasks", "seconds", "tasks/s", "errors");
  }
  for (int w = 1; w <= s.max_workers; ++w) {
    const std::string ep = "bench-w" + std::to_string(w);
    if (Status st = f->local()->StartEndpoint(ep, w, s.extra_endpoint_args); !st.ok()) {
      spdlog::critical("{}", st.ToString());
      StopAndCheck(*f);
      return 1;
    }
    spdlog::info("workers {}: {} tasks", w, s.SweepTasks());
    (void)MeasureThroughput(c, ep, 2000, s.batch);  // warm up (the workers connect)
    RunSpec spec;
    spec.endpoints = {ep};
    spec.tasks = s.SweepTasks();
    spec.batch = s.batch;
    spec.label = "workers " + std::to_string(w);
    spec.progress = false;
    Throughput t = MeasureThroughput(c, spec);
    errors += t.errors;
    f->local()->KillEndpoint(ep, SIGTERM);
    if (s.json) {
      PrintJson(bench::JsonLine()
                    .Str("scenario", "workers")
                    .Int("workers", w)
                    .Int("tasks", t.tasks)
                    .Int("batch", s.batch)
                    .Num("seconds", t.seconds)
                    .Num("tasks_per_s", t.tasks_per_s, 0)
                    .Int("errors", t.errors));
    } else {
      std::printf("  %8d %8d %9.3f %10.0f %7d\n", w, t.tasks, t.seconds, t.tasks_per_s, t.errors);
    }
    std::fflush(stdout);
  }
  StopAndCheck(*f);
  return errors == 0 ? 0 : 1;
}

// Fairness of one run over `endpoints`: per endpoint, how many of its tasks had succeeded when
// half of all tasks had (by the service's success timestamps). The service stamps every result it
// commits in one call with one time, so many tasks can share the median time: those are shared
// out in proportion, so that the counts add up to half of the tasks.
struct Fairness {
  std::vector<double> counts;  // one per endpoint, in endpoint order
  double min = 0, median = 0, max = 0, jain = 1;
  int starved = 0;  // endpoints with nothing done by then
};

Fairness ComputeFairness(const Throughput& t, const std::vector<std::string>& endpoints) {
  std::vector<int64_t> all;
  for (const auto& [ep, v] : t.done_ns) all.insert(all.end(), v.begin(), v.end());
  Fairness f;
  if (all.empty()) return f;
  std::sort(all.begin(), all.end());
  const size_t half_n = all.size() / 2;
  const int64_t half = all[half_n];
  const auto before = static_cast<double>(std::lower_bound(all.begin(), all.end(), half) - all.begin());
  const auto at = static_cast<double>(std::upper_bound(all.begin(), all.end(), half) - all.begin()) - before;
  const double share = at > 0 ? (static_cast<double>(half_n) - before) / at : 0;
  for (const auto& ep : endpoints) {
    double n = 0;
    auto it = t.done_ns.find(ep);
    if (it != t.done_ns.end()) {
      for (int64_t x : it->second) n += x < half ? 1.0 : x == half ? share : 0.0;
    }
    f.counts.push_back(n);
    if (n < 0.5) ++f.starved;
  }
  f.min = *std::min_element(f.counts.begin(), f.counts.end());
  f.max = *std::max_element(f.counts.begin(), f.counts.end());
  f.median = bench::Percentile(f.counts, 50);
  f.jain = bench::JainIndex(f.counts);
  return f;
}

int ScenarioEndpoints(const Settings& s) {
  auto f = StartLocal(s, "endpoints");
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  int errors = 0;
  if (!s.json) {
    std::printf(
        "\nno-op throughput vs endpoints (%d workers each, tasks round-robin, batches of %d; endpoints of\n"
        "earlier rows stay up, idle); fairness: each endpoint's tasks done when half of all were\n",
        s.endpoint_workers, s.batch);
    std::printf("  %9s %8s %8s %9s %10s %7s %6s %6s %6s %6s\n", "endpoints", "workers", "tasks", "seconds", "tasks/s",
                "errors", "min", "median", "max", "jain");
  }
  std::vector<std::string> eps;
  std::vector<int> counts;
  for (int n = 1; n < s.max_endpoints; n *= 2) counts.push_back(n);
  counts.push_back(s.max_endpoints);
  for (int n : counts) {
    while (static_cast<int>(eps.size()) < n) {
      const std::string ep = "bench-e" + std::to_string(eps.size());
      if (Status st = f->local()->StartEndpoint(ep, s.endpoint_workers, s.extra_endpoint_args); !st.ok()) {
        spdlog::critical("{}", st.ToString());
        StopAndCheck(*f);
        return 1;
      }
      eps.push_back(ep);
    }
    spdlog::info("endpoints {}: {} tasks", n, s.SweepTasks());
    RunSpec spec;
    spec.endpoints = eps;
    spec.batch = s.batch;
    spec.tasks = std::max(2000, 100 * n);  // warm up: every endpoint's workers connect
    spec.progress = false;
    (void)MeasureThroughput(c, spec);
    spec.tasks = s.SweepTasks();
    spec.keep_records = true;
    spec.label = "endpoints " + std::to_string(n);
    Throughput t = MeasureThroughput(c, spec);
    errors += t.errors;
    Fairness fair = ComputeFairness(t, eps);
    if (s.json) {
      PrintJson(bench::JsonLine()
                    .Str("scenario", "endpoints")
                    .Int("endpoints", n)
                    .Int("workers_per_endpoint", s.endpoint_workers)
                    .Int("tasks", t.tasks)
                    .Int("batch", s.batch)
                    .Num("seconds", t.seconds)
                    .Num("tasks_per_s", t.tasks_per_s, 0)
                    .Int("errors", t.errors)
                    .Num("half_min", fair.min, 0)
                    .Num("half_median", fair.median, 0)
                    .Num("half_max", fair.max, 0)
                    .Num("jain", fair.jain, 4)
                    .Int("starved", fair.starved));
    } else {
      std::printf("  %9d %8d %8d %9.3f %10.0f %7d %6.0f %6.0f %6.0f %6.3f\n", n, n * s.endpoint_workers, t.tasks,
                  t.seconds, t.tasks_per_s, t.errors, fair.min, fair.median, fair.max, fair.jain);
    }
    std::fflush(stdout);
  }
  StopAndCheck(*f);
  return errors == 0 ? 0 : 1;
}

int ScenarioLatency(const Settings& s) {
  const std::string endpoint = "bench";
  auto f = Start(s, "loom-bench-latency", endpoint, s.workers);
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  (void)MeasureLatency(c, endpoint, std::min(200, s.samples), {}, false);  // warm up
  Latency l = MeasureLatency(c, endpoint, s.samples);
  auto row = [&](const std::string& what, const std::vector<double>& v, double scale, const char* unit) {
    const double p50 = bench::Percentile(v, 50) * scale, p99 = bench::Percentile(v, 99) * scale,
                 p999 = bench::Percentile(v, 99.9) * scale;
    if (s.json) {
      PrintJson(bench::JsonLine()
                    .Str("scenario", "latency")
                    .Str("what", what)
                    .Int("samples", static_cast<int64_t>(v.size()))
                    .Int("workers", s.workers)
                    .Num(std::string("p50_") + unit, p50)
                    .Num(std::string("p99_") + unit, p99)
                    .Num(std::string("p999_") + unit, p999));
    } else {
      std::printf("  %-30s %10.3f %10.3f %10.3f\n", what.c_str(), p50, p99, p999);
    }
  };
  if (!s.json) {
    std::printf("\nsingle-task round trip, %zu samples (%d workers, submit then GetResult, one at a time)\n",
                l.rtt_ms.size(), s.workers);
    std::printf("  %-30s %10s %10s %10s\n", "", "p50 ms", "p99 ms", "p99.9 ms");
  }
  row("round trip", l.rtt_ms, 1, "ms");
  if (!s.json) std::printf("  %-30s %10s %10s %10s\n", "hop (from the task's stamps)", "p50 ms", "p99 ms", "p99.9 ms");
  for (const auto& [name, pair] : bench::TaskHops()) {
    auto it = l.hops_us.find(name);
    if (it != l.hops_us.end()) row(name, it->second, 0.001, "ms");
  }
  std::fflush(stdout);
  StopAndCheck(*f);
  return l.rtt_ms.size() == static_cast<size_t>(s.samples) ? 0 : 1;
}

int ScenarioPayload(const Settings& s) {
  std::vector<int64_t> sizes;
  for (const auto& str : s.payload_sizes) {
    auto v = ParseSize(str);
    if (!v.ok() || *v <= 0) {
      spdlog::critical("--payload-sizes: {}", v.ok() ? "sizes must be positive" : v.status().ToString());
      return 1;
    }
    sizes.push_back(*v);
  }
  const int64_t largest = *std::max_element(sizes.begin(), sizes.end());
  // The default 10 MiB limit holds one task's arguments (and its result); a 10 MiB bytes value
  // plus the task's envelope is over it, so the local fabric gets room for the largest size.
  const int64_t limit = std::max<int64_t>(int64_t{10} << 20, largest + (int64_t{2} << 20));
  std::vector<std::string> limit_args = {"--max-message-bytes", std::to_string(limit)};
  const std::string endpoint = "bench";
  auto f = Start(s, "loom-bench-payload", endpoint, s.workers, limit_args, limit_args, limit);
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  (void)MeasureThroughput(c, endpoint, 2000, s.batch);  // warm up
  int errors = 0;
  if (!s.json) {
    std::printf(
        "\npayloads: echo@1 with one bytes argument of each size; the result is the same bytes, so each task\n"
        "moves its size in and again out (max_message_bytes %s on service, endpoint and client; %d workers)\n",
        Mb(static_cast<double>(limit)).c_str(), s.workers);
    std::printf("  %8s %7s %9s %9s %10s %10s %10s | single task: %8s %8s\n", "size", "tasks", "seconds", "tasks/s",
                "MiB/s in", "MiB/s out", "MiB/s both", "rtt p50", "rtt p99");
  }
  std::map<int64_t, std::map<std::string, double>> hop_medians;
  for (int64_t size : sizes) {
    const std::string blob(static_cast<size_t>(size), 'x');
    auto args = [&](int) { return std::vector<Value>{BytesValue(blob)}; };
    // Single tasks first: the hops of one task of this size with nothing else in flight.
    Latency l = MeasureLatency(c, endpoint, s.payload_samples, args, false);
    for (const auto& [name, v] : l.hops_us) hop_medians[size][name] = bench::Percentile(v, 50);
    RunSpec spec;
    spec.endpoints = {endpoint};
    spec.tasks = static_cast<int>(std::clamp<int64_t>(s.payload_bytes / size, 10, s.payload_max_tasks));
    spec.batch = static_cast<int>(std::clamp<int64_t>((limit / 2) / size, 1, s.batch));
    spec.args = args;
    spec.max_stream_ids = 10000;
    spec.keep_records = true;
    spec.progress = false;
    spdlog::info("payload {} bytes: {} tasks in batches of {}", size, spec.tasks, spec.batch);
    Throughput t = MeasureThroughput(c, spec);
    errors += t.errors;
    const double mib_s = t.tasks_per_s * static_cast<double>(size) / kMiB;
    const double p50 = bench::Percentile(l.rtt_ms, 50), p99 = bench::Percentile(l.rtt_ms, 99);
    if (s.json) {
      bench::JsonLine j;
      j.Str("scenario", "payload")
          .Int("bytes", size)
          .Int("tasks", t.tasks)
          .Int("batch", spec.batch)
          .Int("workers", s.workers)
          .Num("seconds", t.seconds)
          .Num("tasks_per_s", t.tasks_per_s, 1)
          .Num("mib_per_s_in", mib_s, 2)
          .Num("mib_per_s_out", mib_s, 2)
          .Num("mib_per_s_both", 2 * mib_s, 2)
          .Int("errors", t.errors)
          .Int("single_samples", static_cast<int64_t>(l.rtt_ms.size()))
          .Num("single_p50_ms", p50)
          .Num("single_p99_ms", p99);
      for (const auto& [name, med] : hop_medians[size]) j.Num("single_hop_p50_us " + name, med, 1);
      PrintJson(j);
    } else {
      std::printf("  %8s %7d %9.3f %9.1f %10.2f %10.2f %10.2f | %20.3f %8.3f\n", Size(size).c_str(), t.tasks, t.seconds,
                  t.tasks_per_s, mib_s, mib_s, 2 * mib_s, p50, p99);
    }
    std::fflush(stdout);
    // Free Redis of this size's tasks (records hold arguments and results) before the next size.
    if (auto d = c.DeleteTasks(t.ids); !d.ok()) spdlog::warn("deleting the payload tasks: {}", d.status().ToString());
  }
  if (!s.json) {
    std::printf("  median time per hop of the single tasks (us):\n  %-30s", "hop");
    for (int64_t size : sizes) std::printf(" %11s", Size(size).c_str());
    std::printf("\n");
    for (const auto& [name, pair] : bench::TaskHops()) {
      std::printf("  %-30s", name.c_str());
      for (int64_t size : sizes) {
        auto it = hop_medians[size].find(name);
        if (it == hop_medians[size].end())
          std::printf(" %11s", "-");
        else
          std::printf(" %11.1f", it->second);
      }
      std::printf("\n");
    }
  }
  std::fflush(stdout);
  StopAndCheck(*f);
  return errors == 0 ? 0 : 1;
}

int ScenarioMemory(const Settings& s) {
  // No queue-depth limit: the default (1,000,000 per endpoint) would refuse the last batch. A
  // longer Redis timeout than the default 2 s: with hundreds of thousands of tasks queued, a group
  // commit of two 10,000-task batches (one Lua call) once took longer than that here.
  auto f = StartLocal(s, "memory", {"--max-queue-depth", "0", "--redis-timeout-ms", "10000"});
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  const std::string ep = "offline";
  if (auto e = c.CreateEndpoint(ep, ep); !e.ok()) {
    spdlog::critical("{}", e.status().ToString());
    StopAndCheck(*f);
    return 1;
  }
  LocalFabric& lf = *f->local();
  const pid_t service_pid = lf.service().pid();
  auto used0 = bench::RedisInfoInt(lf, "used_memory");
  const int64_t rss0 = bench::ProcessRssBytes(service_pid);
  // Two submitting threads, so that the service's group commit has company.
  const int64_t n = s.queued;
  const int batch = 2000;
  std::atomic<int64_t> next{0}, submitted{0};
  std::atomic<int> errors{0};
  std::string first_id;
  std::mutex first_mu;
  const auto t0 = Clock::now();
  auto submitter = [&] {
    while (true) {
      const int64_t from = next.fetch_add(batch);
      if (from >= n) return;
      std::vector<v1::SubmitRequest> reqs;
      for (int64_t i = from; i < std::min(n, from + batch); ++i)
        reqs.push_back(MakeSubmitRequest(ep, "bench-noop", {IntValue(i)}));
      auto ids = c.SubmitBatch(std::move(reqs));
      if (!ids.ok()) {
        spdlog::error("submit failed: {}", ids.status().ToString());
        ++errors;
        return;
      }
      {
        std::lock_guard lock(first_mu);
        if (first_id.empty()) first_id = ids->front();
      }
      const int64_t before = submitted.fetch_add(static_cast<int64_t>(ids->size()));
      const int64_t after = before + static_cast<int64_t>(ids->size());
      if (after / (n / 10 + 1) != before / (n / 10 + 1))
        spdlog::info("memory: {}/{} tasks queued, service RSS {}", after, n,
                     Mb(static_cast<double>(bench::ProcessRssBytes(service_pid))));
    }
  };
  std::thread a(submitter), b(submitter);
  a.join();
  b.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  auto used1 = bench::RedisInfoInt(lf, "used_memory");
  auto redis_rss = bench::RedisInfoInt(lf, "used_memory_rss");
  auto aof = bench::RedisInfoInt(lf, "aof_current_size");
  auto qlen = bench::RedisInt(lf, {"LLEN", "loom:q:" + ep});
  auto task_bytes = bench::RedisInt(lf, {"MEMORY", "USAGE", "loom:task:" + first_id});
  auto queue_bytes = bench::RedisInt(lf, {"MEMORY", "USAGE", "loom:q:" + ep, "SAMPLES", "0"});
  const int64_t rss1 = bench::ProcessRssBytes(service_pid), hwm = bench::ProcessPeakRssBytes(service_pid);
  const int64_t q = submitted.load();
  const double per_task =
      used0.ok() && used1.ok() && q > 0 ? static_cast<double>(*used1 - *used0) / static_cast<double>(q) : -1;
  auto v = [](const Result<int64_t>& r) { return r.ok() ? *r : int64_t{-1}; };
  if (s.json) {
    PrintJson(bench::JsonLine()
                  .Str("scenario", "memory")
                  .Int("queued", q)
                  .Int("queue_length", v(qlen))
                  .Num("submit_seconds", seconds)
                  .Num("submit_tasks_per_s", static_cast<double>(q) / seconds, 0)
                  .Int("redis_used_memory_before", v(used0))
                  .Int("redis_used_memory_after", v(used1))
                  .Num("redis_bytes_per_task", per_task, 1)
                  .Int("redis_used_memory_rss", v(redis_rss))
                  .Int("redis_task_hash_bytes", v(task_bytes))
                  .Int("redis_queue_list_bytes", v(queue_bytes))
                  .Int("aof_bytes", v(aof))
                  .Int("service_rss_before", rss0)
                  .Int("service_rss_after", rss1)
                  .Int("service_rss_peak", hwm)
                  .Int("errors", errors.load()));
  } else {
    std::printf(
        "\nmemory: %lld no-op tasks queued for endpoint '%s' (created, never started), batches of %d from\n"
        "two threads: %.1f s (%.0f tasks/s)\n",
        static_cast<long long>(q), ep.c_str(), batch, seconds, static_cast<double>(q) / seconds);
    std::printf("  %-44s %lld\n", "queue length (LLEN)", static_cast<long long>(v(qlen)));
    std::printf("  %-44s %s -> %s\n", "Redis used_memory before -> after", Mb(static_cast<double>(v(used0))).c_str(),
                Mb(static_cast<double>(v(used1))).c_str());
    std::printf("  %-44s %.1f\n", "Redis bytes per queued task", per_task);
    std::printf("  %-44s %lld (+ %.1f per id in the queue list)\n", "  MEMORY USAGE of one task hash",
                static_cast<long long>(v(task_bytes)),
                q > 0 ? static_cast<double>(v(queue_bytes)) / static_cast<double>(q) : 0.0);
    std::printf("  %-44s %s\n", "Redis used_memory_rss", Mb(static_cast<double>(v(redis_rss))).c_str());
    std::printf("  %-44s %s (%.1f bytes per task)\n", "AOF size", Mb(static_cast<double>(v(aof))).c_str(),
                q > 0 ? static_cast<double>(v(aof)) / static_cast<double>(q) : 0.0);
    std::printf("  %-44s %s -> %s (peak %s)\n", "service RSS before -> after", Mb(static_cast<double>(rss0)).c_str(),
                Mb(static_cast<double>(rss1)).c_str(), Mb(static_cast<double>(hwm)).c_str());
    std::printf("  %-44s %d\n", "errors", errors.load());
  }
  std::fflush(stdout);
  StopAndCheck(*f);
  return errors == 0 && q == n ? 0 : 1;
}

// Waits until `ep_pid` has `want` live children (its workers), up to `timeout`.
std::vector<pid_t> WaitForWorkers(pid_t ep_pid, int want, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::vector<pid_t> kids = bench::ChildPids(ep_pid);
  while (static_cast<int>(kids.size()) < want && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kids = bench::ChildPids(ep_pid);
  }
  return kids;
}

int ScenarioScale(const Settings& s) {
  auto f = StartLocal(s, "scale");
  if (!f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  Client& c = f->client();
  LocalFabric& lf = *f->local();
  int errors = 0;

  // 1. What one endpoint with --scale-workers workers costs, after it ran some tasks.
  const std::string probe = "scale-probe";
  if (Status st = lf.StartEndpoint(probe, s.scale_workers, s.extra_endpoint_args); !st.ok()) {
    spdlog::critical("{}", st.ToString());
    StopAndCheck(*f);
    return 1;
  }
  const pid_t probe_pid = lf.endpoint(probe)->pid();
  (void)WaitForWorkers(probe_pid, s.scale_workers, std::chrono::seconds(30));
  {
    RunSpec warm;
    warm.endpoints = {probe};
    warm.tasks = 5000;
    warm.batch = s.batch;
    warm.progress = false;
    (void)MeasureThroughput(c, warm);
  }
  std::vector<double> worker_rss, worker_pss;
  for (pid_t p : bench::ChildPids(probe_pid)) {
    worker_rss.push_back(static_cast<double>(bench::ProcessRssBytes(p)));
    worker_pss.push_back(static_cast<double>(bench::ProcessPssBytes(p)));
  }
  const double ep_rss = static_cast<double>(bench::ProcessRssBytes(probe_pid));
  const double ep_pss = static_cast<double>(bench::ProcessPssBytes(probe_pid));
  const double w_rss = bench::Percentile(worker_rss, 50), w_pss = bench::Percentile(worker_pss, 50);
  lf.KillEndpoint(probe, SIGTERM);
  const double available = static_cast<double>(bench::MemAvailableBytes());

  // 2. The largest configuration that fits: keep the endpoints, give up workers first.
  const double budget = available * s.scale_mem_fraction;
  // Pss undercounts what a new process adds by what it shares with this one; add a margin.
  const double per_worker = w_pss * 1.25, per_endpoint = ep_pss * 1.25;
  int E = s.scale_endpoints, W = s.scale_workers;
  auto cost = [&](int e, int w) { return e * (per_endpoint + w * per_worker); };
  while (W > 1 && cost(E, W) > budget) --W;
  while (E > 1 && cost(E, W) > budget) --E;
  const bool reduced = E != s.scale_endpoints || W != s.scale_workers;
  std::string plan = "requested " + std::to_string(s.scale_endpoints) + " endpoints x " +
                     std::to_string(s.scale_workers) + " workers; one worker costs " + Mb(w_rss) + " RSS, " +
                     Mb(w_pss) + " Pss, one endpoint " + Mb(ep_rss) + " RSS, " + Mb(ep_pss) + " Pss; estimate " +
                     Mb(cost(s.scale_endpoints, s.scale_workers)) + " against a budget of " + Mb(budget) + " (" +
                     std::to_string(static_cast<int>(s.scale_mem_fraction * 100)) + "% of " + Mb(available) +
                     " available): running " + std::to_string(E) + " x " + std::to_string(W) +
                     (reduced ? " (REDUCED to fit)" : " (fits)");
  spdlog::info("scale: {}", plan);

  // 3. One endpoint alone: the baseline.
  std::vector<std::string> eps;
  auto start_ep = [&](int i) -> Status {
    char name[32];
    std::snprintf(name, sizeof name, "scale-%03d", i);
    LOOM_RETURN_IF_ERROR(lf.StartEndpoint(name, W, s.extra_endpoint_args));
    eps.push_back(name);
    return Status::Ok();
  };
  if (Status st = start_ep(0); !st.ok()) {
    spdlog::critical("{}", st.ToString());
    StopAndCheck(*f);
    return 1;
  }
  (void)WaitForWorkers(lf.endpoint(eps[0])->pid(), W, std::chrono::seconds(30));
  RunSpec spec;
  spec.endpoints = eps;
  spec.tasks = 5000;
  spec.batch = s.batch;
  spec.progress = false;
  (void)MeasureThroughput(c, spec);  // warm up
  // Both measured runs start the same way: the AOF just rewritten (so neither pays for a
  // rewrite that the runs before it set off), and every record kept for the fairness figures.
  auto compact = [&] {
    if (Status st = bench::RewriteAofAndWait(lf, std::chrono::seconds(300)); !st.ok()) {
      spdlog::warn("scale: {}", st.ToString());
    }
  };
  compact();
  spec.progress = true;
  spec.keep_records = true;
  spec.endpoints = eps;
  spec.tasks = s.scale_tasks;
  spec.batch = s.batch;
  spec.label = "scale, one endpoint";
  spdlog::info("scale: one endpoint with {} workers, {} tasks", W, s.scale_tasks);
  const CpuSnapshot single_before = TakeCpuSnapshot(&lf, eps);
  Throughput single = MeasureThroughput(c, spec);
  const CpuCost single_cost = CostPerTask(single_before, TakeCpuSnapshot(&lf, eps), single.tasks);
  errors += single.errors;

  // 4. All of them.
  const auto start0 = Clock::now();
  for (int i = 1; i < E; ++i) {
    if (Status st = start_ep(i); !st.ok()) {
      spdlog::critical("{}", st.ToString());
      StopAndCheck(*f);
      return 1;
    }
    if ((i + 1) % 10 == 0)
      spdlog::info("scale: {}/{} endpoints started, {} available", i + 1, E,
                   Mb(static_cast<double>(bench::MemAvailableBytes())));
  }
  int workers_up = 0;
  for (const auto& ep : eps)
    workers_up += static_cast<int>(WaitForWorkers(lf.endpoint(ep)->pid(), W, std::chrono::seconds(60)).size());
  const double start_s = std::chrono::duration<double>(Clock::now() - start0).count();
  spdlog::info("scale: {} endpoints and {} workers up in {:.1f} s; warming up", E, workers_up, start_s);
  spec.endpoints = eps;
  spec.tasks = std::max(5000, 2 * E * W);  // every worker connects and runs something
  spec.progress = false;
  (void)MeasureThroughput(c, spec);
  // What the processes hold now.
  double total_rss = 0, total_pss = 0;
  for (const auto& ep : eps) {
    const pid_t p = lf.endpoint(ep)->pid();
    total_rss += static_cast<double>(bench::ProcessRssBytes(p));
    total_pss += static_cast<double>(bench::ProcessPssBytes(p));
    for (pid_t k : bench::ChildPids(p)) {
      total_rss += static_cast<double>(bench::ProcessRssBytes(k));
      total_pss += static_cast<double>(bench::ProcessPssBytes(k));
    }
  }
  const double available_running = static_cast<double>(bench::MemAvailableBytes());
  compact();
  spec.tasks = s.scale_tasks;
  spec.keep_records = true;
  spec.progress = true;
  spec.label = "scale, " + std::to_string(E) + " endpoints";
  spdlog::info("scale: {} endpoints x {} workers, {} tasks round-robin", E, W, s.scale_tasks);
  const CpuSnapshot all_before = TakeCpuSnapshot(&lf, eps);
  Throughput all = MeasureThroughput(c, spec);
  const CpuCost all_cost = CostPerTask(all_before, TakeCpuSnapshot(&lf, eps), all.tasks);
  errors += all.errors;
  Fairness fair = ComputeFairness(all, eps);
  std::vector<double> done;
  for (const auto& ep : eps)
    done.push_back(static_cast<double>(all.done_ns.contains(ep) ? all.done_ns.at(ep).size() : 0));
  const double ratio = single.tasks_per_s > 0 ? all.tasks_per_s / single.tasks_per_s : 0;
  const int64_t service_rss = bench::ProcessRssBytes(lf.service().pid());

  if (s.json) {
    bench::JsonLine j;
    j.Str("scenario", "scale")
        .Str("plan", plan)
        .Int("requested_endpoints", s.scale_endpoints)
        .Int("requested_workers", s.scale_workers)
        .Int("endpoints", E)
        .Int("workers_per_endpoint", W)
        .Bool("reduced", reduced)
        .Int("worker_rss", static_cast<int64_t>(w_rss))
        .Int("worker_pss", static_cast<int64_t>(w_pss))
        .Int("endpoint_rss", static_cast<int64_t>(ep_rss))
        .Int("endpoint_pss", static_cast<int64_t>(ep_pss))
        .Int("workers_up", workers_up)
        .Num("start_seconds", start_s, 1)
        .Int("fleet_rss", static_cast<int64_t>(total_rss))
        .Int("fleet_pss", static_cast<int64_t>(total_pss))
        .Int("mem_available_running", static_cast<int64_t>(available_running))
        .Int("service_rss", service_rss)
        .Int("tasks", all.tasks)
        .Num("seconds", all.seconds)
        .Num("tasks_per_s", all.tasks_per_s, 0)
        .Num("single_endpoint_tasks_per_s", single.tasks_per_s, 0)
        .Num("ratio_to_single", ratio, 3)
        .Int("errors", all.errors + single.errors)
        .Num("done_min", *std::min_element(done.begin(), done.end()), 0)
        .Num("done_max", *std::max_element(done.begin(), done.end()), 0)
        .Num("half_min", fair.min, 0)
        .Num("half_median", fair.median, 0)
        .Num("half_max", fair.max, 0)
        .Num("jain", fair.jain, 4)
        .Int("starved", fair.starved);
    single_cost.AddTo(j, "single_");
    all_cost.AddTo(j, "all_");
    PrintJson(j);
  } else {
    std::printf("\nscale: %s\n", plan.c_str());
    std::printf("  %-52s %d endpoints, %d workers, in %.1f s\n", "started", E, workers_up, start_s);
    std::printf("  %-52s RSS %s, Pss %s; %s still available; service RSS %s\n", "endpoints + workers hold",
                Mb(total_rss).c_str(), Mb(total_pss).c_str(), Mb(available_running).c_str(),
                Mb(static_cast<double>(service_rss)).c_str());
    std::printf("  %-52s %d tasks, %.3f s, %.0f tasks/s\n", "one endpoint alone", single.tasks, single.seconds,
                single.tasks_per_s);
    std::printf("  %-52s %d tasks, %.3f s, %.0f tasks/s (%.0f%% of one endpoint's)\n",
                ("all " + std::to_string(E) + " endpoints, round-robin").c_str(), all.tasks, all.seconds,
                all.tasks_per_s, ratio * 100);
    std::printf("  %-52s min %.0f, max %.0f\n", "tasks done per endpoint", *std::min_element(done.begin(), done.end()),
                *std::max_element(done.begin(), done.end()));
    std::printf("  %-52s min %.0f, median %.0f, max %.0f; Jain %.4f; starved %d\n",
                "done per endpoint when half of all were", fair.min, fair.median, fair.max, fair.jain, fair.starved);
    // What a task cost in CPU holds better than tasks/s on a noisy machine.
    if (single_cost.known() && all_cost.known()) {
      std::printf("  %-52s %s\n", "CPU per task (us), one endpoint", single_cost.Line().c_str());
      std::printf("  %-52s %s (%.2fx)\n", ("CPU per task (us), " + std::to_string(E) + " endpoints").c_str(),
                  all_cost.Line().c_str(), all_cost.total() / single_cost.total());
    }
    std::printf("  %-52s %d\n", "errors", all.errors + single.errors);
  }
  std::fflush(stdout);
  spdlog::info("scale: stopping {} endpoints", E);
  StopAndCheck(*f);
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  std::string scenario = "throughput";
  CLI::App app{"loom-bench: Loom end to end: no-op throughput, round trip, payloads, memory and scale"};
  app.add_option("--scenario", scenario,
                 "throughput (default: throughput and round trip, the original output), batch, workers, endpoints, "
                 "latency, payload, memory, scale, or all")
      ->check(CLI::IsMember(
          {"throughput", "batch", "workers", "endpoints", "latency", "payload", "memory", "scale", "all"}));
  app.add_option("--service", s.service,
                 "use this running service (host:port) instead of starting a local fabric (throughput, batch, latency, "
                 "payload)");
  app.add_option("--workers", s.workers, "workers of the local endpoint");
  app.add_option("--tasks", s.tasks,
                 "tasks in the throughput run; also per row of the batch, workers and endpoints sweeps (default there: "
                 "20000)");
  app.add_option("--batch", s.batch, "tasks per SubmitBatch call");
  app.add_option("--latency-samples", s.samples, "single tasks timed one after another");
  app.add_option("--appendfsync", s.appendfsync, "Redis AOF fsync policy of the local fabric: everysec or always");
  app.add_flag("--json", s.json, "print one JSON line per row instead of the table");
  app.add_flag("--metrics", s.metrics,
               "the local fabric serves Prometheus metrics (service and endpoint), to measure what they cost");
  app.add_flag("--redis-commands", s.redis_commands,
               "throughput: also print what Redis spent a task on, per command (INFO commandstats), and the "
               "scripts' own Lua time");
  app.add_option("--batches", s.batches, "batch: the batch sizes")->delimiter(',');
  app.add_option("--max-workers", s.max_workers, "workers: 1 to this many workers")->check(CLI::Range(1, 256));
  app.add_option("--max-endpoints", s.max_endpoints, "endpoints: 1, 2, 4, ... up to this many endpoints")
      ->check(CLI::Range(1, 1000));
  app.add_option("--endpoint-workers", s.endpoint_workers, "endpoints: workers of each endpoint")
      ->check(CLI::Range(1, 256));
  app.add_option("--payload-sizes", s.payload_sizes, "payload: argument sizes (N, NK, NM; binary multiples)")
      ->delimiter(',');
  app.add_option("--payload-bytes", s.payload_bytes, "payload: bytes sent per size (tasks = this / size)");
  app.add_option("--payload-max-tasks", s.payload_max_tasks, "payload: most tasks per size (at least 10 are run)");
  app.add_option("--payload-samples", s.payload_samples, "payload: single tasks timed per size, for the hops");
  app.add_option("--queued", s.queued, "memory: tasks queued for the offline endpoint")->check(CLI::PositiveNumber);
  app.add_option("--scale-endpoints", s.scale_endpoints, "scale: endpoints")->check(CLI::Range(1, 1000));
  app.add_option("--scale-workers", s.scale_workers, "scale: workers per endpoint")->check(CLI::Range(1, 256));
  app.add_option("--scale-tasks", s.scale_tasks, "scale: tasks of each measured run");
  app.add_option("--scale-mem-fraction", s.scale_mem_fraction,
                 "scale: the share of MemAvailable the endpoints and workers may take; fewer workers (then fewer "
                 "endpoints) are run when the estimate exceeds it")
      ->check(CLI::Range(0.01, 0.9));
  app.add_option(
      "--service-arg", s.extra_service_args,
      "a flag passed to every loom-service the benchmark starts (repeat it; e.g. --service-arg=--redis-timeout-ms "
      "--service-arg=5000)");
  app.add_option("--endpoint-arg", s.extra_endpoint_args,
                 "a flag passed to every loom-endpoint the benchmark starts (repeat it; e.g. "
                 "--endpoint-arg=--queue-capacity --endpoint-arg=4096)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  s.tasks_given = app.count("--tasks") > 0;
  InitLogging("info", "bench");

  const std::vector<std::pair<std::string, std::function<int(const Settings&)>>> all = {
      {"throughput", ScenarioThroughput}, {"batch", ScenarioBatch},     {"workers", ScenarioWorkers},
      {"endpoints", ScenarioEndpoints},   {"latency", ScenarioLatency}, {"payload", ScenarioPayload},
      {"memory", ScenarioMemory},         {"scale", ScenarioScale},
  };
  int rc = 0;
  for (const auto& [name, run] : all) {
    if (scenario != "all" && scenario != name) continue;
    spdlog::info("scenario {}", name);
    if (run(s) != 0) rc = 1;
  }
  return rc;
}
