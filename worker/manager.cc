#include "worker/manager.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>

#include "common/curve.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "worker/relay.h"

namespace loom::worker {

std::string BlockWorkerId(const std::string& block_id, const std::string& node, int slot, int generation) {
  return block_id + ":" + node + ":w" + std::to_string(slot) + "." + std::to_string(generation);
}

bool UsesRelay(const BlockLaunch& launch) {
  return !launch.container.enabled() && launch.sandbox.enabled() && !launch.sandbox.network;
}

std::vector<std::string> BlockWorkerArgv(const ManagerFlags& flags, const std::string& worker_id,
                                         const std::string& relay_address) {
  const bool relayed = !relay_address.empty();
  std::vector<std::string> argv = {flags.worker_binary, "--endpoint",  relayed ? relay_address : flags.endpoint,
                                   "--worker-id",       worker_id,     "--log-level",
                                   flags.log_level};
  if (flags.max_message_bytes > 0)
    argv.insert(argv.end(), {"--max-message-bytes", std::to_string(flags.max_message_bytes)});
  // Through the relay the link is a Unix socket in a directory only this user may enter; the
  // relay holds the key for the TCP leg.
  if (!flags.curve_secret_key_file.empty() && !relayed) {
    // --endpoint-public-key=KEY as one argument: a Z85 key may begin with '-'.
    argv.insert(argv.end(), {"--curve-secret-key-file", flags.curve_secret_key_file,
                             "--endpoint-public-key=" + flags.endpoint_public_key});
  }
  for (const auto& p : flags.plugins) argv.insert(argv.end(), {"--plugin", p});
  for (const auto& d : flags.plugin_dirs) argv.insert(argv.end(), {"--plugin-dir", d});
  return argv;
}

namespace {
std::string ShortHostName() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  std::string h = host;
  return h.substr(0, h.find('.'));
}
}  // namespace

Result<LaunchCommand> BlockWorkerLaunch(const ManagerFlags& flags, const BlockLaunch& launch,
                                        const std::string& worker_id, int uid, int gid, const std::string& relay_dir) {
  LaunchContext ctx;
  // Unique on the host: block ids differ between the endpoint's runs, worker ids within a block.
  ctx.name = ContainerName("loom-" + worker_id);
  ctx.uid = uid;
  ctx.gid = gid;
  if (!relay_dir.empty()) {
    ctx.shared_dirs = {relay_dir};  // the relay's socket
  } else if (!flags.curve_secret_key_file.empty()) {
    // The key file may be under /tmp (the sandbox's own) or outside the image: bound read-only.
    ctx.read_only_paths.push_back(flags.curve_secret_key_file);
  }
  ctx.program_paths = WorkerProgramPaths(flags.worker_binary, flags.plugins, flags.plugin_dirs);
  const std::string relay_address = relay_dir.empty() ? "" : WorkerRelayAddress(relay_dir);
  return WrapWorkerCommand({BlockWorkerArgv(flags, worker_id, relay_address), {}, {}}, ctx, launch.container,
                           launch.sandbox);
}

std::optional<int> ParseManagerFlags(int argc, char** argv, ManagerFlags* flags) {
  ManagerFlags& f = *flags;
  CLI::App app{"loom-manager: runs the workers of one node of a Loom block; started by the block's job script"};
  app.add_option("--endpoint", f.endpoint, "the endpoint's worker address, tcp://HOST:PORT")->required();
  app.add_option("--block-id", f.block_id, "the block this node belongs to (set by the endpoint)")->required();
  app.add_option("--node", f.node, "this node's name in worker ids (default: the short host name)");
  app.add_option("--workers", f.workers, "workers on this node")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--worker-binary", f.worker_binary, "loom-worker (default: next to this program)");
  app.add_option("--plugin", f.plugins, "kernel plugin for the workers; repeatable");
  app.add_option("--plugin-dir", f.plugin_dirs, "directory of kernel plugins; repeatable");
  app.add_option("--max-message-bytes", f.max_message_bytes, "the workers' largest message (0: their default)");
  app.add_option("--curve-secret-key-file", f.curve_secret_key_file,
                 "the workers' CURVE key pair (a 0600 file written by the endpoint; with --endpoint-public-key)");
  app.add_option("--endpoint-public-key", f.endpoint_public_key, "the endpoint's CURVE public key");
  app.add_option("--launch-file", f.launch_file,
                 "the workers' container: and sandbox: settings (YAML, written by the endpoint)");
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (f.block_id.empty() || f.block_id.find(':') != std::string::npos) {
    std::fprintf(stderr, "error: --block-id must be non-empty and hold no ':'\n");
    return 2;
  }
  if (f.curve_secret_key_file.empty() != f.endpoint_public_key.empty()) {
    std::fprintf(stderr, "error: CURVE needs both --curve-secret-key-file and --endpoint-public-key\n");
    return 2;
  }
  if (f.node.empty()) f.node = ShortHostName();
  std::replace(f.node.begin(), f.node.end(), ':', '_');
  if (f.worker_binary.empty()) f.worker_binary = ExecutableDir() + "/loom-worker";
  return std::nullopt;
}

namespace {

struct Slot {
  Subprocess process;
  std::vector<std::string> cleanup;  // run once the worker has ended (a container's removal)
  int generation = 0;
  std::chrono::steady_clock::time_point started{};
  std::chrono::steady_clock::time_point restart_at{};  // after a quick death: not before this
  std::chrono::milliseconds backoff{0};
};

}  // namespace

