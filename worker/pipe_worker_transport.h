// WorkerTransport over an inherited stream socket (one end of the socketpair(2) the endpoint
// made when it started this worker; `loom-worker --endpoint-fd N`), framed by FrameLink
// (common/frame_link.h). No ZeroMQ I/O thread: a message costs this process one read(2) or
// write(2). When the endpoint goes away the link reads end-of-file, and Receive reports the
// transport broken, so the worker ends with its endpoint.
//
// Not thread-safe: one thread (the worker loop) uses it.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "common/frame_link.h"
#include "worker/worker_loop.h"

namespace loom::worker {

class PipeWorkerTransport final : public WorkerTransport {
 public:
  // Takes ownership of `fd`. `max_message_bytes` bounds an inbound message; `send_timeout`, how
  // long a Send waits for the endpoint to take a message before it returns kUnavailable (a
  // message partly written is always finished: the stream cannot take it back).
  PipeWorkerTransport(int fd, int64_t max_message_bytes, std::chrono::milliseconds send_timeout);

  Status Send(const v1::WorkerEnvelope& envelope) override;
  Result<std::optional<v1::WorkerEnvelope>> Receive(std::chrono::milliseconds timeout) override;

 private:
  // Waits up to `timeout` for the link to be readable (events POLLIN) or writable (POLLOUT);
  // false on a timeout or a signal.
  bool Wait(short events, std::chrono::milliseconds timeout);
  // The status for a broken link (kFailedPrecondition, with the link's reason).
  Status Broken() const;

  FrameLink link_;
  const std::chrono::milliseconds send_timeout_;
  struct Frame {
    bool ok = false;  // parsed
    size_t size = 0;
    v1::WorkerEnvelope envelope;
  };
  std::deque<Frame> frames_;  // read and not yet returned
};

}  // namespace loom::worker
