// Framing for ZeroMQ: every message is one serialized envelope (v1::Envelope between service
// and endpoint, v1::WorkerEnvelope between endpoint and worker). Parse failures are values,
// not exceptions: a garbage frame is counted and dropped by the caller.
#pragma once

#include <google/protobuf/message_lite.h>

#include <zmq.hpp>

namespace loom {

inline zmq::message_t ToMessage(const google::protobuf::MessageLite& m) {
  zmq::message_t msg(m.ByteSizeLong());
  m.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(msg.data()));
  return msg;
}

inline bool FromMessage(const zmq::message_t& msg, google::protobuf::MessageLite* m) {
  return m->ParseFromArray(msg.data(), static_cast<int>(msg.size()));
}

}  // namespace loom
