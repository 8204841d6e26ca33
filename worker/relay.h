// WorkerRelay: how a block's workers without a network of their own (bubblewrap with
// sandbox.network: false) reach their endpoint. The workers connect to a Unix socket of the
// manager; for each worker the relay keeps one connection to the endpoint's TCP worker socket,
// with the worker's routing id and the run's CURVE key, and carries every message across
// unchanged. The endpoint sees what a directly connected worker would show it (the same id, the
// same key checked by its ZAP handler); the workers never hold the key.
//
//   auto relay = WorkerRelay::Start({"tcp://login1:40123", dir, keys, endpoint_public_key});
//   ... start workers with --endpoint relay->address() ...
//   relay->Forget(dead_worker_id);   // closes that worker's connection to the endpoint
//
// One thread polls the Unix socket and every per-worker connection. Forget() and the destructor
// are called from one other thread (the manager's).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/status.h"

namespace loom::worker {

// ipc://DIR/workers.sock: where the relay of socket_dir DIR listens.
std::string WorkerRelayAddress(const std::string& socket_dir);

struct WorkerRelayOptions {
  std::string endpoint;  // the endpoint's worker address, tcp://HOST:PORT
  // A directory only this user may enter (the manager makes one): the socket is made there, and
  // the workers' sandbox binds it in.
  std::string socket_dir;
  std::optional<curve::KeyPair> keys;  // the workers' key pair (with endpoint_public_key), or none
  std::string endpoint_public_key;
  int64_t max_message_bytes = -1;  // the largest message taken from a worker; -1: no limit
};

class WorkerRelay {
 public:
  static Result<std::unique_ptr<WorkerRelay>> Start(WorkerRelayOptions options);
  ~WorkerRelay();
  WorkerRelay(const WorkerRelay&) = delete;
  WorkerRelay& operator=(const WorkerRelay&) = delete;

  // ipc://DIR/workers.sock: the address the workers connect to.
  const std::string& address() const { return address_; }
  // Drops the connection the relay keeps for `worker_id` (a worker that ended); a message from
  // that id later opens a fresh one.
  void Forget(const std::string& worker_id);

 private:
  explicit WorkerRelay(WorkerRelayOptions options);
  void Run();

  WorkerRelayOptions options_;
  std::string address_;
  zmq::context_t ctx_{1};
  zmq::socket_t frontend_;  // ROUTER on address_, used by the relay thread only
  zmq::socket_t control_;         // PAIR: the manager's side, for Forget() and stop
  zmq::socket_t control_inside_;  // PAIR: the relay thread's side
  std::string control_address_;
  std::thread thread_;
};

}  // namespace loom::worker
