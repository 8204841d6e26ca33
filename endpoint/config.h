// EndpointConfig: every setting of loom-endpoint, from an optional YAML file and then flags.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "endpoint/devices.h"
#include "endpoint/launch.h"

namespace loom::endpoint {

struct EndpointConfig {
  std::string id;                                 // required: the endpoint's id at the service
  std::string name;                               // display name; defaults to the id
  std::string group;                              // endpoints of one group stand in for each other (failover)
  std::string service = "tcp://127.0.0.1:50052";  // the service's endpoint address
  int workers = 2;
  int prefetch = 16;          // tasks handed to one worker ahead of time
  int queue_capacity = 256;   // tasks held here beyond what the workers hold
  std::string worker_binary;  // default: loom-worker next to loom-endpoint
  std::vector<std::string> plugins;
  std::vector<std::string> plugin_dirs;
  int heartbeat_period_ms = 1000;
  int heartbeat_misses = 3;
  int64_t max_message_bytes = 10 * 1024 * 1024;
  std::string run_dir;  // where the worker socket lives; default: a fresh temp dir
  // Results not yet acknowledged by the service are kept here, so they survive a restart.
  // Default: $XDG_STATE_HOME/loom/endpoint-<id>/spool (~/.local/state/... without it).
  std::string spool_dir;
  bool spool_fsync = false;  // fdatasync each spool write: survives power loss too
  std::string ready_file;    // written once registered with the service
  // Prometheus /metrics listen address, HOST:PORT (port 0 picks one, reported in the ready
  // file as metrics=HOST:PORT); empty: no metrics.
  std::string metrics_address;
  std::string log_level = "info";
  // CURVE (the service runs --endpoint-auth curve): this endpoint's key pair, made and
  // registered by `loom endpoint configure`, and the service's public key (Z85, or a file
  // holding it). Without them the endpoint connects in plaintext (--endpoint-auth none).
  std::string curve_secret_key_file;
  std::string service_public_key;
  std::string service_public_key_file;
  // The endpoint's own allow-list (common/allow_list.h), checked on every task it receives,
  // whatever the service decided. Unset owner: no check (allow_* then must be empty).
  std::string owner;
  std::vector<std::string> allowed_users;      // "*": every user
  std::vector<std::string> allowed_functions;  // "name" (the owner's) or "user/name"; empty: any

  // Capability routing (docs/ENDPOINTS.md, "Capability routing and groups").
  // Devices advertised beside the CPUs and the GPUs nvidia-smi finds (`devices:` in YAML, a
  // list of {class, model, count, memory_bytes, emulated}): an FPGA card, or an emulated one.
  std::vector<DeclaredDevice> devices;
  // With N > 0 and GPUs found: N workers per GPU (the worker count becomes N × GPUs), each
  // pinned to its GPU with CUDA_VISIBLE_DEVICES. 0: workers see every GPU.
  int workers_per_gpu = 0;
  std::string nvidia_smi = "nvidia-smi";  // program queried for GPUs; "" or "none": do not look
  // How workers are started (endpoint/launch.h): in a container, or in a bubblewrap sandbox.
  // YAML sections `container:` and `sandbox:`; validated when the file is read.
  ContainerConfig container;
  SandboxConfig sandbox;
};

// YAML keys named as the fields (plugins and plugin_dirs are lists).
Status LoadEndpointConfigFile(const std::string& path, EndpointConfig* config);

}  // namespace loom::endpoint
