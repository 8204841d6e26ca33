#include "endpoint/config.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>

namespace loom::endpoint {

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
      else if (key == "devices")
        c->devices = v.as<std::vector<std::string>>();
      else
        return InvalidArgument("config file '" + path + "': unknown key '" + key + "'");
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file '" + path + "': " + e.what());
  }
  return Status::Ok();
}

Result<std::vector<v1::Device>> ParseDevices(const std::vector<std::string>& specs) {
  std::vector<v1::Device> out;
  for (const std::string& spec : specs) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t colon; (colon = spec.find(':', start)) != std::string::npos; start = colon + 1) {
      parts.push_back(spec.substr(start, colon - start));
    }
    parts.push_back(spec.substr(start));
    const std::string form = "expected KIND:NAME[:COUNT][:emulated], e.g. fpga:emulated-braggnn-fpga:1:emulated";
    if (parts.size() < 2 || parts.size() > 4 || parts[0].empty() || parts[1].empty()) {
      return InvalidArgument("device '" + spec + "': " + form);
    }
    v1::Device d;
    d.set_kind(parts[0]);
    d.set_name(parts[1]);
    d.set_count(1);
    size_t next = 2;
    if (parts.size() > next && parts[next] != "emulated") {
      char* end = nullptr;
      const long n = std::strtol(parts[next].c_str(), &end, 10);
      if (parts[next].empty() || *end != '\0' || n < 1 || n > 1 << 20) {
        return InvalidArgument("device '" + spec + "': COUNT must be a positive integer; " + form);
      }
      d.set_count(static_cast<int32_t>(n));
      ++next;
    }
    if (parts.size() > next) {
      if (parts[next] != "emulated" || parts.size() > next + 1) {
        return InvalidArgument("device '" + spec + "': " + form);
      }
      d.set_emulated(true);
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace loom::endpoint
