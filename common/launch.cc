#include "common/launch.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>

#include "common/util.h"

namespace loom {
namespace {

const char* const kRuntimes[] = {"docker", "podman", "apptainer"};
// Placeholders that expand to a list of arguments; each must be a whole argument.
const char* const kListPlaceholders[] = {"{binds}", "{env}", "{options}", "{command}"};
const char* const kScalarPlaceholders[] = {"runtime", "image", "name", "uid", "gid"};

bool KnownRuntime(const std::string& r) {
  return std::find(std::begin(kRuntimes), std::end(kRuntimes), r) != std::end(kRuntimes);
}
bool IsListPlaceholder(const std::string& arg) {
  return std::find(std::begin(kListPlaceholders), std::end(kListPlaceholders), arg) != std::end(kListPlaceholders);
}
bool IsAbsolute(const std::string& p) { return !p.empty() && p[0] == '/'; }

// Replaces {runtime} {image} {name} {uid} {gid} in `arg`; an unknown {x} is an error.
Result<std::string> Substitute(const std::string& arg, const std::map<std::string, std::string>& values,
                               const std::string& what) {
  std::string out;
  size_t i = 0;
  while (i < arg.size()) {
    if (arg[i] != '{') {
      out += arg[i++];
      continue;
    }
    size_t close = arg.find('}', i);
    if (close == std::string::npos) {
      return InvalidArgument(what + ": argument '" + arg + "' has a '{' without its '}'");
    }
    std::string key = arg.substr(i + 1, close - i - 1);
    auto it = values.find(key);
    if (it == values.end()) {
      std::string known;
      for (const char* k : kScalarPlaceholders) known += std::string(known.empty() ? "" : " ") + "{" + k + "}";
      if (IsListPlaceholder("{" + key + "}")) {
        return InvalidArgument(what + ": {" + key + "} must be an argument of its own, not part of '" + arg + "'");
      }
      return InvalidArgument(what + ": unknown placeholder {" + key + "} in '" + arg + "'; known: " + known +
                             ", and as whole arguments {binds} {env} {options} {command}");
    }
    out += it->second;
    i = close + 1;
  }
  return out;
}

struct Bind {
  std::string host, target;
  bool read_only = false;
};

Result<Bind> ParseBind(const std::string& spec) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon == std::string::npos ? std::string::npos : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  Bind b;
  if (!parts.empty() && (parts.back() == "ro" || parts.back() == "rw")) {
    b.read_only = parts.back() == "ro";
    parts.pop_back();
  }
  if (parts.empty() || parts.size() > 2) {
    return InvalidArgument("container bind '" + spec +
                           "': expected HOST, HOST:CONTAINER, HOST:ro or HOST:CONTAINER:ro");
  }
  b.host = parts[0];
  b.target = parts.size() == 2 ? parts[1] : parts[0];
  if (!IsAbsolute(b.host) || !IsAbsolute(b.target)) {
    return InvalidArgument("container bind '" + spec + "': both paths must be absolute");
  }
  return b;
}

Status CheckTemplate(const std::vector<std::string>& tmpl, const std::string& what, bool allow_lists) {
  bool image = false;
  int command = 0;
  std::map<std::string, std::string> probe;
  for (const char* k : kScalarPlaceholders) probe[k] = "x";
  for (const auto& arg : tmpl) {
    if (IsListPlaceholder(arg)) {
      if (!allow_lists) return InvalidArgument(what + ": " + arg + " has no meaning here");
      if (arg == "{command}") ++command;
      continue;
    }
    if (arg.find("{image}") != std::string::npos) image = true;
    LOOM_RETURN_IF_ERROR(Substitute(arg, probe, what).status());
  }
  if (allow_lists && (!image || command != 1)) {
    return InvalidArgument(what + " must hold {image} and {command} (once); got '" + [&] {
      std::string s;
      for (const auto& a : tmpl) s += (s.empty() ? "" : " ") + a;
      return s;
    }() + "'");
  }
  return Status::Ok();
}

bool ValidName(const std::string& name) {
  if (name.empty() || !std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '-';
  });
}

