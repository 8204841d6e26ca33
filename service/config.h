// ServiceConfig: every setting of loom-service, read from an optional YAML file and then from
// command-line flags (a flag wins over the file).
#pragma once

#include <string>

#include "common/status.h"
#include "service/quota.h"

namespace loom::service {

struct ServiceConfig {
  std::string grpc_address = "127.0.0.1:50051";            // host:port; port 0 picks a free one
  std::string endpoint_address = "tcp://127.0.0.1:50052";  // ZeroMQ bind address; port * picks one
  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  std::string redis_socket;  // a Unix socket path; when set, used instead of host and port
  int redis_timeout_ms = 2000;
  int64_t max_message_bytes = 10 * 1024 * 1024;
  int max_batch = 10000;
  int64_t max_queue_depth = 1000000;  // tasks waiting for one endpoint; 0: no limit
  int heartbeat_period_ms = 1000;
  int heartbeat_misses = 3;
  int zmq_high_water_mark = 100000;  // messages queued per endpoint before sends to it fail
  // Acknowledgements of an endpoint's results wait this long for tasks going to it, to ride in
  // their message; 0: sent in the round that committed the results. Below the liveness
  // threshold (an endpoint resends results unacknowledged that long).
  int result_ack_hold_ms = 100;
  int default_max_attempts = 3;                // attempts on system failure when neither task nor function sets it
  int max_worker_deaths = 3;                   // a task that killed this many workers fails as poison
  int64_t result_ttl_seconds = 7 * 24 * 3600;  // finished tasks are kept this long; 0: forever
  // Records of tasks that finished while no stream waited for them, kept in memory for up to 10 s
  // for a stream that asks late (it then needs no Redis read); 0: none.
  int64_t unclaimed_results_bytes = 64 << 20;
  // Unfinished tasks submitted here whose owner the service remembers, so that waiting for them
  // needs no Redis read; beyond it new tasks are not remembered (read from Redis). 0: none.
  int64_t remembered_tasks = 200000;
  std::string log_level = "info";
  std::string ready_file;  // written with the bound addresses once serving
  // Prometheus /metrics listen address, HOST:PORT (port 0 picks one, reported in the ready
  // file as metrics=HOST:PORT); empty: no metrics.
  std::string metrics_address;
  // How endpoints authenticate: "curve" (ZeroMQ CURVE keys checked by a ZAP handler against the
  // endpoint records; see docs/ARCHITECTURE.md) or "none" (plaintext, endpoints register
  // themselves: only for a single-user host).
  std::string endpoint_auth = "curve";
  // The service's CURVE key pair (created, mode 0600, if missing); its public key goes to the
  // ready file as curve_public_key=. Default: $XDG_STATE_HOME/loom/service/curve.key.
  std::string curve_secret_key_file;
  int metrics_sample_ms = 1000;     // how often per-endpoint queue depths are read from Redis
  int metrics_max_endpoints = 100;  // endpoints labelled in per-endpoint gauges; the rest sum into _other
  // Authentication: the admin bootstrap (see docs/SECURITY.md). When set and the file does not
  // hold a valid admin token, one is created for bootstrap_user and written there (mode 0600).
  std::string bootstrap_token_file;
  std::string bootstrap_user = "admin";
  int token_cache_ms = 2000;  // a checked token is trusted this long before Redis is asked again
  // TLS for gRPC: PEM certificate chain and private key; both empty: plaintext.
  std::string tls_cert;
  std::string tls_key;
  QuotaOptions quotas;  // per user; YAML: quotas: {default: {...}, users: {NAME: {...}}}
  // The REST/JSON gateway (docs/REST.md): HOST:PORT (port 0 picks one, reported in the ready
  // file as rest=HOST:PORT); empty: no REST.
  std::string rest_address;
  std::string rest_tls_cert;  // PEM files; both set: HTTPS
  std::string rest_tls_key;
  int64_t rest_max_body_bytes = 0;  // 0: max_message_bytes * 4/3 + 1 MiB (JSON of a message at the limit)
  int rest_max_json_depth = 64;
  int rest_threads = 32;
  int64_t rest_max_wait_ms = 60000;  // longest long poll
};

// Reads YAML keys of the same names as the fields above (redis as a map: host, port, timeout_ms).
Status LoadServiceConfigFile(const std::string& path, ServiceConfig* config);

}  // namespace loom::service
