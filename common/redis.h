// Redis through hiredis: RedisConnection, a move-only RAII connection with connect and command
// timeouts, and RedisPool, a thread-safe pool with a circuit breaker, so that a Redis outage turns
// into kUnavailable quickly (not a hang, not one timeout per caller) and the pool recovers by
// itself when Redis is back.
//
// What an outage costs callers of RedisPool:
//  - Redis stops answering (SIGSTOP, a hung host): connecting still succeeds, because the kernel
//    accepts on the listening socket (TCP and Unix alike), so the first caller notices only when
//    its command gets no reply: it fails with kUnavailable after at most command_timeout. That
//    opens the circuit, and every other caller then fails fast (no socket call) while it is open.
//    Callers that were already waiting for a reply when Redis stopped each wait up to
//    command_timeout as well.
//  - Redis is down (killed, restarting, wrong address): the first caller fails when the connect is
//    refused (at once) or after connect_timeout; then the same.
//  - While the circuit is open, after a backoff delay (reconnect_backoff_initial, doubled on each
//    consecutive failure up to reconnect_backoff_max, +-20% jitter) exactly one caller is let
//    through as a probe: it connects and PINGs (PING, because a connect alone proves nothing, see
//    above). Success closes the circuit and resets the backoff; failure reopens it with the next
//    delay. A probe against a stopped Redis costs its caller min(connect_timeout, command_timeout).
//  - Error replies (NOSCRIPT, OOM, WRONGTYPE, ...) are not outages: they are kInternal with the
//    Redis text in the message ("redis error: NOSCRIPT ...") and leave the circuit alone. The one
//    exception is LOADING (Redis restarting and loading its data): kUnavailable, and it opens the
//    circuit like an I/O failure, since every command would get the same answer until loading ends.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace loom {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, ReplyDeleter>;

// Redis keeps a hash as a compact listpack only while every value is at most
// hash-max-listpack-value bytes (default 64); past it the hash becomes a hash table, about 2.5x
// the memory. A queued no-op task's spec takes about 72 bytes, a finished task's stamps 80: the
// Redis that Loom starts uses this value, and the service warns when its Redis uses less.
inline constexpr int kHashMaxListpackValue = 256;

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_socket;  // when set, used instead of host and port (cheaper on one host)
  std::chrono::milliseconds connect_timeout{1000};
  // The longest one command waits for its reply; also what a Redis that stops answering costs the
  // first caller to notice (see the top of this file).
  std::chrono::milliseconds command_timeout{2000};
  // RedisPool circuit breaker: the delay before the first reconnect attempt after a failure,
  // doubled on each consecutive failed attempt up to reconnect_backoff_max, +-20% jitter.
  std::chrono::milliseconds reconnect_backoff_initial{50};
  std::chrono::milliseconds reconnect_backoff_max{2000};
};

// One connection. Not thread-safe: one thread uses a connection at a time (RedisPool hands them out).
// Writes argv as one Redis protocol (RESP) command into *out (replacing its contents).
void FormatRedisCommand(const std::vector<std::string_view>& argv, std::string* out);

class RedisConnection {
 public:
  static Result<std::unique_ptr<RedisConnection>> Connect(const RedisOptions& options);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // One command. An error reply becomes kInternal ("redis error: <Redis's text>"), except LOADING,
  // which becomes kUnavailable and marks the connection broken; an I/O error or a timeout becomes
  // kUnavailable and leaves the connection broken.
  Result<RedisReply> Command(const std::vector<std::string_view>& argv);
  // Pipelining: Append many commands, then GetReply once per command, in order.
  void Append(const std::vector<std::string_view>& argv);
  Result<RedisReply> GetReply();

  // True once an I/O error or timeout happened, Redis answered LOADING, or MarkBroken was called:
  // the connection must be dropped.
  bool broken() const;
  // Why the connection is broken (e.g. "Connection reset by peer"); empty when it is not.
  std::string error() const;
  // For failures hiredis cannot see (e.g. a reply that makes no sense): makes broken() true.
  void MarkBroken(std::string reason);
  // Commands appended whose replies were not read yet. A connection with pending replies must not
  // be reused: the next user would read replies meant for someone else.
  size_t pending_replies() const { return pending_; }
  // "127.0.0.1:6379" or the Unix socket path.
  const std::string& address() const { return address_; }

