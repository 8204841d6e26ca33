#include "endpoint/config.h"

#include <yaml-cpp/yaml.h>

namespace loom::endpoint {
namespace {

// The `container:` section (endpoint/launch.h names the keys after the fields).
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

// The `sandbox:` section.
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

}  // namespace

namespace {
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
      } else
        return InvalidArgument("config file '" + path + "': unknown key '" + key + "'");
    }
    if (Status st = ValidateLaunchConfig(c->container, c->sandbox); !st.ok()) {
      return InvalidArgument("config file '" + path + "': " + st.message());
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file '" + path + "': " + e.what());
  }
  return Status::Ok();
}

}  // namespace loom::endpoint
