// The loom-worker process: its flags, kernel loading (built-ins, then plugins), stop signals,
// and the wiring of WorkerLoop to its transport. An endpoint starts one loom-worker per worker
// slot; main.cc calls WorkerMain with the compiled-in science kernels (kernels/).
//
//   loom-worker (--endpoint-fd N | --endpoint ipc:///path/ep.ipc) --worker-id w-0
//               [--plugin lib.so]... [--plugin-dir dir]... [--max-message-bytes N]
//               [--log-level info] [--status-fd N]
//
// --endpoint-fd names an inherited stream socket to the endpoint that started the worker
// (PipeWorkerTransport): how loom-endpoint links the workers it starts itself, outside a
// container. --endpoint is the endpoint's ZeroMQ ROUTER address (ZmqWorkerTransport): workers
// in a container, and a block's workers (over TCP, with CURVE).
//
// --status-fd names an inherited descriptor of the endpoint's RunningSlot (common/running_slot.h):
// the worker records there the task whose kernel it runs, so that its endpoint knows which task
// to charge if the worker dies. loom-endpoint passes it; a worker started by hand needs none.
//
// SIGTERM and SIGINT end the process with exit code 0 after pending results are sent; a task
// that is running when the signal arrives is finished first (kernels cannot be interrupted).
// Everything here runs on the main thread; StopRequested() is async-signal-safe to set.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/kernel_api.h"
#include "common/status.h"
#include "worker/worker_loop.h"

namespace loom::worker {

struct WorkerFlags {
  std::string endpoint;                                 // --endpoint (required)
  std::string worker_id;                                // --worker-id (required)
  std::vector<std::string> plugins;                     // --plugin, repeatable
  std::vector<std::string> plugin_dirs;                 // --plugin-dir, repeatable
  int64_t max_message_bytes = kDefaultMaxMessageBytes;  // --max-message-bytes
  std::string log_level = "info";                       // --log-level
  int status_fd = -1;                                   // --status-fd; -1: none
  int endpoint_fd = -1;                                 // --endpoint-fd (instead of --endpoint); -1: none
  // CURVE on a TCP link to the endpoint (workers of a block): this worker's key pair and the
  // endpoint's public key; both or neither.
  std::string curve_secret_key_file;  // --curve-secret-key-file
  std::string endpoint_public_key;    // --endpoint-public-key
};

// Parses loom-worker's command line into `flags`. Returns an exit code when the process should
// end at once: 0 after --help (printed to stdout), non-zero after a usage error (on stderr).
std::optional<int> ParseWorkerFlags(int argc, char** argv, WorkerFlags* flags);

// Registers a set of compiled-in kernels (the science kernels of kernels/).
using KernelSet = std::function<Status(KernelRegistry*)>;

// Registers the built-in kernels, then each compiled-in set, then each --plugin in order, then
// the *.so files of each --plugin-dir in name order. A plugin that fails to load adds nothing and
// is not fatal: its error is returned, for the log and WorkerHello.load_errors. Fails only if the
// built-ins or a compiled-in set do.
Result<std::vector<std::string>> LoadKernels(const WorkerFlags& flags, KernelRegistry* registry,
                                             const std::vector<KernelSet>& compiled_in = {});

// Makes SIGTERM and SIGINT set the flag StopRequested() reads. The handlers are installed without
// SA_RESTART, so a blocking ZeroMQ call on this thread returns EINTR and the loop sees the flag.
void InstallStopSignalHandlers();
bool StopRequested();

// Everything loom-worker does; returns its exit code.
int WorkerMain(int argc, char** argv, const std::vector<KernelSet>& compiled_in = {});

}  // namespace loom::worker
