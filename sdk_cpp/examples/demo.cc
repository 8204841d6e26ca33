// loom-demo: the C++ SDK's worked example, and a smoke test of a running fabric.
//
//   loom-demo [--service 127.0.0.1:50051] [--endpoint local] [--tasks 1000] [--json]
//
// 1. Registers demo-add (add@1), demo-echo (echo@1), demo-fail (fail@1), demo-sleep (sleep@1);
//    registering them again is fine (the service answers created=false).
// 2. Submits N add(i, 2*i) tasks with Client::SubmitBatch, follows them with
//    Client::StreamResults, checks each result is 3*i and prints the throughput (first submit
//    to last result).
// 3. Runs single tasks through loom::Executor futures: echo, add of doubles, add of float32
//    tensors, sleep 0.05, and fail (showing the TaskError).
// 4. Prints the per-hop latency breakdown of one echo task from its timestamps.
//
// Exit status: 0 when every check passed, 1 when a result was wrong, 2 on an RPC error.
// --json prints one line {"tasks":N,"seconds":S,"tasks_per_s":R} on stdout (the rest goes to
// stderr).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "common/task_state.h"
#include "common/value.h"
#include "loom/client.h"
#include "loom/executor.h"

namespace {

using loom::Value;
using Clock = std::chrono::steady_clock;

constexpr int kExitWrong = 1;
constexpr int kExitError = 2;

double MillisSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// What a demo step prints: to stdout, or to stderr when stdout carries the --json line.
FILE* out = stdout;

int RpcError(const char* what, const loom::Status& st) {
  spdlog::error("{}: {}", what, st.ToString());
  return kExitError;
}

// Runs one task through an Executor and prints "label = result (latency)". Returns the
// result, or nullopt (printed) when the task failed.
std::optional<Value> RunOne(loom::Executor& ex, const std::string& label, std::vector<Value> args) {
  const auto start = Clock::now();
  std::future<Value> f = ex.Submit(std::move(args));
  try {
    Value v = f.get();
    std::fprintf(out, "  %-50s = %-32s (%.2f ms)\n", label.c_str(), loom::DebugString(v).c_str(), MillisSince(start));
    return v;
  } catch (const loom::TaskError& e) {
    std::fprintf(out, "  %-50s -> %s (%.2f ms)\n", label.c_str(), e.what(), MillisSince(start));
    return std::nullopt;
  }
}

bool Near(double a, double b) { return std::fabs(a - b) < 1e-9 * std::max(1.0, std::fabs(b)); }

}  // namespace

