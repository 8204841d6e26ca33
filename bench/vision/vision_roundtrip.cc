// loom-bench-vision: the vision kernels as a service, end to end through Loom. Starts a local
// fabric (redis-server with appendonly, loom-service, one endpoint) unless --service names one,
// then submits one image at a time and reports, per kernel, the round trip at the client
// (submit -> result) next to the time the kernel itself ran (the task's worker_started ->
// kernel_finished timestamps): the difference is what Loom adds. The focus paper's on-demand
// service answered in about 230 ms; its GPU kernel took 20 ms.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <vector>

#include "bench/bench_support.h"
#include "common/local_fabric.h"
#include "common/util.h"
#include "kernels/vision/spheres.h"
#include "kernels/vision/tissue.h"
#include "loom/client.h"

namespace fs = std::filesystem;
using namespace loom;  // NOLINT
using Clock = std::chrono::steady_clock;

namespace {

Value Uint8Tensor(const cv::Mat& image) {
  std::vector<uint8_t> px(image.total());
  for (int r = 0; r < image.rows; ++r)
    for (int c = 0; c < image.cols; ++c)
      px[static_cast<size_t>(r) * image.cols + c] =
          static_cast<uint8_t>(std::lround(std::clamp(image.at<float>(r, c), 0.0f, 1.0f) * 255));
  return TensorValueOf(v1::DTYPE_UINT8, {image.rows, image.cols}, px);
}

struct Row {
  std::string name;
  std::vector<double> rtt_ms;
  std::map<std::string, std::vector<double>> hops_us;
  int errors = 0;
};

Row Measure(Client& c, const std::string& ep, const std::string& name, const std::string& fn,
            const std::vector<Value>& images, const Kwargs& kwargs, int samples) {
  Row row;
  row.name = name;
  for (int i = 0; i < samples; ++i) {
    const int64_t sent_ns = NowNanos();
    const auto t0 = Clock::now();
    auto id = c.Submit(ep, fn, {images[static_cast<size_t>(i) % images.size()]}, kwargs);
    if (!id.ok()) {
      spdlog::error("submit failed: {}", id.status().ToString());
      ++row.errors;
      continue;
    }
    auto r = c.GetResult(*id, std::chrono::seconds(60));
    const auto t1 = Clock::now();
    const int64_t received_ns = NowNanos();
    if (!r.ok() || !r->has_value() || (*r)->state() != v1::TASK_STATE_SUCCESS) {
      spdlog::error("{}: task {} did not succeed: {}", name, *id,
                    r.ok() && r->has_value() ? (*r)->error() : std::string("no result"));
      ++row.errors;
      continue;
    }
    if (i == 0) continue;  // the first call warms the worker
    row.rtt_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    bench::AddHops(**r, sent_ns, received_ns, &row.hops_us);
  }
  spdlog::info("{}: {} samples", name, row.rtt_ms.size());
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  std::string service;
  int samples = 30;
  bool json = false;
  CLI::App app{"loom-bench-vision: focus and dog_blobs through Loom, one image at a time (round trip vs kernel time)"};
  app.add_option("--service", service, "use this running service (host:port) instead of starting a local fabric");
  app.add_option("--samples", samples, "images per kernel")->check(CLI::Range(2, 100000));
  app.add_flag("--json", json, "print JSON lines instead of the table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  InitLogging("info", "bench");

  const std::string endpoint = "bench";
  bench::BenchFabricOptions options;
  options.service = service;
  options.endpoint = endpoint;
  options.workers = 1;
  options.name = "loom-bench-vision";
  auto setup = bench::StartBenchFabric(options);
  if (!setup.ok()) {
    spdlog::critical("{}", setup.status().ToString());
    return 1;
  }
  Client& c = *setup->client;
  for (const char* fn : {"focus", "dog_blobs"}) {
    if (auto f = c.RegisterFunction(fn, std::string(fn) + "@1"); !f.ok()) {
      spdlog::critical("{}", f.status().ToString());
      return 1;
    }
  }
  spdlog::info("generating images");
  std::vector<Value> tissue, spheres;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    tissue.push_back(Uint8Tensor(vision::MakeTissueImage(seed, {.size = 1024, .blur_sigma = double(seed - 1)})));
    spheres.push_back(Uint8Tensor(vision::MakeSpheresFrame(seed, {}).image));
  }
  std::vector<Row> rows;
  rows.push_back(Measure(c, endpoint, "focus 1024x1024 uint8", "focus", tissue, {}, samples));
  for (int n_bin : {3, 10}) {
    rows.push_back(Measure(c, endpoint, "dog_blobs 1000x1000 n_bin " + std::to_string(n_bin), "dog_blobs", spheres,
                           {{"n_bin", IntValue(n_bin)}}, samples));
  }
  int errors = 0;
  if (!json) {
    std::printf("\nVision kernels through Loom (1 worker; round trip at the client vs kernel time in the worker)\n");
    std::printf("  %-30s %10s %10s %12s %12s\n", "kernel", "rtt p50", "rtt p90", "kernel p50", "loom adds");
  }
  for (const auto& r : rows) {
    errors += r.errors;
    const auto kernel = r.hops_us.find("kernel");
    const double p50 = bench::Percentile(r.rtt_ms, 50), p90 = bench::Percentile(r.rtt_ms, 90);
    const double k50 = kernel == r.hops_us.end() ? 0 : bench::Percentile(kernel->second, 50) / 1000.0;
    if (json) {
      std::printf(
          "{\"kernel\":\"%s\",\"samples\":%zu,\"rtt_p50_ms\":%.2f,\"rtt_p90_ms\":%.2f,\"kernel_p50_ms\":%.2f,"
          "\"errors\":%d}\n",
          r.name.c_str(), r.rtt_ms.size(), p50, p90, k50, r.errors);
    } else {
      std::printf("  %-30s %8.1f ms %8.1f ms %10.1f ms %10.1f ms\n", r.name.c_str(), p50, p90, k50, p50 - k50);
      for (const auto& [hop, unused] : bench::TaskHops()) {
        if (auto it = r.hops_us.find(hop); it != r.hops_us.end()) {
          std::printf("      %-32s %8.2f ms\n", hop.c_str(), bench::Percentile(it->second, 50) / 1000.0);
        }
      }
    }
  }
  if (!json) std::printf("  paper (focus, GPU): kernel 20 ms, on-demand service round trip about 230 ms\n");
  if (setup->fabric) setup->fabric->StopAll();
  return errors == 0 ? 0 : 1;
}
