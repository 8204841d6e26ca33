// loom-endpoint: runs next to the hardware, connects out to loom-service, and runs the tasks
// it is sent on a pool of loom-worker processes.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <thread>

#include "common/cli.h"
#include "common/metrics.h"
#include "common/util.h"
#include "endpoint/config.h"
#include "endpoint/endpoint.h"
#include "endpoint/metrics.h"

using namespace loom;            // NOLINT
using namespace loom::endpoint;  // NOLINT

int main(int argc, char** argv) {
  EndpointConfig c;
  CLI::App app{"loom-endpoint: runs Loom tasks on this host's workers for a loom-service"};
  std::string config_file;
  app.add_option("--config", config_file, "YAML config file; flags override it");
  app.add_option("--id", c.id, "endpoint id (required, here or in the config file)");
  app.add_option("--name", c.name, "display name (default: the id)");
  app.add_option("--group", c.group,
                 "endpoints of one group stand in for each other: tasks submitted with failover move from a "
                 "lost member to a live one");
  app.add_option("--service", c.service, "the service's endpoint address, tcp://host:port");
  app.add_option("--workers", c.workers, "number of worker processes");
  app.add_option("--prefetch", c.prefetch, "tasks handed to one worker ahead of time");
  app.add_option("--queue-capacity", c.queue_capacity, "tasks held by the endpoint beyond what its workers hold")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--queue-bytes", c.queue_bytes,
                 "most bytes of task specs held by the endpoint and its workers together; it asks for fewer tasks "
                 "when they are large (a task larger than this still runs, alone); 0: no bound")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pack-tasks-under-us", c.pack_tasks_under_us,
                 "tasks of a kernel that runs here in less than this many microseconds on average go to one worker "
                 "together (up to --pack-prefetch) instead of one to each idle worker; 0: always spread")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pack-prefetch", c.pack_prefetch,
                 "tasks of such a short kernel handed to one worker ahead of time (at least --prefetch)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--worker-link", c.worker_link,
                 "how the workers this endpoint starts talk to it: socket (a socketpair each) or zmq (the ipc "
                 "ROUTER socket); workers in a container use zmq")
      ->capture_default_str()
      ->check(CLI::IsMember({"socket", "zmq"}));
  app.add_option("--worker-binary", c.worker_binary, "path of loom-worker (default: next to this program)");
  app.add_option("--plugin", c.plugins, "kernel plugin (.so) for the workers to load; repeatable");
  app.add_option("--plugin-dir", c.plugin_dirs, "directory of kernel plugins; repeatable");
  app.add_option("--heartbeat-period-ms", c.heartbeat_period_ms, "heartbeat period");
  app.add_option("--heartbeat-misses", c.heartbeat_misses, "missed periods before the service counts as lost");
  app.add_option("--max-message-bytes", c.max_message_bytes, "largest task or result in bytes");
  app.add_option("--run-dir", c.run_dir, "directory for the worker socket (default: a new temp dir)");
  app.add_option("--spool-dir", c.spool_dir,
                 "directory keeping results until the service acknowledges them (default: "
                 "$XDG_STATE_HOME/loom/endpoint-<id>/spool)");
  app.add_flag("--spool-fsync", c.spool_fsync, "fdatasync every spool write (survives power loss, costs latency)");
  app.add_option("--ready-file", c.ready_file, "file written once registered with the service");
  app.add_option("--log-level", c.log_level, "trace, debug, info, warn, error");
  app.add_option("--metrics-address", c.metrics_address,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (port 0: pick a free one, written to the "
                 "ready file as metrics=HOST:PORT); default: no metrics");
  app.add_option("--curve-secret-key-file", c.curve_secret_key_file,
                 "this endpoint's CURVE key pair (from `loom endpoint configure`): connect with CURVE, as the service "
                 "runs with --endpoint-auth curve");
  app.add_option("--service-public-key", c.service_public_key,
                 "the service's CURVE public key (40 characters of Z85; in its ready file as curve_public_key=)");
  app.add_option("--service-public-key-file", c.service_public_key_file, "a file holding the service's public key");
  app.add_option("--owner", c.owner,
                 "the endpoint's owner: with it set, only tasks of the owner and of --allow-user users run here");
  app.add_option("--allow-user", c.allowed_users,
                 "a user besides the owner whose tasks may run here (* for every user); repeatable")
      ->allow_extra_args(false);
  app.add_option("--allow-function", c.allowed_functions,
                 "a function that may run here: NAME (the owner's) or USER/NAME; repeatable (default: any)")
      ->allow_extra_args(false);
  // Capability routing (docs/ENDPOINTS.md).
  std::vector<std::string> device_flags;
  app.add_option("--device", device_flags,
                 "a device to advertise beside the CPUs and the GPUs nvidia-smi finds: CLASS[:MODEL[:emulated]], "
                 "e.g. fpga:xcu250 or fpga:braggnn-sim:emulated; repeatable")
      ->allow_extra_args(false);
  app.add_option("--workers-per-gpu", c.workers_per_gpu,
                 "N workers per GPU found, each pinned to its GPU with CUDA_VISIBLE_DEVICES (replaces --workers "
                 "when GPUs are found); 0: off");
  app.add_option("--nvidia-smi", c.nvidia_smi, "program asked for the GPUs (none: do not look for GPUs)");
  // Worker isolation (common/launch.h); the config file's container: and sandbox: sections say more.
  app.add_option("--sandbox", c.sandbox.type,
                 "run every worker in a sandbox: bubblewrap (read-only root, private /tmp, no network) or none");
  app.add_option("--sandbox-writable", c.sandbox.writable, "a directory sandboxed workers may write; repeatable")
      ->allow_extra_args(false);
  app.add_option("--container-runtime", c.container.runtime,
                 "run every worker in a container: docker, podman or apptainer (with --container-image)");
  app.add_option("--container-image", c.container.image, "the worker image (apptainer: a .sif file)");
  if (auto rc = ParseFlagsAndConfig(app, argc, argv, config_file,
                                    [&](const std::string& path) { return LoadEndpointConfigFile(path, &c); })) {
    return *rc;
  }
  for (const auto& flag : device_flags) {
    auto d = ParseDeviceFlag(flag);
    if (!d.ok()) {
      std::fprintf(stderr, "error: --device %s: %s\n", flag.c_str(), d.status().message().c_str());
      return 2;
    }
    c.devices.push_back(*d);
  }
  // Checked here rather than by CLI11 so that a value from the config file is checked too.
  if (!c.metrics_address.empty()) {
    if (auto a = metrics::CheckListenAddress(c.metrics_address); !a.ok()) {
      std::fprintf(stderr, "error: %s\n", a.status().message().c_str());
      return 2;
    }
  }
  InitLogging(c.log_level, "endpoint");
  TuneAllocatorForLargeMessages();
  std::signal(SIGPIPE, SIG_IGN);  // a closed peer is an error to handle, not a reason to die

  // Block these in every thread (before any is created): SIGCHLD is read through a signalfd,
  // SIGINT/SIGTERM by the waiter thread below.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);

  std::unique_ptr<EndpointMetrics> metrics;
  if (!c.metrics_address.empty()) metrics = std::make_unique<EndpointMetrics>(c.workers);
  Endpoint ep(c, metrics.get());
  // Declared after what it serves, so it stops serving first.
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (metrics) {
    auto started = metrics::MetricsServer::Start(c.metrics_address, {metrics->registry()});
    if (!started.ok()) {
      spdlog::critical("{}", started.status().message());
      return 1;
    }
    metrics_server = std::move(started).value();
    ep.AddReadyInfo("metrics", metrics_server->address());
    spdlog::info("metrics at http://{}/metrics", metrics_server->address());
  }
  Status s = ep.Start();
  if (!s.ok()) {
    spdlog::critical("{}", s.ToString());
    return 1;
  }
  std::thread waiter([&] {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    int sig = 0;
    sigwait(&stop, &sig);
    ep.RequestStop();
  });
  waiter.detach();
  ep.Run();
  if (ep.fenced()) return 3;  // another endpoint process took over this id: do not restart blindly
  return 0;
}
