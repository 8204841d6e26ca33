// EndpointConfig: every setting of loom-endpoint, from an optional YAML file and then flags.
#pragma once

#include <string>
#include <vector>

#include "common/launch.h"
#include "common/status.h"
#include "endpoint/devices.h"

namespace loom::endpoint {

// The `engine:` section: how workers are laid out on the nodes of a block, and where they
// connect back to the endpoint. Used only with a provider (see ProviderConfig).
struct EngineConfig {
  int workers_per_node = 0;  // 0: the top-level `workers`
  // One worker per accelerator (pinned), for accelerator routing; 0: off. Read by the routing
  // code; blocks start workers_per_node workers either way.
  int workers_per_accelerator = 0;
  // Where the endpoint listens for the workers of its blocks, tcp://IP:PORT (port 0: any free
  // one). Nodes of a cluster need an address they can reach, e.g. tcp://0.0.0.0:0.
  std::string listen = "tcp://127.0.0.1:0";
  // The host the workers dial (the port is the one bound); default: the listen IP, or this
  // host's name when listening on every interface.
  std::string address;
  // A block none of whose workers ran a task for this long is released (never below
  // min_blocks).
  double max_idletime_s = 120;
  // How often the provider is asked about its jobs, and scaling is decided.
  int poll_period_ms = 5000;
};

// The `provider:` section: where blocks of workers come from. Without it (type empty) the
// endpoint runs `workers` loom-worker processes itself (see worker_link), as before.
struct ProviderConfig {
  std::string type;  // "", "local", "slurm" or "pbs"
  int nodes_per_block = 1;
  int init_blocks = 1;                // submitted at start
  int min_blocks = 0;                 // kept however idle
  int max_blocks = 1;                 // never more, however much work waits
  std::string walltime = "01:00:00";  // [D-]HH:MM:SS
  std::string partition;              // Slurm partition, PBS queue
  std::string account;
  std::vector<std::string> scheduler_options;  // extra lines for the job script's header, verbatim
  std::vector<std::string> worker_init;        // shell commands run before the manager starts
  // Prefix of the manager's command line on each node: "" picks the provider's default (srun for
  // Slurm, none for local and single-node PBS), "none" runs the manager directly.
  std::string launcher;
  std::string script_dir;  // job scripts and their output; default: <run_dir>/blocks
  int cmd_timeout_s = 30;  // one sbatch/squeue/qsub/qstat call
};

struct EndpointConfig {
  std::string id;                                 // required: the endpoint's id at the service
  std::string name;                               // display name; defaults to the id
  std::string group;                              // endpoints of one group stand in for each other (failover)
  std::string service = "tcp://127.0.0.1:50052";  // the service's endpoint address
  int workers = 2;
  int prefetch = 16;          // tasks handed to one worker ahead of time
  int queue_capacity = 1024;  // tasks held here beyond what the workers hold
  // The most bytes of task specs held here, with the workers' (CreditWindow); 0: no bound. The
  // endpoint asks for fewer tasks than the count above allows when they are this large.
  int64_t queue_bytes = 256 << 20;
  // Tasks of a kernel whose runs here average under this many microseconds go to one worker
  // together, up to `pack_prefetch`, instead of one to each idle worker (endpoint/task_pacer.h);
  // 0: always spread.
  int pack_tasks_under_us = 50;
  // Tasks of such a short kernel handed to one worker ahead of time (at least `prefetch`): each
  // message to a worker wakes it and two ZeroMQ I/O threads, which costs more than short tasks.
  int pack_prefetch = 64;
  // How the workers this endpoint starts itself talk to it: "socket", a socketpair(2) each (no
  // ZeroMQ I/O thread on either side: a message costs a write and a read); "zmq", the ipc ROUTER
  // socket. Workers in a container use the ROUTER socket either way, as do a block's (over TCP).
  std::string worker_link = "socket";
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
  // How workers are started (common/launch.h): in a container, or in a bubblewrap sandbox.
  // YAML sections `container:` and `sandbox:`; validated when the file is read.
  ContainerConfig container;
  SandboxConfig sandbox;
  // Blocks of workers from a provider (docs/ENDPOINTS.md, "Providers").
  EngineConfig engine;
  ProviderConfig provider;
  // True when blocks of workers come from a provider.
  bool uses_blocks() const { return !provider.type.empty(); }
};

// YAML keys named as the fields (plugins and plugin_dirs are lists); `engine:` and `provider:`
// are maps with keys named as the fields of EngineConfig and ProviderConfig.
Status LoadEndpointConfigFile(const std::string& path, EndpointConfig* config);

// Checks the engine and provider sections (ranges, names, the walltime's form), saying what is
// wrong and what is allowed.
Status ValidateBlocksConfig(const EndpointConfig& config);
// Seconds in a walltime "[D-]HH:MM:SS" (hours may exceed 23); INVALID_ARGUMENT otherwise.
Result<int64_t> ParseWalltime(const std::string& walltime);

}  // namespace loom::endpoint
