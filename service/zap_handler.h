// The ZAP handler (ZeroMQ Authentication Protocol, RFC 27) that authenticates endpoints on the
// broker's CURVE socket. libzmq asks it about every connection's handshake; it answers:
//   - mechanism CURVE, domain ours, a public key that belongs to an endpoint record: 200, with
//     User-Id = that endpoint's id and the metadata property X-Loom-Key = the key (Z85);
//   - a key not found while the store could not be read again just now (see below): 300, a
//     temporary failure, after which the client reconnects at once;
//   - anything else (an unknown key, another mechanism or domain, a malformed request): 400,
//     after which libzmq's client gives up on that socket (loom-endpoint opens a new one after
//     its liveness threshold).
// The broker then reads User-Id and X-Loom-Key on every message (zmq_msg_gets), so that a
// connection can only ever speak for the endpoint whose key it holds.
//
// Keys come from the endpoint records (EndpointRecord.curve_public_key), held in memory by
// EndpointKeyDirectory: updated when the API creates or changes an endpoint, and reloaded from
// the store on a miss, at most once per `min_refresh_interval`, so that a flood of unknown
// keys cannot hammer Redis.
//
// Failing closed: the broker's socket sets ZMQ_ZAP_ENFORCE_DOMAIN, so with no handler bound a
// CURVE handshake fails instead of being let in unauthenticated; and the broker refuses any
// message without a User-Id besides (for a libzmq that ignores that option).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "common/status.h"
#include "loom.pb.h"
#include "service/task_store.h"

namespace loom::service {

// Where libzmq looks for the ZAP handler, in the context of the socket being authenticated.
inline constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
// The ZAP domain of the broker's socket.
inline constexpr const char* kLoomZapDomain = "loom";
// The message property that carries the authenticated key (see the header comment).
inline constexpr const char* kKeyProperty = "X-Loom-Key";

// One ZAP request as libzmq sends it (the frames after the REQ/REP envelope).
struct ZapRequest {
  std::string version;     // "1.0"
  std::string request_id;  // echoed in the reply
  std::string domain;
  std::string address;                   // the peer's IP address
  std::string routing_id;                // "identity" in RFC 27
  std::string mechanism;                 // "NULL", "PLAIN" or "CURVE"
  std::vector<std::string> credentials;  // CURVE: one frame, the client's 32-byte public key
};

// The reply's frames: version, request id, status code, status text, user id, metadata.
struct ZapReply {
  std::string request_id;
  std::string status_code;  // "200", "300" or "400"
  std::string status_text;
  std::string user_id;
  std::string metadata;  // ZMTP metadata encoding (EncodeZapMetadata)
  std::vector<std::string> Frames() const;
};

// nullopt when the frames are not a ZAP 1.0 request (too few frames, another version).
std::optional<ZapRequest> ParseZapRequest(const std::vector<std::string>& frames);
// ZMTP property encoding: per property, a 1-byte name length, the name, a 4-byte big-endian
// value length, the value.
std::string EncodeZapMetadata(const std::vector<std::pair<std::string, std::string>>& properties);

struct KeyDirectoryOptions {
  std::chrono::milliseconds min_refresh_interval{1000};  // between reloads from the store on a miss
};

// CURVE public key -> endpoint id. Thread-safe.
class EndpointKeyDirectory {
 public:
  EndpointKeyDirectory(TaskStore* store, KeyDirectoryOptions options);

  // Reloads every key from the store now.
  Status Refresh();
  // The endpoint `public_key` (Z85) belongs to. On a miss, reloads from the store first, unless
  // it did so less than min_refresh_interval before `now`; `*retry_later` (may be null) then
  // says that the miss is not final (not reloaded, or the reload failed). A key that two
  // records claim belongs to neither.
  std::optional<std::string> Lookup(const std::string& public_key, std::chrono::steady_clock::time_point now,
                                    bool* retry_later = nullptr);
  // An endpoint was created or changed (its key may be new, replaced or removed).
  void Update(const v1::EndpointRecord& e);
  // Reloads from the store so far (Refresh and misses), for tests and logs.
  uint64_t refreshes() const { return refreshes_; }

 private:
  void Apply(const std::string& id, const std::string& key);  // REQUIRES: mu_ held

  TaskStore* store_;
  const KeyDirectoryOptions options_;
  std::atomic<uint64_t> refreshes_{0};
  std::mutex refresh_mu_;  // one reload at a time
  std::mutex mu_;
  std::map<std::string, std::string> by_key_;             // GUARDED_BY(mu_); "" marks a key claimed twice
  std::map<std::string, std::string> by_id_;              // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point last_refresh_{};  // GUARDED_BY(mu_)
  // Updates made while a reload reads the store, applied again over its result.
  bool refreshing_ = false;                                  // GUARDED_BY(mu_)
  std::vector<std::pair<std::string, std::string>> during_;  // GUARDED_BY(mu_)
};

struct ZapStats {
  std::atomic<uint64_t> accepted{0};  // 200
  std::atomic<uint64_t> deferred{0};  // 300: not found, and the store not read again yet
  std::atomic<uint64_t> denied{0};    // 400: unknown keys, other mechanisms or domains, malformed requests
};

// Decides one request. Never throws; anything it cannot make sense of is refused (400).
ZapReply DecideZap(const std::vector<std::string>& frames, const std::string& domain, EndpointKeyDirectory& keys,
                   std::chrono::steady_clock::time_point now);

// Serves ZAP on kZapEndpoint in `ctx` on a thread of its own. Thread-safe: Start and Stop may
// be called from any thread (not concurrently).
class ZapHandler {
 public:
  ZapHandler(zmq::context_t& ctx, EndpointKeyDirectory* keys, std::string domain, ZapStats* stats);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Binds kZapEndpoint and starts answering. UNAVAILABLE when it cannot bind (another handler
  // is bound in this context).
  Status Start();
  // Stops answering and unbinds: from then on, CURVE handshakes on sockets that enforce ZAP fail.
  void Stop();
  bool running() const { return thread_.joinable(); }

 private:
  void Run(zmq::socket_t socket);

  zmq::context_t& ctx_;
  EndpointKeyDirectory* keys_;
  const std::string domain_;
  ZapStats* stats_;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace loom::service
