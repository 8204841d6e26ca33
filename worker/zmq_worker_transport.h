// WorkerTransport over ZeroMQ: a DEALER socket, with the worker id as its routing id, connected
// to the endpoint's ROUTER. Each message is one serialized v1::WorkerEnvelope (common/wire.h).
// The ROUTER sends [worker id, envelope]; the DEALER sees only the envelope frame. A message with
// empty leading frames (a REQ-style delimiter) is accepted; any other multi-frame message is
// garbage.
//
// Owns its ZeroMQ context and socket; neither copyable nor movable (Connect returns a unique_ptr).
// Not thread-safe: a socket belongs to one thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/status.h"
#include "worker/worker_loop.h"

namespace loom::worker {

struct ZmqWorkerTransportOptions {
  std::string endpoint;                                 // the endpoint's ROUTER address, e.g. ipc:///run/loom/ep.ipc
  std::string worker_id;                                // ZMQ_ROUTING_ID: how the endpoint addresses this worker
  int64_t max_message_bytes = kDefaultMaxMessageBytes;  // ZMQ_MAXMSGSIZE for inbound messages
  // How long one Send may block (the endpoint not reading) before it returns kUnavailable.
  std::chrono::milliseconds send_timeout{100};
  // How long closing waits for queued results to reach the endpoint.
  std::chrono::milliseconds linger{2000};
  // Set: connect as a CURVE client with these keys to an endpoint with `endpoint_public_key`
  // (the TCP link of a block's workers).
  std::optional<curve::KeyPair> curve_keys;
  std::string endpoint_public_key;
};

class ZmqWorkerTransport final : public WorkerTransport {
 public:
  // Creates the socket and connects it. ZeroMQ connects in the background, so this succeeds
  // before the endpoint listens; what is sent meanwhile is queued.
  static Result<std::unique_ptr<ZmqWorkerTransport>> Connect(const ZmqWorkerTransportOptions& options);

  ZmqWorkerTransport(const ZmqWorkerTransport&) = delete;
  ZmqWorkerTransport& operator=(const ZmqWorkerTransport&) = delete;
  ~ZmqWorkerTransport() override;

  Status Send(const v1::WorkerEnvelope& envelope) override;
  Result<std::optional<v1::WorkerEnvelope>> Receive(std::chrono::milliseconds timeout) override;

 private:
  ZmqWorkerTransport() = default;

  zmq::context_t context_{1};
  zmq::socket_t socket_;  // declared after context_: closed before the context terminates
};

}  // namespace loom::worker
