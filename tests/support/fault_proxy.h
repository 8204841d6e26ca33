// FaultProxy: a TCP proxy on 127.0.0.1 that fault tests put between two Loom processes (the
// service's ZeroMQ socket and an endpoint, say) to break the network on command: delay every
// chunk, reset every connection, or turn the route into a black hole. Bytes pass unchanged, so
// ZeroMQ, gRPC or any other TCP protocol runs through it.
//
//   FaultProxy proxy("127.0.0.1", service_zmq_port);
//   LOOM_CHECK(proxy.Start().ok());
//   endpoint connects to proxy.endpoint() instead of the service ...
//   proxy.BlackHole();  ... proxy.Pass();
//
// Each accepted connection gets its own connection to the target. A FIN is passed on once the
// data before it has been; a reset or error on one side resets the other. A target that refuses
// the connection shows up as a reset of the client's connection (not counted in `resets`).
//
// Thread-safe: the mode setters and counters() may be called from any thread while the proxy's
// own thread forwards. Each setter returns once that thread has applied it, so no byte is
// forwarded after BlackHole() returns, and every connection that was open when Reset() was
// called has been reset when it returns.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace loom::testing {

class FaultProxy {
 public:
  // A snapshot of what the proxy has done since Start(). A write is counted after it returns, so
  // a peer may see bytes a moment before the counters do; once a mode setter has returned they
  // include everything done before it was called.
  struct Counters {
    int64_t connections_accepted = 0;  // client connections accepted, in every mode
    int64_t open_connections = 0;      // accepted and not yet closed
    int64_t bytes_to_target = 0;       // client -> target, counted when written to the target
    int64_t bytes_to_client = 0;       // target -> client, counted when written to the client
    int64_t resets = 0;                // connections closed with RST by Reset() or by leaving BlackHole()
  };

  FaultProxy(std::string target_host, int target_port);
  ~FaultProxy();  // Stop()s.
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  // Resolves the target, binds a free port on 127.0.0.1 and starts forwarding on a thread of
  // its own, in the mode last set (Pass unless a setter was called before).
  // REQUIRES: not started.
  Status Start();
  // Stops the thread and closes the listener and every connection. Idempotent.
  void Stop();

  // The port clients connect to. REQUIRES: Start() returned OK.
  int port() const { return port_; }
  // "tcp://127.0.0.1:<port>", for ZeroMQ connects.
  std::string endpoint() const;

  // Forwards every chunk as soon as it arrives. Leaving BlackHole() resets the connections it
  // held (see BlackHole()).
  void Pass();
  // Forwards every chunk `delay` after it was read, both directions, order kept: a chunk never
  // overtakes one read before it (so shortening the delay or calling Pass() lets queued chunks
  // out in order). Leaving BlackHole() resets the connections it held.
  void Delay(std::chrono::milliseconds delay);
  // Closes every current connection with RST (SO_LINGER {1, 0}) on both sides, discarding
  // anything queued, then passes: connections accepted afterwards carry data again.
  void Reset();
  // A dead route: connections stay open but nothing is forwarded either way; new connections
  // are accepted but never connected to the target. Nothing a peer does (data, FIN, RST) crosses
  // the proxy. Pass(), Delay() or Reset() ends it and resets every connection it held, as a
  // route that comes back finds the old connections dead; only new connections carry data.
  void BlackHole();

  Counters counters() const;

 private:
  enum class Mode { kPass, kDelay, kBlackHole };
  struct Connection;
  using Clock = std::chrono::steady_clock;

  // Records a command and waits until the proxy thread has applied it (or is not running).
  void Command(Mode mode, std::chrono::milliseconds delay, bool reset);
  void Wake();
  void Run();
  // Loop steps, on the proxy thread only.
  void Apply();
  void AcceptAll();
  void StartTargetConnect(Connection& c);
  void HandleEvent(Connection& c, bool client_side, short revents);
  void HandleBlackHoleEvent(Connection& c, bool client_side, short revents);
  void ReadInto(Connection& c, bool client_side);
  void Flush(Connection& c);
  void FinishHalfCloses(Connection& c);
  void Abort(Connection& c);
  void ResetAll();

  const std::string target_host_;
  const int target_port_;
  sockaddr_storage target_addr_{};
  socklen_t target_addr_len_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: a setter or Stop() wants the poll loop to look at mu_ state
  int port_ = 0;
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable applied_cv_;
  Mode mode_ = Mode::kPass;             // GUARDED_BY(mu_)
  std::chrono::milliseconds delay_{0};  // GUARDED_BY(mu_)
  bool reset_requested_ = false;        // GUARDED_BY(mu_)
  uint64_t requested_ = 0;              // GUARDED_BY(mu_): commands issued
  uint64_t applied_ = 0;                // GUARDED_BY(mu_): commands the thread applied
  bool running_ = false;                // GUARDED_BY(mu_)
  bool stop_ = false;                   // GUARDED_BY(mu_)

  // Owned and touched by the proxy thread only.
  std::vector<std::unique_ptr<Connection>> conns_;
  Mode cur_mode_ = Mode::kPass;  // the mode applied last
  std::chrono::milliseconds cur_delay_{0};

  // Written by the proxy thread, read by counters().
  std::atomic<int64_t> accepted_{0};
  std::atomic<int64_t> open_{0};
  std::atomic<int64_t> to_target_{0};
  std::atomic<int64_t> to_client_{0};
  std::atomic<int64_t> resets_{0};
};

}  // namespace loom::testing
