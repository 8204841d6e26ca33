#include "worker/zmq_worker_transport.h"

#include <cerrno>
#include <utility>

#include "common/wire.h"

namespace loom::worker {

Result<std::unique_ptr<ZmqWorkerTransport>> ZmqWorkerTransport::Connect(const ZmqWorkerTransportOptions& options) {
  if (options.endpoint.empty()) return InvalidArgument("no endpoint address given (--endpoint ipc://...)");
  // ZeroMQ reserves routing ids that start with a zero byte, and limits them to 255 bytes.
  if (options.worker_id.empty() || options.worker_id.size() > 255 || options.worker_id[0] == '\0') {
    return InvalidArgument("worker id must be 1 to 255 bytes and not start with a zero byte, got '" +
                           options.worker_id + "'");
  }
  if (options.max_message_bytes <= 0) {
    return InvalidArgument("max message bytes must be positive, got " + std::to_string(options.max_message_bytes));
  }
  std::unique_ptr<ZmqWorkerTransport> t(new ZmqWorkerTransport());
  try {
    t->socket_ = zmq::socket_t(t->context_, zmq::socket_type::dealer);
    t->socket_.set(zmq::sockopt::routing_id, options.worker_id);
    t->socket_.set(zmq::sockopt::maxmsgsize, options.max_message_bytes);
    t->socket_.set(zmq::sockopt::sndtimeo, static_cast<int>(options.send_timeout.count()));
    t->socket_.set(zmq::sockopt::linger, static_cast<int>(options.linger.count()));
    if (options.curve_keys) {
      LOOM_RETURN_IF_ERROR(curve::MakeClient(t->socket_, *options.curve_keys, options.endpoint_public_key));
    }
    t->socket_.connect(options.endpoint);
  } catch (const zmq::error_t& e) {
    return InvalidArgument("cannot connect to endpoint '" + options.endpoint + "': " + e.what());
  }
  return t;
}

ZmqWorkerTransport::~ZmqWorkerTransport() = default;

Status ZmqWorkerTransport::Send(const v1::WorkerEnvelope& envelope) {
  try {
    if (!socket_.send(ToMessage(envelope), zmq::send_flags::none)) {
      return Unavailable("send timed out: the endpoint is not reading");
    }
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return Unavailable("send interrupted by a signal");
    return Internal(std::string("zmq send: ") + e.what());
  }
}

Result<std::optional<v1::WorkerEnvelope>> ZmqWorkerTransport::Receive(std::chrono::milliseconds timeout) {
  try {
    if (timeout.count() > 0) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, timeout) == 0) return std::optional<v1::WorkerEnvelope>();
    }
    zmq::message_t frame;
    if (!socket_.recv(frame, zmq::recv_flags::dontwait)) return std::optional<v1::WorkerEnvelope>();
    // The parts of a multi-part message arrive together, so reading the rest never blocks.
    bool non_empty_prefix = false;
    while (frame.more()) {
      non_empty_prefix = non_empty_prefix || frame.size() != 0;
      (void)socket_.recv(frame, zmq::recv_flags::none);
    }
    if (non_empty_prefix) {
      return Status(StatusCode::kDataLoss, "a multi-part message; the endpoint must send one envelope frame");
    }
    v1::WorkerEnvelope envelope;
    if (!FromMessage(frame, &envelope)) {
      return Status(StatusCode::kDataLoss,
                    "a " + std::to_string(frame.size()) + "-byte frame does not parse as a WorkerEnvelope");
    }
    return std::optional<v1::WorkerEnvelope>(std::move(envelope));
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::optional<v1::WorkerEnvelope>();
    return Internal(std::string("zmq receive: ") + e.what());
  }
}

}  // namespace loom::worker