int main(int argc, char** argv) {
  std::string service = "127.0.0.1:50051";
  std::string endpoint = "local";
  int tasks = 1000;
  double timeout_s = 120;
  bool json = false;
  CLI::App app{"loom-demo: registers demo functions, runs a batch and single tasks, prints throughput and latency",
               "loom-demo"};
  app.add_option("--service", service, "Address of the Loom service")->envname("LOOM_SERVICE")->capture_default_str();
  app.add_option("--endpoint", endpoint, "Endpoint id to run on")->capture_default_str();
  app.add_option("--tasks", tasks, "Tasks in the batch")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--timeout", timeout_s, "Seconds to wait for the batch")->capture_default_str();
  app.add_flag("--json", json, "Print one JSON line with tasks, seconds, tasks_per_s");
  CLI11_PARSE(app, argc, argv);
  if (json) {
    out = stderr;
    spdlog::set_default_logger(spdlog::stderr_color_mt("loom-demo"));
  }
  spdlog::set_pattern("[%H:%M:%S.%e] %v");

  // ---------------------------------------------------------------- connect and register
  loom::ClientOptions options;
  options.address = service;
  auto connected = loom::Client::Connect(options);
  if (!connected.ok()) return RpcError("connect", connected.status());
  loom::Client& client = **connected;
  spdlog::info("connected to {}", service);

  const std::vector<std::pair<std::string, std::string>> functions = {
      {"demo-add", "add@1"}, {"demo-echo", "echo@1"}, {"demo-fail", "fail@1"}, {"demo-sleep", "sleep@1"}};
  for (const auto& [name, kernel] : functions) {
    bool created = false;
    auto f = client.RegisterFunction(name, kernel, "loom-demo: " + kernel, {}, &created);
    if (!f.ok()) return RpcError(("register " + name).c_str(), f.status());
    spdlog::info("function {} -> {} ({})", name, f->kernel(), created ? "registered" : "already registered");
  }

  // ---------------------------------------------------------------- batch
  std::vector<loom::v1::SubmitRequest> batch;
  batch.reserve(static_cast<size_t>(tasks));
  for (int i = 0; i < tasks; ++i) {
    batch.push_back(loom::MakeSubmitRequest(endpoint, "demo-add", {loom::IntValue(i), loom::IntValue(2 * int64_t{i})}));
  }
  spdlog::info("submitting {} add tasks to endpoint '{}'", tasks, endpoint);
  const auto first_submit = Clock::now();
  auto ids = client.SubmitBatch(std::move(batch));
  if (!ids.ok()) return RpcError("submit batch", ids.status());
  const double submit_ms = MillisSince(first_submit);
  spdlog::info("submitted {} tasks in {:.1f} ms; waiting for results", ids->size(), submit_ms);

  std::unordered_map<std::string, int64_t> index;
  index.reserve(ids->size());
  for (size_t i = 0; i < ids->size(); ++i) index.emplace((*ids)[i], static_cast<int64_t>(i));
  size_t received = 0, wrong = 0;
  const size_t progress_step = std::max<size_t>(1, ids->size() / 10);
  loom::Status streamed = client.StreamResults(
      *ids,
      [&](const loom::v1::TaskRecord& r) {
        ++received;
        const int64_t i = index.at(r.id());
        const Value& v = r.result();
        const bool ok =
            r.state() == loom::v1::TASK_STATE_SUCCESS &&
            ((v.kind_case() == Value::kIntValue && v.int_value() == 3 * i) ||
             (v.kind_case() == Value::kDoubleValue && Near(v.double_value(), 3.0 * static_cast<double>(i))));
        if (!ok && ++wrong <= 5) {
          spdlog::error("task {} (i={}): {} {}, expected {}", r.id(), i, loom::TaskStateName(r.state()),
                        r.error().empty() ? loom::DebugString(v) : r.error(), 3 * i);
        }
        if (received % progress_step == 0) spdlog::info("{} / {} results", received, ids->size());
        return true;
      },
      std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  const double seconds = MillisSince(first_submit) / 1000.0;
  if (!streamed.ok()) return RpcError("stream results", streamed);
  const double rate = static_cast<double>(received) / seconds;
  spdlog::info("{} tasks: {} correct, {} wrong; {:.3f} s from first submit to last result: {:.0f} tasks/s", received,
               received - wrong, wrong, seconds, rate);
  if (json) {
    std::printf("{\"tasks\":%zu,\"seconds\":%.6f,\"tasks_per_s\":%.1f}\n", received, seconds, rate);
    std::fflush(stdout);
  }

  // ---------------------------------------------------------------- single tasks (Executor)
  bool singles_ok = true;
  std::fprintf(out, "single tasks:\n");
  loom::Executor echo(client, endpoint, "demo-echo");
  loom::Executor add(client, endpoint, "demo-add");
  loom::Executor sleeper(client, endpoint, "demo-sleep");
  loom::Executor fail(client, endpoint, "demo-fail");

  auto echoed = RunOne(echo, "echo(\"hello, loom\")", {loom::StringValue("hello, loom")});
  singles_ok &= echoed.has_value() && echoed->string_value() == "hello, loom";

  auto sum = RunOne(add, "add(1.5, 2.25)", {loom::DoubleValue(1.5), loom::DoubleValue(2.25)});
  singles_ok &= sum.has_value() && Near(sum->double_value(), 3.75);

  const std::vector<float> a = {1, 2, 3, 4}, b = {10, 20, 30, 40};
  auto tensor = RunOne(add, "add(float32[2x2] {1..4}, float32[2x2] {10..40})",
                       {loom::TensorValue({2, 2}, a), loom::TensorValue({2, 2}, b)});
  bool tensor_ok = tensor.has_value() && tensor->has_tensor_value() &&
                   tensor->tensor_value().dtype() == loom::v1::DTYPE_FLOAT32 &&
                   loom::ValidateTensor(tensor->tensor_value()).ok() && loom::ElementCount(tensor->tensor_value()) == 4;
  for (int64_t i = 0; tensor_ok && i < 4; ++i) {
    tensor_ok = loom::TensorElementAsDouble(tensor->tensor_value(), i) == 11.0 * static_cast<double>(i + 1);
  }
  singles_ok &= tensor_ok;

  auto slept = RunOne(sleeper, "sleep(0.05)", {loom::DoubleValue(0.05)});
  singles_ok &= slept.has_value() && slept->double_value() >= 0.049;  // slept at least that long

  auto failed = RunOne(fail, "fail(\"this task fails on purpose\")", {loom::StringValue("this task fails on purpose")});
  singles_ok &= !failed.has_value();

  // ---------------------------------------------------------------- latency of one task
  const auto probe_start = Clock::now();
  auto probe = client.Submit(endpoint, "demo-echo", {loom::StringValue("latency probe")});
  if (!probe.ok()) return RpcError("submit", probe.status());
  auto record = client.GetResult(*probe, std::chrono::seconds(30));
  if (!record.ok()) return RpcError("get result", record.status());
  const double round_trip_ms = MillisSince(probe_start);
  if (!record->has_value()) {
    spdlog::error("the latency probe {} did not finish within 30 s", *probe);
    return kExitWrong;
  }
  std::fprintf(out, "latency of one echo task (%s), %.3f ms round trip seen by the client:\n", probe->c_str(),
               round_trip_ms);
  std::fprintf(out, "  %-24s %14s %14s\n", "stage", "+us (step)", "us (total)");
  for (const auto& t : loom::Timeline(**record)) {
    std::fprintf(out, "  %-24s %14.1f %14.1f\n", t.stage.c_str(), t.since_previous_us, t.since_first_us);
  }

  if (wrong > 0 || received != ids->size() || !singles_ok) {
    spdlog::error("demo FAILED: {} wrong batch results{}", wrong,
                  singles_ok ? "" : ", a single task gave a wrong answer");
    return kExitWrong;
  }
  spdlog::info("demo passed");
  return 0;
}
