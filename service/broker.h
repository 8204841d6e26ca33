// Broker: the service's side of the endpoint link. Owns a ZeroMQ ROUTER socket that endpoints
// connect out to (DEALER), so endpoints behind NAT and firewalls work. It registers endpoint
// sessions, hands out tasks against each endpoint's credit (credit-based flow control: an
// endpoint asks for as many tasks as it has room for), commits results to the store before
// publishing them, and requeues the tasks of endpoints that fall silent.
//
// Endpoint authentication (BrokerOptions::curve set): the ROUTER is a ZeroMQ CURVE server, and
// a ZapHandler (zap_handler.h) bound in the broker's context authenticates every connection by
// its CURVE public key. A connection may register only as the endpoint its key belongs to
// (ZAP's User-Id), and every later message on it must carry that same User-Id and key; the
// endpoint's record must exist (made by CreateEndpoint). Anything else is refused, logged and
// counted (BrokerStats::auth_refused). Without `curve` (--endpoint-auth none) endpoints connect
// in plaintext and register themselves, owned by "local": for a single-user host only.
//
// One thread (Run) owns the socket. TasksQueued/TasksCancelled/EndpointChanged may be called
// from any thread: they queue the request and wake the loop through an eventfd polled next to
// the socket.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/log_limiter.h"
#include "service/api.h"
#include "service/completion_hub.h"
#include "service/credit_book.h"
#include "service/metrics.h"
#include "service/task_store.h"
#include "service/zap_handler.h"

namespace loom::service {

struct BrokerOptions {
  std::string bind = "tcp://127.0.0.1:*";
  int64_t max_message_bytes = 10 * 1024 * 1024;
  std::chrono::milliseconds heartbeat_period{1000};
  int heartbeat_misses = 3;        // an endpoint silent for this many periods is offline
  int high_water_mark = 100000;    // messages queued per peer before sends to it fail
  int max_dispatch_batch = 1000;   // tasks leased per store call
  int max_failover_scan = 100000;  // queued tasks of a lost endpoint examined for failover
  // Acknowledgements of committed results wait this long for tasks going to the same endpoint,
  // to ride in their message (an endpoint woken once, not twice); 0: sent in the round that
  // committed the results. Once max_held_acks wait for one endpoint they go at once.
  std::chrono::milliseconds ack_hold{100};
  int max_held_acks = 256;
  // The service's CURVE key pair: endpoints must authenticate (see the class comment). Unset:
  // plaintext, endpoints register themselves (--endpoint-auth none).
  std::optional<curve::KeyPair> curve;
  // Tests only: off, libzmq lets a CURVE handshake through when no ZAP handler answers (as a
  // libzmq without ZMQ_ZAP_ENFORCE_DOMAIN would), and the broker's own check must hold alone.
  bool enforce_zap = true;
  KeyDirectoryOptions key_directory;
};

struct BrokerStats {
  std::atomic<uint64_t> garbage_frames{0};
  std::atomic<uint64_t> tasks_dispatched{0};
  std::atomic<uint64_t> results_committed{0};
  std::atomic<uint64_t> results_rejected{0};  // stale lease or session, or task no longer in flight
  std::atomic<uint64_t> results_retried{0};   // failed attempts put back to run again
  std::atomic<uint64_t> sessions_fenced{0};   // replaced by a newer connection with the same endpoint id
  std::atomic<uint64_t> sessions_lost{0};     // dropped for missed heartbeats or a dead link
  std::atomic<uint64_t> tasks_requeued{0};    // back in their queue after their session was lost or replaced
  std::atomic<uint64_t> store_errors{0};
  std::array<std::atomic<uint64_t>, 17> store_errors_by_code{};  // by StatusCode of the failed store call
  std::atomic<int64_t> endpoints_online{0};                      // live sessions
  // Endpoint authentication (curve mode).
  std::atomic<uint64_t> auth_refused{0};  // messages refused: unauthenticated, another endpoint's id, replaced key
  ZapStats zap;                           // the ZAP handler's answers
};

class Broker final : public DispatchNotifier {
 public:
  using EndpointListener = std::function<void(const v1::EndpointRecord&)>;
  // `credit` is shared with the submit path (LoomApi), which may dispatch against it too.
  // `metrics` (may be null: none) counts finished tasks and their hop latencies.
  Broker(TaskStore* store, CompletionHub* hub, CreditBook* credit, BrokerOptions options, EndpointListener on_endpoint,
         ServiceMetrics* metrics = nullptr);
  ~Broker() override;

