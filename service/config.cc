#include "service/config.h"

#include <yaml-cpp/yaml.h>

namespace loom::service {

Status LoadServiceConfigFile(const std::string& path, ServiceConfig* c) {
  try {
    YAML::Node n = YAML::LoadFile(path);
    if (!n.IsMap()) return InvalidArgument("config file '" + path + "' is not a YAML map");
    for (const auto& kv : n) {
      const std::string key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      if (key == "grpc_address")
        c->grpc_address = v.as<std::string>();
      else if (key == "endpoint_address")
        c->endpoint_address = v.as<std::string>();
      else if (key == "redis") {
        if (v["host"]) c->redis_host = v["host"].as<std::string>();
        if (v["port"]) c->redis_port = v["port"].as<int>();
        if (v["socket"]) c->redis_socket = v["socket"].as<std::string>();
        if (v["timeout_ms"]) c->redis_timeout_ms = v["timeout_ms"].as<int>();
      } else if (key == "max_message_bytes")
        c->max_message_bytes = v.as<int64_t>();
      else if (key == "max_batch")
        c->max_batch = v.as<int>();
      else if (key == "max_queue_depth")
        c->max_queue_depth = v.as<int64_t>();
      else if (key == "heartbeat_period_ms")
        c->heartbeat_period_ms = v.as<int>();
      else if (key == "heartbeat_misses")
        c->heartbeat_misses = v.as<int>();
      else if (key == "default_max_attempts")
        c->default_max_attempts = v.as<int>();
      else if (key == "max_worker_deaths")
        c->max_worker_deaths = v.as<int>();
      else if (key == "result_ttl_seconds")
        c->result_ttl_seconds = v.as<int64_t>();
      else if (key == "zmq_high_water_mark") c->zmq_high_water_mark = v.as<int>();
      else if (key == "log_level")
        c->log_level = v.as<std::string>();
      else if (key == "ready_file")
        c->ready_file = v.as<std::string>();
      else if (key == "metrics_address")
        c->metrics_address = v.as<std::string>();
      else if (key == "endpoint_auth")
        c->endpoint_auth = v.as<std::string>();
      else if (key == "curve_secret_key_file")
        c->curve_secret_key_file = v.as<std::string>();
      else if (key == "metrics_sample_ms")
        c->metrics_sample_ms = v.as<int>();
      else if (key == "metrics_max_endpoints")
        c->metrics_max_endpoints = v.as<int>();
      else
        return InvalidArgument("config file '" + path + "': unknown key '" + key + "'");
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file '" + path + "': " + e.what());
  }
  return Status::Ok();
}

}  // namespace loom::service
