#include "service/config.h"

#include <yaml-cpp/yaml.h>

namespace loom::service {

namespace {
Quota ParseQuota(const YAML::Node& n, Quota q) {
  if (!n.IsMap()) throw YAML::Exception(n.Mark(), "a quota is a map of requests_per_second, burst, max_in_flight");
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    if (key == "requests_per_second")
      q.requests_per_second = kv.second.as<double>();
    else if (key == "burst")
      q.burst = kv.second.as<double>();
    else if (key == "max_in_flight")
      q.max_in_flight = kv.second.as<int64_t>();
    else
      throw YAML::Exception(kv.first.Mark(), "unknown quota key '" + key + "'");
  }
  if (q.requests_per_second < 0 || q.burst < 0 || q.max_in_flight < 0) {
    throw YAML::Exception(n.Mark(), "quota values must not be negative");
  }
  return q;
}
}  // namespace

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
      else if (key == "unclaimed_results_bytes")
        c->unclaimed_results_bytes = v.as<int64_t>();
      else if (key == "remembered_tasks")
        c->remembered_tasks = v.as<int64_t>();
      else if (key == "zmq_high_water_mark")
        c->zmq_high_water_mark = v.as<int>();
      else if (key == "result_ack_hold_ms")
        c->result_ack_hold_ms = v.as<int>();
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
      else if (key == "bootstrap_token_file")
        c->bootstrap_token_file = v.as<std::string>();
      else if (key == "bootstrap_user")
        c->bootstrap_user = v.as<std::string>();
      else if (key == "token_cache_ms")
        c->token_cache_ms = v.as<int>();
      else if (key == "tls_cert")
        c->tls_cert = v.as<std::string>();
      else if (key == "tls_key")
        c->tls_key = v.as<std::string>();
      else if (key == "quotas") {
        if (!v.IsMap()) return InvalidArgument("config file '" + path + "': quotas must be a map (default, users)");
        for (const auto& q : v) {
          const std::string which = q.first.as<std::string>();
          if (which != "default" && which != "users") {
            return InvalidArgument("config file '" + path + "': quotas: unknown key '" + which +
                                   "' (use default and users)");
          }
        }
        // Users' quotas start from the default one: read it first.
        if (v["default"]) c->quotas.defaults = ParseQuota(v["default"], c->quotas.defaults);
        if (v["users"]) {
          for (const auto& u : v["users"]) {
            c->quotas.users[u.first.as<std::string>()] = ParseQuota(u.second, c->quotas.defaults);
          }
        }
      } else if (key == "rest_address")
        c->rest_address = v.as<std::string>();
      else if (key == "rest_tls_cert")
        c->rest_tls_cert = v.as<std::string>();
      else if (key == "rest_tls_key")
        c->rest_tls_key = v.as<std::string>();
      else if (key == "rest_max_body_bytes")
        c->rest_max_body_bytes = v.as<int64_t>();
      else if (key == "rest_max_json_depth")
        c->rest_max_json_depth = v.as<int>();
      else if (key == "rest_threads")
        c->rest_threads = v.as<int>();
      else if (key == "rest_max_wait_ms")
        c->rest_max_wait_ms = v.as<int64_t>();
      else
        return InvalidArgument("config file '" + path + "': unknown key '" + key + "'");
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file '" + path + "': " + e.what());
  }
  return Status::Ok();
}

}  // namespace loom::service
