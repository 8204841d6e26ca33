#include "endpoint/config.h"

#include <yaml-cpp/yaml.h>

namespace loom::endpoint {
namespace {

// A list of strings, also given as one string (a YAML block scalar: one item per line).
std::vector<std::string> StringList(const YAML::Node& v) {
  if (v.IsSequence()) return v.as<std::vector<std::string>>();
  std::vector<std::string> out;
  std::string text = v.as<std::string>();
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Status LoadEngine(const YAML::Node& n, const std::string& where, EngineConfig* e) {
  if (!n.IsMap()) return InvalidArgument(where + ": 'engine' must be a map");
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "workers_per_node")
      e->workers_per_node = v.as<int>();
    else if (key == "workers_per_accelerator")
      e->workers_per_accelerator = v.as<int>();
    else if (key == "listen")
      e->listen = v.as<std::string>();
    else if (key == "address")
      e->address = v.as<std::string>();
    else if (key == "max_idletime_s")
      e->max_idletime_s = v.as<double>();
    else if (key == "poll_period_ms")
      e->poll_period_ms = v.as<int>();
    else
      return InvalidArgument(where + ": unknown key 'engine." + key +
                             "' (known: workers_per_node, workers_per_accelerator, listen, address, "
                             "max_idletime_s, poll_period_ms)");
  }
  return Status::Ok();
}

Status LoadProvider(const YAML::Node& n, const std::string& where, ProviderConfig* p) {
  if (!n.IsMap()) return InvalidArgument(where + ": 'provider' must be a map");
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "type")
      p->type = v.as<std::string>();
    else if (key == "nodes_per_block")
      p->nodes_per_block = v.as<int>();
    else if (key == "init_blocks")
      p->init_blocks = v.as<int>();
    else if (key == "min_blocks")
      p->min_blocks = v.as<int>();
    else if (key == "max_blocks")
      p->max_blocks = v.as<int>();
    else if (key == "walltime")
      p->walltime = v.as<std::string>();
    else if (key == "partition")
      p->partition = v.as<std::string>();
    else if (key == "account")
      p->account = v.as<std::string>();
    else if (key == "scheduler_options")
      p->scheduler_options = StringList(v);
    else if (key == "worker_init")
      p->worker_init = StringList(v);
    else if (key == "launcher")
      p->launcher = v.as<std::string>();
    else if (key == "script_dir")
      p->script_dir = v.as<std::string>();
    else if (key == "cmd_timeout_s")
      p->cmd_timeout_s = v.as<int>();
    else
      return InvalidArgument(
          where + ": unknown key 'provider." + key +
          "' (known: type, nodes_per_block, init_blocks, min_blocks, max_blocks, walltime, "
          "partition, account, scheduler_options, worker_init, launcher, script_dir, cmd_timeout_s)");
  }
  return Status::Ok();
}

// `devices:` is a list of maps: {class, model, count, memory_bytes, emulated}.
Status ReadDevices(const YAML::Node& v, const std::string& path, std::vector<DeclaredDevice>* out) {
  if (!v.IsSequence()) return InvalidArgument("config file '" + path + "': devices must be a list");
  for (const auto& item : v) {
    if (!item.IsMap()) return InvalidArgument("config file '" + path + "': each device must be a map");
    DeclaredDevice d;
    for (const auto& f : item) {
      const std::string k = f.first.as<std::string>();
      if (k == "class")
        d.kind = f.second.as<std::string>();
      else if (k == "model")
        d.model = f.second.as<std::string>();
      else if (k == "count")
        d.count = f.second.as<int>();
      else if (k == "memory_bytes")
        d.memory_bytes = f.second.as<int64_t>();
      else if (k == "emulated")
        d.emulated = f.second.as<bool>();
      else
        return InvalidArgument("config file '" + path + "': device key '" + k +
                               "' is unknown (use class, model, count, memory_bytes, emulated)");
    }
    if (Status s = CheckDeclaredDevice(d); !s.ok())
      return InvalidArgument("config file '" + path + "': " + s.message());
    out->push_back(std::move(d));
  }
  return Status::Ok();
}
}  // namespace