  // Binds the ROUTER socket; after OK, bound_address() is the address endpoints connect to.
  // In curve mode it first loads the endpoints' keys and starts the ZAP handler.
  Status Bind();
  const std::string& bound_address() const { return bound_address_; }
  // Runs the loop on a thread of its own until Stop().
  void Start();
  void Stop();

  void TasksQueued(const std::vector<std::string>& endpoints) override;
  void TasksDispatched(const std::string& endpoint, const std::string& session, int64_t lease_epoch,
                       std::vector<v1::TaskSpec> specs, int64_t committed_ns) override;
  void TasksCancelled(const std::string& endpoint, const std::vector<std::string>& task_ids) override;
  // An endpoint record was created or changed through the API: its CURVE key is known (or
  // forgotten) at once, and a live session whose key was replaced is fenced off.
  void EndpointChanged(const v1::EndpointRecord& e) override;

  const BrokerStats& stats() const { return stats_; }
  bool curve() const { return options_.curve.has_value(); }
  // Whether libzmq took ZMQ_ZAP_ENFORCE_DOMAIN (curve mode; see zap_handler.h).
  bool zap_enforced() const { return zap_enforced_; }
  // Fuzz targets and tests only: handles one message from `routing_id` as the loop would, on
  // the calling thread, then commits the results it carried. REQUIRES: Bind() returned OK and
  // Start() was never called (no loop thread).
  void HandleForTesting(const std::string& routing_id, std::string_view payload);
  // Tests only: stop and start the ZAP handler, to show that connections fail without it.
  void StopZapHandler();
  Status StartZapHandler();

 private:
  // Who a connection authenticated as (ZAP's User-Id and the key it used); empty when it did
  // not, or in plaintext mode.
  struct Peer {
    std::string endpoint_id;
    std::string key;
  };
  struct Session {
    std::string endpoint_id;
    std::string key;  // curve mode: the CURVE key its connection authenticated with
    std::string session_id;
    std::string routing_id;
    int64_t lease_epoch = 0;
    std::chrono::steady_clock::time_point last_seen;
    v1::EndpointRecord record;
  };
  struct PendingResults {
    std::string endpoint_id;
    int64_t lease_epoch = 0;
    std::vector<v1::TaskResult> results;
  };
  struct DirectBatch {
    std::string endpoint;
    int64_t lease_epoch = 0;
    std::vector<v1::TaskSpec> specs;
    int64_t committed_ns = 0;  // when the submit's store write returned
  };