Status CheckEnv(const std::vector<std::string>& env) {
  for (const auto& e : env) {
    size_t eq = e.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("worker environment entry '" + e + "' is not NAME=value");
    }
  }
  return Status::Ok();
}

Result<LaunchCommand> WrapInContainer(const LaunchCommand& worker, const LaunchContext& ctx, const ContainerConfig& c) {
  if (!ValidName(ctx.name)) {
    return InvalidArgument("worker name '" + ctx.name + "' is not a valid container name ([A-Za-z0-9][A-Za-z0-9_.-]*)");
  }
  const bool apptainer = c.runtime == "apptainer";
  std::vector<std::string> binds;
  auto add_bind = [&](const Bind& b) {
    binds.push_back(apptainer ? "--bind" : "--volume");
    binds.push_back(b.host + ":" + b.target + (b.read_only ? ":ro" : ""));
  };
  for (const auto& d : ctx.shared_dirs) {
    if (!IsAbsolute(d)) return InvalidArgument("shared directory '" + d + "' must be an absolute path");
    add_bind({d, d, false});
  }
  for (const auto& p : ctx.read_only_paths) {
    if (!IsAbsolute(p)) return InvalidArgument("read-only path '" + p + "' must be an absolute path");
    add_bind({p, p, true});
  }
  for (const auto& spec : c.binds) {
    LOOM_ASSIGN_OR_RETURN(Bind b, ParseBind(spec));
    add_bind(b);
  }
  std::vector<std::string> env;
  // docker, podman and apptainer (1.x) all take --env NAME=value.
  for (const auto& e : worker.env) env.insert(env.end(), {"--env", e});
  std::vector<std::string> command = worker.argv;
  command[0] = c.worker_binary;

  const std::map<std::string, std::string> values = {
      {"runtime", c.runtime_binary.empty() ? c.runtime : c.runtime_binary},
      {"image", c.image},
      {"name", ctx.name},
      {"uid", std::to_string(ctx.uid)},
      {"gid", std::to_string(ctx.gid)}};
  const std::vector<std::string> tmpl = c.command.empty() ? DefaultContainerTemplate(c.runtime) : c.command;
  LaunchCommand out;
  for (const auto& arg : tmpl) {
    if (arg == "{binds}") {
      out.argv.insert(out.argv.end(), binds.begin(), binds.end());
    } else if (arg == "{env}") {
      out.argv.insert(out.argv.end(), env.begin(), env.end());
    } else if (arg == "{options}") {
      out.argv.insert(out.argv.end(), c.options.begin(), c.options.end());
    } else if (arg == "{command}") {
      out.argv.insert(out.argv.end(), command.begin(), command.end());
    } else {
      LOOM_ASSIGN_OR_RETURN(std::string s, Substitute(arg, values, "container command"));
      out.argv.push_back(std::move(s));
    }
  }
  const std::vector<std::string> cleanup = c.cleanup.empty() ? DefaultContainerCleanup(c.runtime) : c.cleanup;
  for (const auto& arg : cleanup) {
    LOOM_ASSIGN_OR_RETURN(std::string s, Substitute(arg, values, "container cleanup"));
    out.cleanup.push_back(std::move(s));
  }
  return out;
}