Result<int64_t> ParseWalltime(const std::string& walltime) {
  auto bad = [&] {
    return InvalidArgument("walltime '" + walltime + "' is not of the form HH:MM:SS or D-HH:MM:SS (e.g. 01:30:00)");
  };
  std::string rest = walltime;
  int64_t days = 0;
  if (auto dash = rest.find('-'); dash != std::string::npos) {
    const std::string d = rest.substr(0, dash);
    if (d.empty() || d.size() > 3 || d.find_first_not_of("0123456789") != std::string::npos) return bad();
    days = std::stoll(d);
    rest = rest.substr(dash + 1);
  }
  int64_t parts[3];
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    size_t end = i < 2 ? rest.find(':', pos) : rest.size();
    if (end == std::string::npos) return bad();
    const std::string f = rest.substr(pos, end - pos);
    if (f.empty() || f.size() > 4 || f.find_first_not_of("0123456789") != std::string::npos) return bad();
    parts[i] = std::stoll(f);
    pos = end + 1;
  }
  if (parts[1] > 59 || parts[2] > 59) return bad();
  const int64_t seconds = ((days * 24 + parts[0]) * 60 + parts[1]) * 60 + parts[2];
  if (seconds <= 0) return InvalidArgument("walltime '" + walltime + "' must be longer than zero");
  return seconds;
}

Status ValidateBlocksConfig(const EndpointConfig& c) {
  const auto& p = c.provider;
  const auto& e = c.engine;
  if (p.type.empty()) return Status::Ok();
  if (p.type != "local" && p.type != "slurm" && p.type != "pbs") {
    return InvalidArgument("provider.type '" + p.type + "' is not known: use local, slurm or pbs");
  }
  auto range = [](const std::string& name, int64_t v, int64_t lo, int64_t hi) -> Status {
    if (v < lo || v > hi) {
      return InvalidArgument(name + " is " + std::to_string(v) + ": use " + std::to_string(lo) + " to " +
                             std::to_string(hi));
    }
    return Status::Ok();
  };
  LOOM_RETURN_IF_ERROR(range("provider.nodes_per_block", p.nodes_per_block, 1, 100000));
  LOOM_RETURN_IF_ERROR(range("provider.max_blocks", p.max_blocks, 1, 10000));
  LOOM_RETURN_IF_ERROR(range("provider.min_blocks", p.min_blocks, 0, p.max_blocks));
  LOOM_RETURN_IF_ERROR(range("provider.init_blocks", p.init_blocks, 0, p.max_blocks));
  LOOM_RETURN_IF_ERROR(range("provider.cmd_timeout_s", p.cmd_timeout_s, 1, 3600));
  if (p.init_blocks == 0 && p.min_blocks == 0) {
    // The endpoint learns its kernels from its first worker and registers only then.
    return InvalidArgument(
        "provider.init_blocks and provider.min_blocks are both 0: the endpoint needs one block at start to learn "
        "its kernels; set init_blocks to at least 1");
  }
  if (p.type == "local" && p.nodes_per_block != 1) {
    return InvalidArgument("provider.nodes_per_block is " + std::to_string(p.nodes_per_block) +
                           ": a local block is one process group on this host, so it must be 1");
  }
  if (auto w = ParseWalltime(p.walltime); !w.ok()) return Status(w.status().code(), "provider." + w.status().message());
  for (const auto& line : p.scheduler_options) {
    if (line.find('\n') != std::string::npos) return InvalidArgument("provider.scheduler_options: one line per item");
  }
  LOOM_RETURN_IF_ERROR(range("engine.workers_per_node", e.workers_per_node, 0, 4096));
  if (e.workers_per_node == 0)
    LOOM_RETURN_IF_ERROR(range("workers (engine.workers_per_node unset)", c.workers, 1, 4096));
  LOOM_RETURN_IF_ERROR(range("engine.workers_per_accelerator", e.workers_per_accelerator, 0, 64));
  LOOM_RETURN_IF_ERROR(range("engine.poll_period_ms", e.poll_period_ms, 10, 3600000));
  if (!(e.max_idletime_s >= 0 && e.max_idletime_s <= 30 * 86400)) {
    return InvalidArgument("engine.max_idletime_s is " + std::to_string(e.max_idletime_s) +
                           ": use 0 to 2592000 seconds");
  }
  if (e.listen.rfind("tcp://", 0) != 0 || e.listen.rfind(':') <= 6) {
    return InvalidArgument("engine.listen '" + e.listen +
                           "' is not tcp://IP:PORT (workers on other nodes connect over TCP; port 0 picks one)");
  }
  return Status::Ok();
}

