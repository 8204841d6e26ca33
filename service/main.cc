// loom-service: the central broker. Serves the SDK over gRPC, keeps every durable record in
// Redis, and routes tasks over ZeroMQ to the endpoints that connect to it.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <thread>

#include "common/allocator.h"
#include "common/cli.h"
#include "common/curve.h"
#include "common/log_limiter.h"
#include "common/metrics.h"
#include "common/secret_file.h"
#include "common/util.h"
#include "service/api.h"
#include "service/broker.h"
#include "service/config.h"
#include "service/grpc_server.h"
#include "service/metrics.h"
#include "service/quota.h"
#include "service/redis_task_store.h"
#include "service/redis_token_store.h"
#include "service/rest_gateway.h"

using namespace loom;           // NOLINT
using namespace loom::service;  // NOLINT

int main(int argc, char** argv) {
  ServiceConfig c;
  CLI::App app{"loom-service: the Loom broker (gRPC API, Redis state, ZeroMQ link to endpoints)"};
  std::string config_file;
  app.add_option("--config", config_file, "YAML config file; flags override it");
  app.add_option("--grpc-address", c.grpc_address, "gRPC listen address host:port (port 0: pick a free one)");
  app.add_option("--endpoint-address", c.endpoint_address, "ZeroMQ address endpoints connect to (tcp://host:port)");
  app.add_option("--redis-host", c.redis_host, "Redis host");
  app.add_option("--redis-port", c.redis_port, "Redis port");
  app.add_option("--redis-socket", c.redis_socket, "Redis Unix socket (instead of host and port)");
  app.add_option("--redis-timeout-ms", c.redis_timeout_ms, "Redis connect and command timeout");
  app.add_option("--max-message-bytes", c.max_message_bytes, "largest request, task or result, in bytes");
  app.add_option("--max-batch", c.max_batch, "most tasks in one batch submit");
  app.add_option("--max-queue-depth", c.max_queue_depth, "most tasks waiting for one endpoint (0: no limit)");
  app.add_option("--heartbeat-period-ms", c.heartbeat_period_ms, "endpoint heartbeat period");
  app.add_option("--heartbeat-misses", c.heartbeat_misses, "missed periods before an endpoint is offline");
  app.add_option("--default-max-attempts", c.default_max_attempts,
                 "attempts on system failure (worker or endpoint lost) when neither the task nor its function "
                 "sets max_attempts")
      ->check(CLI::Range(1, 100));
  app.add_option("--max-worker-deaths", c.max_worker_deaths, "a task that killed this many workers fails as poison")
      ->check(CLI::Range(1, 1000));
  app.add_option("--result-ttl-seconds", c.result_ttl_seconds,
                 "finished tasks and their results are kept this long, then deleted within 1 % of it (at least 1 s, at "
                 "most 60 s) (0: forever)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--unclaimed-results-bytes", c.unclaimed_results_bytes,
                 "memory for the records of tasks that finished while no stream waited for them, kept up to "
                 "10 s (less under a short --result-ttl-seconds) for a late waiter, which then needs no Redis "
                 "read (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--remembered-tasks", c.remembered_tasks,
                 "unfinished tasks submitted here whose owner the service keeps in memory, so that waiting for "
                 "them needs no Redis read; beyond it new tasks are not remembered until others finish (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--zmq-high-water-mark", c.zmq_high_water_mark,
                 "messages queued for one endpoint before sends to it fail and its session is dropped "
                 "(its tasks are requeued)")
      ->check(CLI::Range(1, 10000000));
  app.add_option("--result-ack-hold-ms", c.result_ack_hold_ms,
                 "an endpoint's results are acknowledged with the next tasks sent to it within this long, or "
                 "alone after it (0: at once); below the heartbeat period times --heartbeat-misses")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--log-level", c.log_level, "trace, debug, info, warn, error");
  app.add_option("--ready-file", c.ready_file, "file to write the bound addresses to once serving");
  app.add_option("--metrics-address", c.metrics_address,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (port 0: pick a free one, written to the "
                 "ready file as metrics=HOST:PORT); default: no metrics");
  app.add_option("--endpoint-auth", c.endpoint_auth,
                 "how endpoints authenticate: curve (CURVE keys registered with `loom endpoint configure`) or none "
                 "(plaintext; endpoints register themselves: for a single-user host only)")
      ->capture_default_str();
  app.add_option("--curve-secret-key-file", c.curve_secret_key_file,
                 "the service's CURVE key pair, created (mode 0600) if missing; its public key is logged and written "
                 "to the ready file as curve_public_key= (default: $XDG_STATE_HOME/loom/service/curve.key)");
  app.add_option("--metrics-sample-ms", c.metrics_sample_ms,
                 "how often the per-endpoint queue depths are read from Redis for the metrics")
      ->check(CLI::Range(100, 3600000));
  app.add_option("--metrics-max-endpoints", c.metrics_max_endpoints,
                 "endpoints with series of their own in per-endpoint metrics; the rest are summed as _other")
      ->check(CLI::Range(1, 100000));
  app.add_option("--bootstrap-token-file", c.bootstrap_token_file,
                 "admin bootstrap: unless FILE holds a valid admin token, create one for --bootstrap-user and "
                 "write it there (mode 0600)");
  app.add_option("--bootstrap-user", c.bootstrap_user, "the user of the bootstrap admin token");
  app.add_option("--token-cache-ms", c.token_cache_ms,
                 "a checked token is trusted this long before Redis is asked again (a token revoked through "
                 "another service process stops working within it)")
      ->check(CLI::Range(0, 3600000));
  app.add_option("--tls-cert", c.tls_cert, "serve gRPC over TLS with this PEM certificate chain (with --tls-key)");
  app.add_option("--tls-key", c.tls_key, "the PEM private key of --tls-cert");
  app.add_option("--quota-requests-per-second", c.quotas.defaults.requests_per_second,
                 "requests per second each user may make (0: no limit; per-user values in the config file)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--quota-burst", c.quotas.defaults.burst,
                 "requests a user may make at once above the rate (0: one second's worth)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--quota-max-in-flight", c.quotas.defaults.max_in_flight,
                 "tasks each user may have submitted and not finished (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--rest-address", c.rest_address,
                 "serve the REST/JSON API (docs/REST.md) at HOST:PORT (port 0: pick a free one, written to the "
                 "ready file as rest=HOST:PORT); default: no REST");
  app.add_option("--rest-tls-cert", c.rest_tls_cert,
                 "PEM certificate (chain) for the REST API; with --rest-tls-key it is served over HTTPS only");
  app.add_option("--rest-tls-key", c.rest_tls_key, "PEM private key of --rest-tls-cert");
  app.add_option("--rest-max-body-bytes", c.rest_max_body_bytes,
                 "largest REST request body; larger ones get 413 before parsing (0: max-message-bytes * 4/3 + "
                 "1 MiB, room for base64 in JSON)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--rest-max-json-depth", c.rest_max_json_depth,
                 "deepest nesting of objects and arrays in a REST request body; deeper ones get 400")
      ->check(CLI::Range(1, 10000));
  app.add_option("--rest-threads", c.rest_threads,
                 "REST requests served at once (each long poll or result stream holds one thread)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--rest-max-wait-ms", c.rest_max_wait_ms,
                 "longest REST long poll (wait_ms of GET /v1/tasks/{id} and POST /v1/tasks:get); longer waits "
                 "are cut to it")
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}));
  if (auto rc = ParseFlagsAndConfig(app, argc, argv, config_file,
                                    [&](const std::string& path) { return LoadServiceConfigFile(path, &c); })) {
    return *rc;
  }
  // Checked here rather than by CLI11 so that a value from the config file is checked too.
  if (!c.metrics_address.empty()) {
    if (auto a = metrics::CheckListenAddress(c.metrics_address); !a.ok()) {
      std::fprintf(stderr, "error: %s\n", a.status().message().c_str());
      return 2;
    }
  }
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    std::fprintf(stderr, "error: --tls-cert and --tls-key go together: give both or neither\n");
    return 2;
  }
  if (!c.rest_address.empty()) {
    if (auto a = metrics::CheckListenAddress(c.rest_address, "--rest-address"); !a.ok()) {
      std::fprintf(stderr, "error: %s\n", a.status().message().c_str());
      return 2;
    }
  }
  if (c.rest_tls_cert.empty() != c.rest_tls_key.empty()) {
    std::fprintf(stderr, "error: HTTPS needs both --rest-tls-cert and --rest-tls-key\n");
    return 2;
  }
  if (c.result_ack_hold_ms < 0 || static_cast<int64_t>(c.result_ack_hold_ms) >=
                                      static_cast<int64_t>(c.heartbeat_period_ms) * std::max(1, c.heartbeat_misses)) {
    std::fprintf(stderr,
                 "error: --result-ack-hold-ms is %d; it must be at least 0 and below the liveness threshold "
                 "(--heartbeat-period-ms x --heartbeat-misses = %lld ms), after which endpoints send "
                 "unacknowledged results again\n",
                 c.result_ack_hold_ms, static_cast<long long>(c.heartbeat_period_ms) * std::max(1, c.heartbeat_misses));
    return 2;
  }
  if (c.endpoint_auth != "curve" && c.endpoint_auth != "none") {
    std::fprintf(stderr, "error: --endpoint-auth is '%s'; use curve or none\n", c.endpoint_auth.c_str());
    return 2;
  }
  InitLogging(c.log_level, "service");
  TuneAllocatorForLargeMessages();
  // A write to a Redis connection that the server closed must be an error, not the death of
  // the process.
  std::signal(SIGPIPE, SIG_IGN);

  // Block the stop signals in every thread; main waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  RedisOptions ro;
  ro.host = c.redis_host;
  ro.port = c.redis_port;
  ro.unix_socket = c.redis_socket;
  ro.connect_timeout = std::chrono::milliseconds(c.redis_timeout_ms);
  ro.command_timeout = std::chrono::milliseconds(c.redis_timeout_ms);
  StoreOptions so;
  so.result_ttl_seconds = c.result_ttl_seconds;
  so.max_worker_deaths = c.max_worker_deaths;
  RedisTaskStore store(ro, so);
  // Wait for Redis with backoff: it may be starting next to us.
  for (int attempt = 0;; ++attempt) {
    Status s = store.Ping();
    if (s.ok()) break;
    if (attempt == 50) {
      spdlog::critical("giving up: {}", s.message());
      return 1;
    }
    spdlog::warn("waiting for Redis: {}", s.message());
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100 * (attempt + 1), 1000)));
  }
  if (auto lp = store.HashMaxListpackValue(); lp.ok() && *lp < kHashMaxListpackValue) {
    spdlog::warn(
        "Redis has hash-max-listpack-value {}: task records over it take about 2.5x the memory; set it to {} "
        "(redis.conf or CONFIG SET)",
        *lp, kHashMaxListpackValue);
  }

  // Who is calling: bearer tokens, kept hashed in Redis.
  RedisTokenStore token_store(ro);
  TokenAuthenticatorOptions tao;
  tao.cache_ttl = std::chrono::milliseconds(c.token_cache_ms);
  TokenAuthenticator tokens(&token_store, tao);
  if (!c.bootstrap_token_file.empty()) {
    auto boot = tokens.EnsureBootstrapToken(c.bootstrap_token_file, c.bootstrap_user);
    if (!boot.ok()) {
      spdlog::critical("admin bootstrap: {}", boot.status().message());
      return 1;
    }
  }
  Quotas quotas(c.quotas);

  // Metrics are counted only when served: without --metrics-address the hot path does not
  // touch them at all.
  std::unique_ptr<ServiceMetrics> metrics;
  if (!c.metrics_address.empty()) {
    ServiceMetricsOptions mo;
    mo.max_endpoint_labels = c.metrics_max_endpoints;
    metrics = std::make_unique<ServiceMetrics>(mo);
    metrics->AttachRedisPool(store.pool());
  }
  HubOptions ho;
  ho.max_bytes = c.unclaimed_results_bytes;
  ho.max_expected = c.remembered_tasks;
  if (c.result_ttl_seconds > 0) {
    // A record must leave the hub before its task expires in Redis.
    ho.max_age = std::min(ho.max_age, std::chrono::milliseconds(c.result_ttl_seconds * 1000 / 2));
  }
  CompletionHub hub(ho);
  hub.SetObserver([&](const std::vector<v1::TaskRecord>& finished) { quotas.TasksFinished(finished); });
  CreditBook credit;
  BrokerOptions bo;
  bo.bind = c.endpoint_address;
  bo.max_message_bytes = c.max_message_bytes;
  bo.heartbeat_period = std::chrono::milliseconds(c.heartbeat_period_ms);
  bo.heartbeat_misses = c.heartbeat_misses;
  bo.high_water_mark = c.zmq_high_water_mark;
  bo.ack_hold = std::chrono::milliseconds(c.result_ack_hold_ms);
  if (c.endpoint_auth == "curve") {
    if (c.curve_secret_key_file.empty()) c.curve_secret_key_file = DefaultStatePath("service/curve.key");
    bool created = false;
    auto keys = curve::LoadOrCreateSecretKeyFile(c.curve_secret_key_file, &created);
    if (!keys.ok()) {
      spdlog::critical("the service's CURVE key: {}", keys.status().message());
      return 1;
    }
    spdlog::info("endpoints authenticate with CURVE; the service's public key is {} ({} {})", keys->public_key,
                 created ? "created" : "read from", c.curve_secret_key_file);
    bo.curve = std::move(keys).value();
  } else {
    spdlog::warn(
        "--endpoint-auth none: endpoints connect in plaintext and register themselves; use it on a single-user "
        "host only");
  }
  LoomApi* api_ptr = nullptr;
  Broker broker(
      &store, &hub, &credit, bo,
      [&](const v1::EndpointRecord& e) {
        if (api_ptr) api_ptr->EndpointUpdated(e);
      },
      metrics.get());
  Status bound = broker.Bind();
  if (!bound.ok()) {
    spdlog::critical("{}", bound.message());
    return 1;
  }
  ServiceLimits limits;
  limits.max_message_bytes = c.max_message_bytes;
  limits.max_batch = c.max_batch;
  limits.max_queue_depth = c.max_queue_depth;
  limits.default_max_attempts = c.default_max_attempts;
  ApiSecurity security;
  security.tokens = &tokens;
  security.quotas = &quotas;
  LoomApi api(&store, &hub, &broker, limits, &credit, metrics.get(), security);
  api_ptr = &api;
  broker.Start();

  LoomGrpcService grpc_service(&api, &tokens, metrics.get());
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!c.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    pair.cert_chain = ReadFileOrEmpty(c.tls_cert);
    pair.private_key = ReadFileOrEmpty(c.tls_key);
    if (pair.cert_chain.empty() || pair.private_key.empty()) {
      spdlog::critical("cannot read the TLS certificate '{}' or key '{}'", c.tls_cert, c.tls_key);
      broker.Stop();
      return 1;
    }
    ssl.pem_key_cert_pairs.push_back(std::move(pair));
    creds = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(c.grpc_address, creds, &grpc_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(c.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(c.max_message_bytes + (1 << 20)));
  // See the SDK's channel: BDP pings only add packets and wake-ups for small messages.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.RegisterService(&grpc_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    spdlog::critical("cannot listen for gRPC on '{}'", c.grpc_address);
    broker.Stop();
    return 1;
  }
  std::string host = c.grpc_address.substr(0, c.grpc_address.rfind(':'));
  std::string grpc_bound = host + ":" + std::to_string(grpc_port);
  // The REST gateway maps onto the same LoomApi as gRPC.
  std::unique_ptr<RestGateway> rest;
  if (!c.rest_address.empty()) {
    RestOptions rest_options;
    rest_options.address = c.rest_address;
    rest_options.tls_cert_file = c.rest_tls_cert;
    rest_options.tls_key_file = c.rest_tls_key;
    rest_options.max_body_bytes = c.rest_max_body_bytes;
    rest_options.max_json_depth = c.rest_max_json_depth;
    rest_options.threads = c.rest_threads;
    rest_options.max_wait_ms = c.rest_max_wait_ms;
    auto started = RestGateway::Start(rest_options, &api, &tokens);
    if (!started.ok()) {
      spdlog::critical("{}", started.status().message());
      server->Shutdown();
      broker.Stop();
      return 1;
    }
    rest = std::move(started).value();
  }
  // Declared after everything its callbacks read, so it stops serving before they go away.
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  std::unique_ptr<metrics::Ticker> sampler;
  if (metrics) {
    metrics->AttachBroker(broker.stats());
    auto started = metrics::MetricsServer::Start(c.metrics_address, metrics->collectables());
    if (!started.ok()) {
      spdlog::critical("{}", started.status().message());
      server->Shutdown();
      broker.Stop();
      return 1;
    }
    metrics_server = std::move(started).value();
    // Queue depths come from Redis: read on a timer thread of their own, never by the broker
    // and never per scrape, so a slow Redis stalls neither.
    sampler = std::make_unique<metrics::Ticker>(std::chrono::milliseconds(c.metrics_sample_ms),
                                                [&] { (void)metrics->SampleEndpoints(store); });
  }
  // Finished tasks past their TTL are deleted here, in batches (RedisTaskStore's kRetain), not
  // by an EXPIRE per task. Every service sweeps, whatever its own TTL (buckets written under an
  // earlier one are still honoured); the script makes that safe.
  std::unique_ptr<metrics::Ticker> sweeper =
      std::make_unique<metrics::Ticker>(std::chrono::seconds(1), [&store, limiter = LogLimiter(1)]() mutable {
        // At most 100 calls a tick (200,000 tasks); each holds Redis for a few milliseconds at most.
        int64_t deleted = 0;
        for (int call = 0; call < 100; ++call) {
          auto swept = store.SweepExpired(NowNanos(), 2000);
          if (!swept.ok()) {
            uint64_t held = 0;
            if (limiter.Allow(std::chrono::steady_clock::now(), &held)) {
              spdlog::warn("deleting expired tasks: {} ({} more not logged)", swept.status().message(), held);
            }
            break;
          }
          deleted += swept->deleted;
          if (!swept->more) break;
        }
        if (deleted > 0) spdlog::debug("deleted {} expired task(s)", deleted);
      });
  spdlog::info("serving: grpc={}{} endpoints={} redis={}{}{} malloc={}", grpc_bound, c.tls_cert.empty() ? "" : " (TLS)",
               broker.bound_address(),
               c.redis_socket.empty() ? c.redis_host + ":" + std::to_string(c.redis_port) : c.redis_socket,
               rest ? std::string(" rest=") + (rest->tls() ? "https://" : "http://") + rest->address() + "/v1" : "",
               metrics_server ? " metrics=http://" + metrics_server->address() + "/metrics" : "", AllocatorName());
  if (!c.ready_file.empty()) {
    std::string tmp = c.ready_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << "grpc=" << grpc_bound << "\nendpoint=" << broker.bound_address() << "\npid=" << ::getpid() << "\n";
      if (metrics_server) out << "metrics=" << metrics_server->address() << "\n";
      if (rest) out << "rest=" << rest->address() << "\n";
      if (bo.curve) out << "curve_public_key=" << bo.curve->public_key << "\n";
    }
    std::rename(tmp.c_str(), c.ready_file.c_str());
  }

  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {}: shutting down", sig);
  sweeper.reset();
  sampler.reset();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  rest.reset();  // ends its long polls and streams; before the broker, whose API it calls
  broker.Stop();
  metrics_server.reset();
  return 0;
}