// The top directories under /tmp and /dev/shm (the sandbox's own, empty) holding the worker's
// program: "/tmp/build/bin/loom-worker" gives "/tmp/build", which also holds the libraries it
// loads by RPATH. Relative paths are taken from the current directory, as the worker would.
std::vector<std::string> HiddenProgramDirs(const std::vector<std::string>& paths) {
  std::vector<std::string> tops;
  for (const auto& p : paths) {
    if (p.empty()) continue;
    const std::filesystem::path abs = std::filesystem::absolute(p).lexically_normal();
    auto it = abs.begin();
    if (it == abs.end() || *it != "/") continue;
    for (const char* hidden : {"tmp", "dev/shm"}) {
      std::filesystem::path prefix = std::filesystem::path("/") / hidden;
      auto [pe, ae] = std::mismatch(prefix.begin(), prefix.end(), abs.begin(), abs.end());
      if (pe != prefix.end() || ae == abs.end()) continue;  // not strictly inside prefix
      const std::filesystem::path top = prefix / *ae;
      if (std::find(tops.begin(), tops.end(), top.string()) == tops.end()) tops.push_back(top.string());
    }
  }
  return tops;
}

LaunchCommand WrapInBubblewrap(const LaunchCommand& worker, const LaunchContext& ctx, const SandboxConfig& s) {
  LaunchCommand out;
  out.env = worker.env;  // bwrap passes its environment on to the worker
  out.argv = {s.bwrap,
              // The worker dies with bwrap, and bwrap (spawned with a parent-death signal) with
              // the endpoint; the pid namespace takes every process the kernel started along.
              "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--new-session"};
  if (!s.network) out.argv.push_back("--unshare-net");
  // Order matters: later mounts cover earlier ones, so the writable binds come after the
  // read-only root and the private /tmp (a run directory under /tmp stays reachable).
  out.argv.insert(out.argv.end(), {"--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                                   "--tmpfs", "/dev/shm"});
  // Before the shared and writable binds, which may lie inside these and must stay writable.
  for (const auto& top : HiddenProgramDirs(ctx.program_paths)) {
    out.argv.insert(out.argv.end(), {"--ro-bind", top, top});
  }
  for (const auto& d : ctx.shared_dirs) out.argv.insert(out.argv.end(), {"--bind", d, d});
  for (const auto& p : ctx.read_only_paths) out.argv.insert(out.argv.end(), {"--ro-bind", p, p});
  for (const auto& d : s.writable) out.argv.insert(out.argv.end(), {"--bind", d, d});
  out.argv.insert(out.argv.end(), s.options.begin(), s.options.end());
  out.argv.push_back("--");
  out.argv.insert(out.argv.end(), worker.argv.begin(), worker.argv.end());
  return out;
}

}  // namespace

std::vector<std::string> WorkerProgramPaths(const std::string& worker_binary, const std::vector<std::string>& plugins,
                                            const std::vector<std::string>& plugin_dirs) {
  std::vector<std::string> paths = {worker_binary};
  paths.insert(paths.end(), plugins.begin(), plugins.end());
  paths.insert(paths.end(), plugin_dirs.begin(), plugin_dirs.end());
  paths.push_back(ExecutableDir());  // a worker of the same build loads its libraries from there
  return paths;
}

std::chrono::milliseconds NextStartBackoff(std::chrono::milliseconds previous) {
  return std::clamp(previous * 2, std::chrono::milliseconds(500), std::chrono::milliseconds(30000));
}

std::string ContainerName(std::string raw) {
  for (char& ch : raw) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-') ch = '-';
  }
  return raw;
}

std::vector<std::string> DefaultContainerTemplate(const std::string& runtime) {
  if (runtime == "docker" || runtime == "podman") {
    // --init: a PID 1 that forwards the endpoint's SIGTERM and reaps; --user: the socket in the
    // run directory and the shared directories belong to the endpoint's user.
    return {"{runtime}",   "run",     "--rm",  "--init",    "--name",  "{name}",   "--user",
            "{uid}:{gid}", "{binds}", "{env}", "{options}", "{image}", "{command}"};
  }
  if (runtime == "apptainer") {
    // --containall: own /tmp, /home, pid and ipc namespaces and a clean environment (the
    // worker's own variables come through --env).
    return {"{runtime}", "exec", "--containall", "{binds}", "{env}", "{options}", "{image}", "{command}"};
  }
  return {};
}