Status LoadEndpointConfigFile(const std::string& path, EndpointConfig* c) {
  try {
    YAML::Node n = YAML::LoadFile(path);
    if (!n.IsMap()) return InvalidArgument("config file '" + path + "' is not a YAML map");
    for (const auto& kv : n) {
      const std::string key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      if (key == "id")
        c->id = v.as<std::string>();
      else if (key == "name")
        c->name = v.as<std::string>();
      else if (key == "service")
        c->service = v.as<std::string>();
      else if (key == "workers")
        c->workers = v.as<int>();
      else if (key == "prefetch")
        c->prefetch = v.as<int>();
      else if (key == "queue_capacity")
        c->queue_capacity = v.as<int>();
      else if (key == "queue_bytes")
        c->queue_bytes = v.as<int64_t>();
      else if (key == "pack_tasks_under_us")
        c->pack_tasks_under_us = v.as<int>();
      else if (key == "pack_prefetch")
        c->pack_prefetch = v.as<int>();
      else if (key == "worker_link")
        c->worker_link = v.as<std::string>();
      else if (key == "worker_binary")
        c->worker_binary = v.as<std::string>();
      else if (key == "plugins")
        c->plugins = v.as<std::vector<std::string>>();
      else if (key == "plugin_dirs")
        c->plugin_dirs = v.as<std::vector<std::string>>();
      else if (key == "heartbeat_period_ms")
        c->heartbeat_period_ms = v.as<int>();
      else if (key == "heartbeat_misses")
        c->heartbeat_misses = v.as<int>();
      else if (key == "max_message_bytes")
        c->max_message_bytes = v.as<int64_t>();
      else if (key == "group")
        c->group = v.as<std::string>();
      else if (key == "run_dir")
        c->run_dir = v.as<std::string>();
      else if (key == "spool_dir")
        c->spool_dir = v.as<std::string>();
      else if (key == "spool_fsync")
        c->spool_fsync = v.as<bool>();
      else if (key == "ready_file")
        c->ready_file = v.as<std::string>();
      else if (key == "log_level")
        c->log_level = v.as<std::string>();
      else if (key == "metrics_address")
        c->metrics_address = v.as<std::string>();
      else if (key == "curve_secret_key_file")
        c->curve_secret_key_file = v.as<std::string>();
      else if (key == "service_public_key")
        c->service_public_key = v.as<std::string>();
      else if (key == "service_public_key_file")
        c->service_public_key_file = v.as<std::string>();
      else if (key == "owner")
        c->owner = v.as<std::string>();
      else if (key == "allowed_users")
        c->allowed_users = v.as<std::vector<std::string>>();
      else if (key == "allowed_functions")
        c->allowed_functions = v.as<std::vector<std::string>>();
      else if (key == "devices") {
        LOOM_RETURN_IF_ERROR(ReadDevices(v, path, &c->devices));
      } else if (key == "workers_per_gpu")
        c->workers_per_gpu = v.as<int>();
      else if (key == "nvidia_smi")
        c->nvidia_smi = v.as<std::string>();
      else if (key == "container" || key == "sandbox") {
        Status st = key == "container" ? ReadContainerSection(v, &c->container) : ReadSandboxSection(v, &c->sandbox);
        if (!st.ok()) return InvalidArgument("config file '" + path + "': " + st.message());
      } else if (key == "engine")
        LOOM_RETURN_IF_ERROR(LoadEngine(v, "config file '" + path + "'", &c->engine));
      else if (key == "provider")
        LOOM_RETURN_IF_ERROR(LoadProvider(v, "config file '" + path + "'", &c->provider));
      else
        return InvalidArgument("config file '" + path + "': unknown key '" + key + "'");
    }
    if (Status st = ValidateLaunchConfig(c->container, c->sandbox); !st.ok()) {
      return InvalidArgument("config file '" + path + "': " + st.message());
    }
    if (c->queue_capacity < 0 || c->queue_bytes < 0) {
      return InvalidArgument("config file '" + path + "': queue_capacity (" + std::to_string(c->queue_capacity) +
                             ") and queue_bytes (" + std::to_string(c->queue_bytes) + ") must be 0 or more");
    }
    if (c->pack_tasks_under_us < 0) {
      return InvalidArgument("config file '" + path + "': pack_tasks_under_us is " +
                             std::to_string(c->pack_tasks_under_us) + "; use 0 (always spread) or more");
    }
    if (c->worker_link != "socket" && c->worker_link != "zmq") {
      return InvalidArgument("config file '" + path + "': worker_link is '" + c->worker_link +
                             "'; it is 'socket' or 'zmq'");
    }
    if (c->pack_prefetch < 0) {
      return InvalidArgument("config file '" + path + "': pack_prefetch is " + std::to_string(c->pack_prefetch) +
                             "; use 0 (the same as prefetch) or more");
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file '" + path + "': " + e.what());
  }
  return Status::Ok();
}

}  // namespace loom::endpoint
