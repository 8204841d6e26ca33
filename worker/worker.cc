#include "worker/worker.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>

#include "common/curve.h"
#include "common/running_slot.h"
#include "common/util.h"
#include "worker/builtin_kernels.h"
#include "worker/pipe_worker_transport.h"
#include "worker/plugin_loader.h"
#include "worker/zmq_worker_transport.h"

namespace loom::worker {
namespace {

volatile std::sig_atomic_t g_stop_requested = 0;

void OnStopSignal(int) { g_stop_requested = 1; }

// The ZeroMQ link: to an endpoint's ipc socket, or over TCP with CURVE (a block's workers).
Result<std::unique_ptr<WorkerTransport>> ConnectZmq(const WorkerFlags& flags) {
  ZmqWorkerTransportOptions options;
  options.endpoint = flags.endpoint;
  options.worker_id = flags.worker_id;
  options.max_message_bytes = flags.max_message_bytes;
  if (!flags.curve_secret_key_file.empty()) {
    auto keys = curve::ReadSecretKeyFile(flags.curve_secret_key_file);
    if (!keys.ok()) return Status(keys.status().code(), "worker CURVE key: " + keys.status().message());
    options.curve_keys = std::move(keys).value();
    options.endpoint_public_key = flags.endpoint_public_key;
  }
  LOOM_ASSIGN_OR_RETURN(auto transport, ZmqWorkerTransport::Connect(options));
  return std::unique_ptr<WorkerTransport>(std::move(transport));
}

}  // namespace

std::optional<int> ParseWorkerFlags(int argc, char** argv, WorkerFlags* flags) {
  CLI::App app{
      "loom-worker: runs kernels for a Loom endpoint, one task at a time.\n"
      "Started by loom-endpoint; talks to it over an inherited socket (--endpoint-fd) or connects to its\n"
      "ZeroMQ ROUTER socket (--endpoint)."};
  auto* address =
      app.add_option("--endpoint", flags->endpoint, "the endpoint's ZeroMQ ROUTER address, e.g. ipc:///tmp/ep.ipc");
  auto* fd = app.add_option("--endpoint-fd", flags->endpoint_fd,
                            "an inherited stream socket to the endpoint that started this worker "
                            "(loom-endpoint passes it), instead of --endpoint")
                 ->check(CLI::Range(3, 1 << 20));
  address->excludes(fd);
  fd->excludes(address);
  app.add_option("--worker-id", flags->worker_id, "this worker's ZeroMQ routing id, unique within the endpoint")
      ->required();
  app.add_option("--plugin", flags->plugins, "a kernel plugin (.so) to load; repeatable");
  app.add_option("--plugin-dir", flags->plugin_dirs, "a directory whose *.so kernel plugins to load; repeatable");
  app.add_option("--max-message-bytes", flags->max_message_bytes,
                 "largest ZeroMQ message accepted or sent (ZMQ_MAXMSGSIZE)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--curve-secret-key-file", flags->curve_secret_key_file,
                 "CURVE key pair of this worker (a block worker on a TCP link; given by loom-manager)");
  app.add_option("--endpoint-public-key", flags->endpoint_public_key,
                 "the endpoint's CURVE public key (with --curve-secret-key-file)");
  // Checked here because spdlog quietly turns a name it does not know into "off".
  app.add_option("--log-level", flags->log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error", "critical", "off"}));
  app.add_option("--status-fd", flags->status_fd,
                 "an inherited descriptor of shared memory where this worker records the task it is running, "
                 "so its endpoint charges a crash to that task alone (loom-endpoint passes it)")
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
    if (flags->endpoint.empty() && flags->endpoint_fd < 0) {
      throw CLI::RequiredError("--endpoint or --endpoint-fd");
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return std::nullopt;
}

Result<std::vector<std::string>> LoadKernels(const WorkerFlags& flags, KernelRegistry* registry,
                                             const std::vector<KernelSet>& compiled_in) {
  LOOM_RETURN_IF_ERROR(RegisterBuiltinKernels(registry));
  for (const auto& add : compiled_in) LOOM_RETURN_IF_ERROR(add(registry));
  std::vector<std::string> errors;
  std::vector<std::string> paths = flags.plugins;
  for (const auto& dir : flags.plugin_dirs) {
    auto in_dir = PluginsInDir(dir);
    if (!in_dir.ok()) {
      errors.push_back(in_dir.status().message());
      continue;
    }
    paths.insert(paths.end(), in_dir->begin(), in_dir->end());
  }
  for (const auto& path : paths) {
    Status s = LoadPlugin(path, registry);
    if (!s.ok()) errors.push_back(s.message());
  }
  return errors;
}

void InstallStopSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: see the header
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

bool StopRequested() { return g_stop_requested != 0; }

int WorkerMain(int argc, char** argv, const std::vector<KernelSet>& compiled_in) {
  WorkerFlags flags;
  if (auto code = ParseWorkerFlags(argc, argv, &flags)) return *code;
  InitLogging(flags.log_level, "loom-worker");
  TuneAllocatorForLargeMessages();
  // Before anything slow: a stop signal during start-up must not kill the process uncleanly.
  InstallStopSignalHandlers();

  // Before the kernels load: a plugin may start processes, which must not inherit the descriptor.
  std::optional<RunningSlot> running_slot;
  if (flags.status_fd >= 0) {
    auto attached = RunningSlot::Attach(flags.status_fd);
    if (!attached.ok()) {
      spdlog::critical("{}", attached.status().message());
      return 1;
    }
    running_slot = std::move(attached).value();
  }
  if (flags.endpoint_fd >= 0) {
    const int fd_flags = ::fcntl(flags.endpoint_fd, F_GETFD);
    if (fd_flags < 0 || ::fcntl(flags.endpoint_fd, F_SETFD, fd_flags | FD_CLOEXEC) < 0) {
      spdlog::critical("--endpoint-fd {}: not an open descriptor ({})", flags.endpoint_fd, std::strerror(errno));
      return 1;
    }
  }

  KernelRegistry registry;
  auto load_errors = LoadKernels(flags, &registry, compiled_in);
  if (!load_errors.ok()) {
    spdlog::critical("cannot register the built-in or compiled-in kernels: {}", load_errors.status().ToString());
    return 1;
  }
  for (const auto& e : *load_errors) spdlog::error("{}", e);

  v1::WorkerHello hello;
  hello.set_pid(static_cast<int32_t>(::getpid()));
  std::string names;
  for (auto& info : registry.List()) {
    names += (names.empty() ? "" : ", ") + info.name() + "@" + info.version();
    *hello.add_kernels() = std::move(info);
  }
  for (const auto& e : *load_errors) hello.add_load_errors(e);

  if (flags.curve_secret_key_file.empty() != flags.endpoint_public_key.empty()) {
    spdlog::critical("CURVE needs both --curve-secret-key-file and --endpoint-public-key");
    return 2;
  }
  std::unique_ptr<WorkerTransport> transport;
  if (flags.endpoint_fd >= 0) {
    transport = std::make_unique<PipeWorkerTransport>(flags.endpoint_fd, flags.max_message_bytes,
                                                      std::chrono::milliseconds(100));
    spdlog::info("worker '{}' (pid {}) on its endpoint's socket (fd {}) with {} kernel(s): {}", flags.worker_id,
                 ::getpid(), flags.endpoint_fd, hello.kernels_size(), names);
  } else {
    auto connected = ConnectZmq(flags);
    if (!connected.ok()) {
      spdlog::critical("{}", connected.status().message());
      return 1;
    }
    transport = std::move(connected).value();
    spdlog::info("worker '{}' (pid {}) connecting to {} with {} kernel(s): {}", flags.worker_id, ::getpid(),
                 flags.endpoint, hello.kernels_size(), names);
  }

  WorkerLoopOptions loop_options;
  loop_options.max_message_bytes = flags.max_message_bytes;
  loop_options.now = NowNanos;
  loop_options.should_stop = StopRequested;
  loop_options.running_slot = running_slot ? &*running_slot : nullptr;
  WorkerLoop loop(registry, *transport, std::move(loop_options));
  Status s = loop.Run(hello);
  const auto& st = loop.stats();
  spdlog::info("worker '{}' stopping: {} task(s) run, {} result(s) in {} batch(es), {} garbage frame(s), {} dropped",
               flags.worker_id, st.tasks_run, st.results_sent, st.batches_sent, st.garbage_frames, st.tasks_dropped);
  if (!s.ok()) {
    spdlog::critical("worker loop failed: {}", s.ToString());
    return 1;
  }
  return 0;
}

}  // namespace loom::worker