std::vector<std::string> DefaultContainerCleanup(const std::string& runtime) {
  // Killing `docker run` (the client) leaves the container running: remove it by name. An
  // apptainer container is the worker's own process tree, gone with it.
  if (runtime == "docker" || runtime == "podman") return {"{runtime}", "rm", "--force", "{name}"};
  return {};
}

Status ValidateContainerConfig(const ContainerConfig& c) {
  if (!c.enabled()) {
    if (!c.image.empty() || !c.command.empty() || !c.options.empty() || !c.binds.empty()) {
      return InvalidArgument(
          "container: settings given without a runtime; set container.runtime to docker, podman "
          "or apptainer");
    }
    return Status::Ok();
  }
  if (!KnownRuntime(c.runtime)) {
    return InvalidArgument("container.runtime '" + c.runtime + "' is not one of docker, podman, apptainer");
  }
  if (c.image.empty()) {
    return InvalidArgument("container.image is required with container.runtime " + c.runtime +
                           " (e.g. loom-worker:latest, or a .sif file for apptainer)");
  }
  if (c.worker_binary.empty()) return InvalidArgument("container.worker_binary must not be empty");
  if (!c.command.empty()) LOOM_RETURN_IF_ERROR(CheckTemplate(c.command, "container.command", true));
  if (!c.cleanup.empty()) LOOM_RETURN_IF_ERROR(CheckTemplate(c.cleanup, "container.cleanup", false));
  for (const auto& b : c.binds) LOOM_RETURN_IF_ERROR(ParseBind(b).status());
  return Status::Ok();
}

Status ValidateSandboxConfig(const SandboxConfig& s) {
  if (!s.enabled()) {
    if (!s.writable.empty() || !s.options.empty()) {
      return InvalidArgument("sandbox: settings given without a type; set sandbox.type to bubblewrap");
    }
    return Status::Ok();
  }
  if (s.type != "bubblewrap") {
    return InvalidArgument("sandbox.type '" + s.type + "' is not supported; use bubblewrap (or none)");
  }
  if (s.bwrap.empty()) return InvalidArgument("sandbox.bwrap must name the bubblewrap program");
  for (const auto& d : s.writable) {
    if (!IsAbsolute(d)) return InvalidArgument("sandbox.writable '" + d + "' must be an absolute path");
    if (d == "/") return InvalidArgument("sandbox.writable '/' would make the whole root writable");
  }
  return Status::Ok();
}

Status ValidateLaunchConfig(const ContainerConfig& c, const SandboxConfig& s) {
  LOOM_RETURN_IF_ERROR(ValidateContainerConfig(c));
  LOOM_RETURN_IF_ERROR(ValidateSandboxConfig(s));
  if (c.enabled() && s.enabled()) {
    return InvalidArgument(
        "container and sandbox are exclusive: a container already isolates the worker; set "
        "sandbox.type none or remove container.runtime");
  }
  return Status::Ok();
}

Result<LaunchCommand> WrapWorkerCommand(const LaunchCommand& worker, const LaunchContext& ctx, const ContainerConfig& c,
                                        const SandboxConfig& s) {
  if (worker.argv.empty()) return InvalidArgument("worker command line is empty");
  LOOM_RETURN_IF_ERROR(ValidateLaunchConfig(c, s));
  LOOM_RETURN_IF_ERROR(CheckEnv(worker.env));
  if (c.enabled()) return WrapInContainer(worker, ctx, c);
  if (s.enabled()) {
    for (const auto& d : ctx.shared_dirs) {
      if (!IsAbsolute(d)) return InvalidArgument("shared directory '" + d + "' must be an absolute path");
    }
    for (const auto& p : ctx.read_only_paths) {
      if (!IsAbsolute(p)) return InvalidArgument("read-only path '" + p + "' must be an absolute path");
    }
    return WrapInBubblewrap(worker, ctx, s);
  }
  return worker;
}