int ManagerMain(int argc, char** argv) {
  ManagerFlags f;
  if (auto code = ParseManagerFlags(argc, argv, &f)) return *code;
  InitLogging(f.log_level, "loom-manager");
  BlockLaunch launch;
  if (!f.launch_file.empty()) {
    if (Status st = LoadLaunchSettingsFile(f.launch_file, &launch.container, &launch.sandbox); !st.ok()) {
      spdlog::critical("{}", st.message());
      return 2;
    }
  }
  // Checked once here, so that a bad key file is one clear error rather than every worker's.
  std::optional<curve::KeyPair> keys;
  if (!f.curve_secret_key_file.empty()) {
    auto read = curve::ReadSecretKeyFile(f.curve_secret_key_file);
    if (!read.ok()) {
      spdlog::critical("the workers' CURVE key: {}", read.status().message());
      return 2;
    }
    keys = std::move(read).value();
  }
  // Signals are read with sigtimedwait: block them first (the workers start with a clean mask).
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGHUP);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);

  // Sandboxed workers without a network reach the endpoint through this process. After the mask:
  // the relay's threads (its own and ZeroMQ's) inherit it, or a SIGTERM could be delivered to one
  // of them and end the process before it stops its workers and removes the relay's directory.
  std::string relay_dir;
  std::unique_ptr<WorkerRelay> relay;
  if (UsesRelay(launch)) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/loom-relay-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      spdlog::critical("cannot make the workers' relay directory {}: {}", tmpl, std::strerror(errno));
      return 2;
    }
    relay_dir = tmpl;
    auto started = WorkerRelay::Start({f.endpoint, relay_dir, keys, f.endpoint_public_key,
                                       f.max_message_bytes > 0 ? f.max_message_bytes + (1 << 20) : -1});
    if (!started.ok()) {
      spdlog::critical("{}", started.status().ToString());
      std::filesystem::remove_all(relay_dir);
      return 2;
    }
    relay = std::move(started).value();
    spdlog::info("the sandboxed workers have no network: they reach the endpoint through {}", relay->address());
  }


  std::vector<Slot> slots(static_cast<size_t>(f.workers));
  auto start = [&](int k) {
    Slot& s = slots[static_cast<size_t>(k)];
    ++s.generation;
    const std::string id = BlockWorkerId(f.block_id, f.node, k, s.generation);
    s.started = std::chrono::steady_clock::now();
    auto command =
        BlockWorkerLaunch(f, launch, id, static_cast<int>(::getuid()), static_cast<int>(::getgid()), relay_dir);
    if (!command.ok()) {
      spdlog::error("cannot start worker {}: {}", id, command.status().message());
      return;
    }
    SpawnOptions options;
    options.env = command->env;
    s.cleanup = command->cleanup;
    auto p = Subprocess::Spawn(command->argv, options);
    if (!p.ok()) {
      spdlog::error("cannot start worker {}: {}", id, p.status().message());
      return;
    }
    s.process = std::move(p).value();
  };
  // Clean-up commands still running (quiet: they usually find nothing to do).
  std::vector<Subprocess> cleanups;
  auto clean_up = [&](Slot& s) {
    if (s.cleanup.empty()) return;
    SpawnOptions quiet;
    quiet.log_path = "/dev/null";
    auto p = Subprocess::Spawn(s.cleanup, quiet);
    if (p.ok()) cleanups.push_back(std::move(p).value());
    s.cleanup.clear();
  };
  spdlog::info("manager of block {} on {}: {} worker(s) for {}{}", f.block_id, f.node, f.workers, f.endpoint,
               launch.container.enabled() ? " in " + launch.container.runtime + " containers"
               : launch.sandbox.enabled() ? " in " + launch.sandbox.type + " sandboxes"
                                          : "");
  for (int k = 0; k < f.workers; ++k) start(k);

  int stop_signal = 0;
  while (stop_signal == 0) {
    timespec wait{0, 200 * 1000 * 1000};
    siginfo_t info;
    const int sig = ::sigtimedwait(&mask, &info, &wait);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
      stop_signal = sig;
      break;
    }
    // Reaped as they end: a worker that keeps dying must not leave a zombie per clean-up.
    std::erase_if(cleanups, [](Subprocess& c) { return !c.Running(); });
    const auto now = std::chrono::steady_clock::now();
    for (int k = 0; k < f.workers; ++k) {
      Slot& s = slots[static_cast<size_t>(k)];
      if (s.process.Running()) continue;
      if (s.restart_at == std::chrono::steady_clock::time_point{}) {
        clean_up(s);
        if (relay) relay->Forget(BlockWorkerId(f.block_id, f.node, k, s.generation));
        const auto how = s.process.exit_status() ? DescribeWaitStatus(*s.process.exit_status()) : "did not start";
        // A worker that dies at once (a bad plugin, a missing library) is restarted with backoff.
        const bool quick = now - s.started < std::chrono::seconds(5);
        s.backoff = quick ? NextStartBackoff(s.backoff) : std::chrono::milliseconds(0);
        s.restart_at = now + s.backoff;
        spdlog::warn("worker {} exited ({}); restarting in {} ms", BlockWorkerId(f.block_id, f.node, k, s.generation),
                     how, s.backoff.count());
      }
      if (now >= s.restart_at) {
        s.restart_at = {};
        start(k);
      }
    }
  }
  spdlog::info("manager of block {} stopping its workers (signal {})", f.block_id, stop_signal);
  for (auto& s : slots) s.process.Signal(SIGTERM);
  for (auto& s : slots) s.process.Stop(std::chrono::milliseconds(3000));
  for (auto& s : slots) clean_up(s);
  for (auto& c : cleanups) c.Stop(std::chrono::milliseconds(10000));
  if (relay) {
    relay.reset();
    std::error_code ec;
    std::filesystem::remove_all(relay_dir, ec);
  }
  return 0;
}

}  // namespace loom::worker