  void Run();
  void Wake();
  void HandleMessage(const std::string& routing_id, const zmq::message_t& payload);
  void HandleRegister(const std::string& routing_id, const v1::EndpointRegister& reg, const Peer& peer);
  // Counts and logs a refused message; `fence` also tells the peer to stop, with `why`.
  void RefuseAuth(const std::string& routing_id, const std::string& why, bool fence);
  // Applies the records EndpointChanged queued to the live sessions.
  void ApplyEndpointChanges(std::vector<v1::EndpointRecord> changed);
  void CommitResults();
  // Sends alone the acknowledgements held since before `before` (all of them by default), and
  // returns when the oldest one left is due (time_point::max() when none is held).
  std::chrono::steady_clock::time_point FlushAcks(
      std::chrono::steady_clock::time_point before = std::chrono::steady_clock::time_point::max());
  void Dispatch(const std::string& endpoint_id);
  // Sends specs to the endpoint's session, split under the message size limit.
  // `committed_ns`: when the store write that dispatched them returned (TaskBatch.committed_unix_nanos).
  // `leased_ns`: when they were leased from the queue (TaskBatch.leased_unix_nanos; 0: by the submit).
  bool SendTasks(const std::string& routing_id, std::vector<v1::TaskSpec>& specs, int64_t committed_ns,
                 int64_t leased_ns = 0);
  void CheckLiveness();
  void DropSession(const std::string& routing_id, const char* why);
  // Publishes tasks that failed for good when a session was lost.
  void PublishLost(const std::string& endpoint_id, const Result<LostOutcome>& lost, const char* what);
  // After a restart: endpoints that have tasks in flight get one liveness threshold to
  // register again before those tasks are requeued.
  void LoadInFlightEndpoints();
  void SendDirect(DirectBatch& batch);
  // Moves the queued tasks of a lost group member that allow failover to live members.
  void FailOver(const std::string& lost, const std::string& group);
  bool Send(const std::string& routing_id, const v1::Envelope& env);
  void SendReregister(const std::string& routing_id, const std::string& reason);
  Session* SessionFor(const std::string& routing_id);
  void CountStoreError(const Status& s);
  // Publishes records that reached a terminal state (and counts them).
  void Finished(std::vector<v1::TaskRecord> records);

  TaskStore* store_;
  CompletionHub* hub_;
  CreditBook* credit_;
  const BrokerOptions options_;
  EndpointListener on_endpoint_;
  ServiceMetrics* metrics_;
  BrokerStats stats_;

  zmq::context_t ctx_{1};
  std::unique_ptr<EndpointKeyDirectory> keys_;  // curve mode
  std::unique_ptr<ZapHandler> zap_;             // curve mode
  bool zap_enforced_ = false;
  // No socket monitor on router_: with libzmq 4.3.4, a monitor taking handshake-failure events
  // on this CURVE server kept a connection whose handshake had failed open, so its client never
  // retried (seen while writing tests/integration/endpoint_auth_test). The ZAP handler counts
  // its refusals instead.
  zmq::socket_t router_;
  std::string bound_address_;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};

  // Requests from other threads.
  std::mutex mu_;
  std::set<std::string> queued_;                                // GUARDED_BY(mu_)
  std::vector<std::pair<std::string, std::string>> cancelled_;  // GUARDED_BY(mu_) (endpoint, task)
  std::vector<DirectBatch> direct_;                             // GUARDED_BY(mu_)
  std::vector<v1::EndpointRecord> changed_;                     // GUARDED_BY(mu_)

  // Owned by the loop thread.
  std::map<std::string, Session> sessions_;         // by routing id
  std::map<std::string, std::string> by_endpoint_;  // endpoint id -> routing id
  std::set<std::string> want_dispatch_;
  std::map<std::string, PendingResults> results_;  // by routing id, awaiting commit
  // Committed results to acknowledge, by routing id: they go out with the next tasks sent to
  // that peer, or alone once they have waited options_.ack_hold (FlushAcks).
  struct HeldAcks {
    v1::ResultAck ack;
    std::chrono::steady_clock::time_point since;
  };
  using HeldAcksMap = std::map<std::string, HeldAcks>;
  HeldAcksMap acks_;
  // Sends a peer's held acknowledgements alone and forgets them; returns the next entry.
  HeldAcksMap::iterator SendHeldAcks(HeldAcksMap::iterator it);
  std::vector<v1::TaskStarted> started_;
  // Endpoints with tasks in flight when this service started, and when they must be back.
  std::map<std::string, std::chrono::steady_clock::time_point> unclaimed_;
  LogLimiter log_refusals_{10};
};

}  // namespace loom::service
