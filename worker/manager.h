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
#pragma once

#include <string>
#include <vector>

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
};

// The id of the worker in slot `slot` (0-based), generation `generation`.
std::string BlockWorkerId(const std::string& block_id, const std::string& node, int slot, int generation);
// The loom-worker command line for one worker.
std::vector<std::string> BlockWorkerArgv(const ManagerFlags& flags, const std::string& worker_id);

// Everything loom-manager does; returns its exit code.
int ManagerMain(int argc, char** argv);

}  // namespace loom::worker