 private:
  friend class RedisPool;
  RedisConnection(redisContext* c, std::string address, std::chrono::milliseconds command_timeout)
      : ctx_(c), address_(std::move(address)), command_timeout_(command_timeout) {}
  // As Connect; on failure also stores the bare cause (e.g. "Connection refused") in *cause.
  static Result<std::unique_ptr<RedisConnection>> Connect(const RedisOptions& options, std::string* cause);
  // PINGs with `timeout` instead of the command timeout. Fails on an I/O error, a timeout or
  // LOADING; any other reply, even an error, shows that Redis is serving.
  Status Ping(std::chrono::milliseconds timeout);

  static constexpr size_t kKeptScratchBytes = 64 * 1024;

  redisContext* ctx_;
  std::string scratch_;  // Append's formatted command
  std::string address_;
  std::chrono::milliseconds command_timeout_;
  size_t pending_ = 0;
  std::string broken_reason_;  // set by MarkBroken or a LOADING reply
};

// A pool of connections shared by threads, with the circuit breaker described at the top of this
// file. Thread-safe. REQUIRES: the pool outlives every Lease it hands out.
class RedisPool {
 public:
  explicit RedisPool(RedisOptions options);
  RedisPool(const RedisPool&) = delete;
  RedisPool& operator=(const RedisPool&) = delete;

  // A connection borrowed from the pool; given back (or dropped, if broken) when destroyed.
  class Lease {
   public:
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    RedisConnection* operator->() { return conn_.get(); }
    RedisConnection& operator*() { return *conn_; }
    // Reports a failure hiredis did not flag (a reply that makes no sense, a caller-side deadline):
    // the connection is dropped and the pool treats it as an I/O failure, opening the circuit.
    void MarkBroken(std::string reason = "marked broken by the caller");

   private:
    friend class RedisPool;
    Lease(RedisPool* pool, std::unique_ptr<RedisConnection> c, uint64_t epoch)
        : pool_(pool), conn_(std::move(c)), epoch_(epoch) {}
    RedisPool* pool_;
    std::unique_ptr<RedisConnection> conn_;
    uint64_t epoch_;  // the pool's epoch_ when acquired
  };

  // An idle connection, or a new one. kUnavailable at once, without touching a socket, while the
  // circuit is open; the message names the address, the last error and when the next attempt is.
  Result<Lease> Acquire();

  const RedisOptions& options() const { return options_; }
  // "127.0.0.1:6379" or the Unix socket path.
  const std::string& address() const { return address_; }
  // False while the circuit is open (including while a probe is in flight).
  bool available() const;
  // I/O failures seen: failed connects, failed probes, leases that came back broken.
  uint64_t failures() const;
  // Times the circuit closed again after being open (successful probes).
  uint64_t reconnects() const;

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxIdle = 32;

  void Release(std::unique_ptr<RedisConnection> c, uint64_t epoch);
  // Records an I/O failure. `epoch` is the epoch the failing caller started in: a failure from
  // before the circuit last opened belongs to an outage already handled and changes nothing.
  void OnFailure(const std::string& cause, uint64_t epoch, bool probe);
  void OnProbeSuccess();
  // REQUIRES: mu_ held. Sets retry_at_ from consecutive_failures_.
  void ScheduleRetryLocked(Clock::time_point now);

  const RedisOptions options_;
  const std::string address_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<RedisConnection>> idle_;  // GUARDED_BY(mu_)
  bool open_ = false;                                   // GUARDED_BY(mu_)
  bool probing_ = false;                                // GUARDED_BY(mu_) a probe is in flight
  Clock::time_point retry_at_;                          // GUARDED_BY(mu_)
  Clock::time_point opened_at_;                         // GUARDED_BY(mu_)
  int consecutive_failures_ = 0;                        // GUARDED_BY(mu_)
  std::string last_error_;                              // GUARDED_BY(mu_)
  // Bumped each time the circuit opens; leases carry the epoch they were acquired in.
  uint64_t epoch_ = 0;       // GUARDED_BY(mu_)
  uint64_t failures_ = 0;    // GUARDED_BY(mu_)
  uint64_t reconnects_ = 0;  // GUARDED_BY(mu_)
  std::minstd_rand rng_;     // GUARDED_BY(mu_) backoff jitter
};

// Reply helpers.
std::string ReplyString(const redisReply* r);
bool ReplyIsNil(const redisReply* r);

}  // namespace loom
