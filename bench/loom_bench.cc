// loom-bench: measures Loom end to end through the SDK.
//   throughput: no-op (echo) tasks submitted in batches, results streamed back, tasks/s from the
//               first submit to the last result;
//   latency:    one task at a time, submit -> result at the client, p50/p99/p99.9, and the median
//               time spent in each hop, from the task's own timestamps.
// It starts its own local fabric (redis-server with appendonly, loom-service, one endpoint with
// --workers workers) on free loopback ports unless --service names a running one.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "bench/bench_support.h"
#include "common/local_fabric.h"
#include "common/util.h"
#include "loom/client.h"

namespace fs = std::filesystem;
using namespace loom;  // NOLINT
using Clock = std::chrono::steady_clock;

namespace {

struct Throughput {
  int tasks = 0;
  double seconds = 0;
  double tasks_per_s = 0;
  int errors = 0;
};

Throughput MeasureThroughput(Client& c, const std::string& ep, int n, int batch) {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<std::string>> chunks;
  bool submitted_all = false;
  int errors = 0;
  const auto t0 = Clock::now();
  std::thread producer([&] {
    for (int done = 0; done < n; done += batch) {
      std::vector<v1::SubmitRequest> reqs;
      for (int i = done; i < std::min(n, done + batch); ++i)
        reqs.push_back(MakeSubmitRequest(ep, "bench-noop", {IntValue(i)}));
      auto ids = c.SubmitBatch(std::move(reqs));
      std::lock_guard lock(mu);
      if (!ids.ok()) {
        spdlog::error("submit failed: {}", ids.status().ToString());
        ++errors;
        break;
      }
      chunks.push_back(std::move(ids).value());
      cv.notify_one();
    }
    std::lock_guard lock(mu);
    submitted_all = true;
    cv.notify_one();
  });
  int received = 0;
  int next_report = n / 10;
  while (true) {
    std::vector<std::string> ids;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return !chunks.empty() || submitted_all; });
      if (chunks.empty()) break;
      ids = std::move(chunks.front());
      chunks.pop_front();
    }
    Status s = c.StreamResults(
        ids,
        [&](const v1::TaskRecord& r) {
          ++received;
          if (r.state() != v1::TASK_STATE_SUCCESS) ++errors;
          return true;
        },
        std::chrono::minutes(5));
    if (!s.ok()) {
      spdlog::error("result stream failed: {}", s.ToString());
      ++errors;
    }
    if (received >= next_report) {
      spdlog::info("throughput: {}/{} results", received, n);
      next_report += n / 10;
    }
  }
  producer.join();
  Throughput t;
  t.tasks = received;
  t.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  t.tasks_per_s = received / t.seconds;
  t.errors = errors;
  return t;
}

struct Latency {
  std::vector<double> rtt_ms;
  std::map<std::string, std::vector<double>> hops_us;  // hop name -> samples
};

Latency MeasureLatency(Client& c, const std::string& ep, int samples) {
  Latency l;
  for (int i = 0; i < samples; ++i) {
    const int64_t sent_ns = NowNanos();
    const auto t0 = Clock::now();
    auto id = c.Submit(ep, "bench-noop", {IntValue(i)});
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
    if ((i + 1) % std::max(1, samples / 5) == 0) spdlog::info("latency: {}/{} samples", i + 1, samples);
  }
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  std::string service;
  int workers = 2, tasks = 100000, batch = 1000, samples = 2000;
  bool json = false, metrics = false;
  std::string appendfsync = "everysec";
  CLI::App app{"loom-bench: Loom's no-op throughput and single-task round trip, end to end"};
  app.add_option("--service", service, "use this running service (host:port) instead of starting a local fabric");
  app.add_option("--workers", workers, "workers of the local endpoint");
  app.add_option("--tasks", tasks, "tasks in the throughput run");
  app.add_option("--batch", batch, "tasks per SubmitBatch call");
  app.add_option("--latency-samples", samples, "single tasks timed one after another");
  app.add_option("--appendfsync", appendfsync, "Redis AOF fsync policy of the local fabric: everysec or always");
  app.add_flag("--json", json, "print one JSON line instead of the table");
  app.add_flag("--metrics", metrics,
               "the local fabric serves Prometheus metrics (service and endpoint), to measure what they cost");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  InitLogging("info", "bench");

  const std::string endpoint = "bench";
  auto setup = bench::StartBenchFabric({.service = service,
                                        .endpoint = endpoint,
                                        .workers = workers,
                                        .appendfsync = appendfsync,
                                        .metrics = metrics,
                                        .name = "loom-bench"});
  if (!setup.ok()) {
    spdlog::critical("{}", setup.status().ToString());
    return 1;
  }
  Client& c = *setup->client;
  if (auto f = c.RegisterFunction("bench-noop", "echo@1", "loom-bench no-op"); !f.ok()) {
    spdlog::critical("{}", f.status().ToString());
    return 1;
  }
  // Warm up: connections, caches, workers.
  (void)MeasureThroughput(c, endpoint, std::min(tasks, 2000), batch);
  Throughput t = MeasureThroughput(c, endpoint, tasks, batch);
  Latency l = MeasureLatency(c, endpoint, samples);
  const double p50 = bench::Percentile(l.rtt_ms, 50), p99 = bench::Percentile(l.rtt_ms, 99),
               p999 = bench::Percentile(l.rtt_ms, 99.9);
  if (json) {
    std::printf(
        "{\"tasks\":%d,\"batch\":%d,\"workers\":%d,\"seconds\":%.3f,\"tasks_per_s\":%.0f,\"errors\":%d,"
        "\"latency_samples\":%zu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"appendfsync\":\"%s\","
        "\"metrics\":%s}\n",
        t.tasks, batch, workers, t.seconds, t.tasks_per_s, t.errors, l.rtt_ms.size(), p50, p99, p999,
        appendfsync.c_str(), metrics ? "true" : "false");
  } else {
    std::printf("\nLoom no-op benchmark (%d workers, Redis appendonly, appendfsync %s)\n", workers,
                appendfsync.c_str());
    std::printf("  throughput  %d tasks in batches of %d: %.3f s, %.0f tasks/s, %d errors\n", t.tasks, batch, t.seconds,
                t.tasks_per_s, t.errors);
    std::printf("  round trip  %zu single tasks: p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms\n", l.rtt_ms.size(), p50, p99,
                p999);
    std::printf("  median time per hop (us):\n");
    for (const auto& [name, pair] : bench::TaskHops()) {
      auto it = l.hops_us.find(name);
      if (it != l.hops_us.end()) std::printf("    %-30s %8.1f\n", name.c_str(), bench::Percentile(it->second, 50));
    }
  }
  if (setup->fabric) setup->fabric->StopAll();
  return t.errors == 0 ? 0 : 1;
}