Status ReadContainerSection(const YAML::Node& n, ContainerConfig* c) {
  if (!n.IsMap()) return InvalidArgument("'container' must be a map (runtime, image, ...)");
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "runtime")
      c->runtime = v.as<std::string>();
    else if (key == "image")
      c->image = v.as<std::string>();
    else if (key == "runtime_binary")
      c->runtime_binary = v.as<std::string>();
    else if (key == "worker_binary")
      c->worker_binary = v.as<std::string>();
    else if (key == "command")
      c->command = v.as<std::vector<std::string>>();
    else if (key == "options")
      c->options = v.as<std::vector<std::string>>();
    else if (key == "binds")
      c->binds = v.as<std::vector<std::string>>();
    else if (key == "cleanup")
      c->cleanup = v.as<std::vector<std::string>>();
    else
      return InvalidArgument(
          "unknown key 'container." + key +
          "'; known: runtime, image, runtime_binary, worker_binary, command, options, binds, cleanup");
  }
  return Status::Ok();
}

Status ReadSandboxSection(const YAML::Node& n, SandboxConfig* s) {
  if (!n.IsMap()) return InvalidArgument("'sandbox' must be a map (type, writable, ...)");
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "type")
      s->type = v.as<std::string>();
    else if (key == "bwrap")
      s->bwrap = v.as<std::string>();
    else if (key == "writable")
      s->writable = v.as<std::vector<std::string>>();
    else if (key == "network")
      s->network = v.as<bool>();
    else if (key == "options")
      s->options = v.as<std::vector<std::string>>();
    else
      return InvalidArgument("unknown key 'sandbox." + key + "'; known: type, bwrap, writable, network, options");
  }
  return Status::Ok();
}

std::string LaunchSettingsYaml(const ContainerConfig& c, const SandboxConfig& s) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (c.enabled()) {
    out << YAML::Key << "container" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "runtime" << YAML::Value << c.runtime;
    out << YAML::Key << "image" << YAML::Value << c.image;
    if (!c.runtime_binary.empty()) out << YAML::Key << "runtime_binary" << YAML::Value << c.runtime_binary;
    out << YAML::Key << "worker_binary" << YAML::Value << c.worker_binary;
    for (const auto& [key, list] : {std::pair<const char*, const std::vector<std::string>*>{"command", &c.command},
                                    {"options", &c.options},
                                    {"binds", &c.binds},
                                    {"cleanup", &c.cleanup}}) {
      if (!list->empty()) out << YAML::Key << key << YAML::Value << YAML::Flow << *list;
    }
    out << YAML::EndMap;
  }
  if (s.enabled()) {
    out << YAML::Key << "sandbox" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "type" << YAML::Value << s.type;
    out << YAML::Key << "bwrap" << YAML::Value << s.bwrap;
    if (!s.writable.empty()) out << YAML::Key << "writable" << YAML::Value << YAML::Flow << s.writable;
    out << YAML::Key << "network" << YAML::Value << s.network;
    if (!s.options.empty()) out << YAML::Key << "options" << YAML::Value << YAML::Flow << s.options;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Status LoadLaunchSettingsFile(const std::string& path, ContainerConfig* c, SandboxConfig* s) {
  try {
    YAML::Node n = YAML::LoadFile(path);
    if (!n.IsMap()) return InvalidArgument("launch file '" + path + "' is not a YAML map");
    for (const auto& kv : n) {
      const std::string key = kv.first.as<std::string>();
      Status st = key == "container" ? ReadContainerSection(kv.second, c)
                  : key == "sandbox" ? ReadSandboxSection(kv.second, s)
                                     : InvalidArgument("unknown section '" + key + "'; known: container, sandbox");
      if (!st.ok()) return InvalidArgument("launch file '" + path + "': " + st.message());
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument("launch file '" + path + "': " + e.what());
  }
  return ValidateLaunchConfig(*c, *s);
}

}  // namespace loom
