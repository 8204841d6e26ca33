// Worker launch wrapping: turns the command line of a worker (argv + environment) into the
// command line that starts it inside a container (docker, podman, apptainer) or a bubblewrap
// sandbox, as the endpoint config's `container:` and `sandbox:` sections say.
//
// Pure functions (no I/O, no clock, no process state): the caller supplies the worker's name,
// the directories it must reach and its uid/gid, so every generated command is checked exactly
// by unit tests. In common/ because two processes wrap workers with it: the endpoint for the
// workers it spawns itself, and loom-manager (worker/manager.h) for the workers of a block.
//
// Container command templates are lists of arguments. An argument that is exactly one of
// {binds} {env} {options} {command} expands to zero or more arguments; inside any other
// argument {runtime} {image} {name} {uid} {gid} are replaced by their values. Any other
// {placeholder} is an error. A template must hold {image} and {command}.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace YAML {
class Node;
}

namespace loom {

struct ContainerConfig {
  std::string runtime;         // empty: no container; "docker", "podman" or "apptainer"
  std::string image;           // docker/podman: an image reference; apptainer: a .sif file or URI
  std::string runtime_binary;  // what {runtime} becomes; default: the runtime's name (found on PATH)
  // The worker program inside the image: it replaces the host path of loom-worker.
  std::string worker_binary = "loom-worker";
  std::vector<std::string> command;  // the run template; empty: DefaultContainerTemplate(runtime)
  std::vector<std::string> options;  // extra runtime options, at {options}
  // Extra bind mounts, "HOST" (same path inside), "HOST:CONTAINER", or either with ":ro".
  std::vector<std::string> binds;
  // Run after the worker has ended, to remove what it may leave behind (a stopped container
  // whose client was killed). Empty: DefaultContainerCleanup(runtime). Same placeholders as
  // `command` except {binds} {env} {options} {command}.
  std::vector<std::string> cleanup;

  bool enabled() const { return !runtime.empty(); }
};

struct SandboxConfig {
  std::string type;                   // empty or "none": no sandbox; "bubblewrap"
  std::string bwrap = "bwrap";        // the bubblewrap program
  std::vector<std::string> writable;  // host directories the worker may write (absolute paths)
  bool network = false;               // true: keep the host's network (default: none, not even loopback peers)
  std::vector<std::string> options;   // extra bwrap options, placed before the worker's command

  bool enabled() const { return !type.empty() && type != "none"; }
};

// A command line: argv[0] is looked up on PATH; env entries are "NAME=value" added to the
// inherited environment of argv's process.
struct LaunchCommand {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  // Run (best effort) once the process of argv has ended; empty: nothing to run.
  std::vector<std::string> cleanup;
};

// What the wrapper needs to know about the worker it wraps.
struct LaunchContext {
  std::string name;  // unique per worker on this host (the container's name); [A-Za-z0-9_.-]
  // Directories the worker must reach read-write at the same path (the endpoint's run directory
  // with the worker socket, a worker cache): bound into containers, writable in the sandbox.
  std::vector<std::string> shared_dirs;
  int uid = 0;  // {uid} and {gid}: docker/podman run the worker as this user, so that it may
  int gid = 0;  // use the socket and the files of shared_dirs
  // Files or directories the worker must read at the same path, read-only (a block worker's key
  // file): bound read-only into containers and into the sandbox (whose /tmp is its own).
  std::vector<std::string> read_only_paths;
  // The worker's program as the host sees it: its binary, plugins and plugin directories, and
  // the starting program's own directory (a build tree or prefix that holds their libraries).
  // Containers run the image's own; the sandbox binds, read-only, the top directory under /tmp
  // or /dev/shm of each one there (a build tree under /tmp), which its private /tmp would hide.
  std::vector<std::string> program_paths;
};

// LaunchContext::program_paths for a worker: its binary, then the plugins and plugin directories
// it loads, then the directory of the program that starts it (ExecutableDir()).
std::vector<std::string> WorkerProgramPaths(const std::string& worker_binary, const std::vector<std::string>& plugins,
                                            const std::vector<std::string>& plugin_dirs);

// The wait before starting again a worker that died before it started (a missing library, a
// sandbox that cannot run it): 0.5 s after the first such death, doubling to 30 s.
std::chrono::milliseconds NextStartBackoff(std::chrono::milliseconds previous);

// `raw` with each character a container name may not hold ([A-Za-z0-9_.-]) turned into '-'.
std::string ContainerName(std::string raw);

std::vector<std::string> DefaultContainerTemplate(const std::string& runtime);
std::vector<std::string> DefaultContainerCleanup(const std::string& runtime);

// Clear errors for bad settings (unknown runtime, missing image, bad template or bind, relative
// writable directory, a sandbox combined with a container); OK for disabled sections.
Status ValidateContainerConfig(const ContainerConfig& c);
Status ValidateSandboxConfig(const SandboxConfig& s);
Status ValidateLaunchConfig(const ContainerConfig& c, const SandboxConfig& s);

// The command that runs `worker` as configured: unchanged when neither section is enabled.
// With a container, worker.argv[0] becomes c.worker_binary. A container and a sandbox together
// are refused (a container already isolates the worker; bwrap cannot wrap a runtime client).
Result<LaunchCommand> WrapWorkerCommand(const LaunchCommand& worker, const LaunchContext& ctx, const ContainerConfig& c,
                                        const SandboxConfig& s);

// The `container:` and `sandbox:` sections, as in an endpoint config file (keys named after the
// fields). Not validated here: see ValidateLaunchConfig.
Status ReadContainerSection(const YAML::Node& n, ContainerConfig* c);
Status ReadSandboxSection(const YAML::Node& n, SandboxConfig* s);

// A block's launch file: the endpoint writes its `container:` and `sandbox:` sections (YAML, the
// config file's own format) for loom-manager, which wraps each worker it starts with them.
std::string LaunchSettingsYaml(const ContainerConfig& c, const SandboxConfig& s);
// Reads and validates a launch file written by LaunchSettingsYaml.
Status LoadLaunchSettingsFile(const std::string& path, ContainerConfig* c, SandboxConfig* s);

}  // namespace loom
