// loom-manager: the per-node process of a block. A provider (endpoint/provider.h) starts one on
// each node of a block, after the block's worker_init commands; it starts --workers loom-worker
// processes that connect back to the endpoint (over TCP: the endpoint is on another host, e.g. a
// cluster's login node), replaces a worker that dies, and on SIGTERM or SIGINT (scancel, qdel,
// the end of a local block) stops its workers and exits.
//
//   loom-manager --endpoint tcp://login1:40123 --block-id b3 --workers 8 [--plugin x.so]...
//
// Worker ids are BLOCK:NODE:wK.GEN: the endpoint tells a block's workers by the BLOCK prefix,
// and a worker whose GEN is newer than the one it knew in slot BLOCK:NODE:wK replaces it (the
// old one died: its task is re-run). The workers die with the manager (PR_SET_PDEATHSIG).
//
// The workers connect with CURVE (--curve-secret-key-file, --endpoint-public-key: the endpoint
// admits no other key), and with --launch-file (the endpoint's container: and sandbox:
// sections, common/launch.h) each runs inside a container or a bubblewrap sandbox, wrapped
// exactly as the endpoint wraps the workers it starts itself. Workers sandboxed without a
// network connect to the manager's relay (worker/relay.h) instead, which holds the key.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/launch.h"
#include "common/status.h"

namespace loom::worker {

struct ManagerFlags {
  std::string endpoint;  // the endpoint's worker address, tcp://HOST:PORT
  std::string block_id;  // set by the endpoint
  std::string node;      // default: this host's short name
  int workers = 1;
  std::string worker_binary;  // default: loom-worker next to loom-manager
  std::vector<std::string> plugins;
  std::vector<std::string> plugin_dirs;
  int64_t max_message_bytes = 0;  // 0: loom-worker's default
  std::string log_level = "info";
  std::string curve_secret_key_file;  // CURVE for the workers' TCP link (both or neither)
  std::string endpoint_public_key;
  std::string launch_file;  // the workers' container/sandbox settings; empty: bare workers
};

// What the workers of this node are wrapped in (from --launch-file).
struct BlockLaunch {
  ContainerConfig container;
  SandboxConfig sandbox;
};

// The id of the worker in slot `slot` (0-based), generation `generation`.
std::string BlockWorkerId(const std::string& block_id, const std::string& node, int slot, int generation);
// Whether the workers go through the manager's relay (worker/relay.h): in a bubblewrap sandbox
// without a network they cannot reach the endpoint's TCP socket themselves.
bool UsesRelay(const BlockLaunch& launch);

// The loom-worker command line for one worker: connected to the endpoint with the run's key,
// or, with a relay address, to the relay (no key: the relay holds it).
std::vector<std::string> BlockWorkerArgv(const ManagerFlags& flags, const std::string& worker_id,
                                         const std::string& relay_address = "");

// The command that starts the worker `worker_id` (BlockWorkerArgv) in `launch`'s container or
// sandbox, running as uid:gid; its key file is made readable inside, read-only. With
// `relay_dir` (UsesRelay) the worker connects to the relay's socket there instead, and that
// directory is bound into its sandbox in place of the key file.
Result<LaunchCommand> BlockWorkerLaunch(const ManagerFlags& flags, const BlockLaunch& launch,
                                        const std::string& worker_id, int uid, int gid,
                                        const std::string& relay_dir = "");

// Parses loom-manager's command line into `flags` (defaults filled in). Returns an exit code
// when the process should exit now (--help, bad flags).
std::optional<int> ParseManagerFlags(int argc, char** argv, ManagerFlags* flags);

// Everything loom-manager does; returns its exit code.
int ManagerMain(int argc, char** argv);

}  // namespace loom::worker
