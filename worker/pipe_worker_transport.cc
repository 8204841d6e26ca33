#include "worker/pipe_worker_transport.h"

#include <poll.h>

#include <cerrno>

namespace loom::worker {

PipeWorkerTransport::PipeWorkerTransport(int fd, int64_t max_message_bytes, std::chrono::milliseconds send_timeout)
    : link_(fd, max_message_bytes), send_timeout_(send_timeout) {}

bool PipeWorkerTransport::Wait(short events, std::chrono::milliseconds timeout) {
  pollfd p{link_.fd(), events, 0};
  const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  return n > 0;
}

Status PipeWorkerTransport::Broken() const {
  // Never kUnavailable, which asks the caller to retry: a broken stream stays broken.
  return FailedPrecondition("the link to the endpoint broke: " + link_.error().message());
}

Status PipeWorkerTransport::Send(const v1::WorkerEnvelope& envelope) {
  if (link_.broken()) return Broken();
  const size_t size = envelope.ByteSizeLong();
  if (!link_.Send(size, [&](char* p) { envelope.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(p)); })) {
    return Broken();
  }
  // Done when the socket took it all; otherwise wait for the endpoint to read. Once part of the
  // frame is out the rest must follow, however long that takes (or the link breaks).
  bool first_wait = true;
  while (link_.wants_write()) {
    if (!Wait(POLLOUT, first_wait ? send_timeout_ : std::chrono::milliseconds(1000)) && first_wait &&
        link_.Unsend(size + FrameLink::kHeaderBytes)) {
      // None of it went: not sent this time, and taken back so that a retry sends it once.
      return Unavailable("send timed out or was interrupted: the endpoint is not reading");
    }
    first_wait = false;
    if (!link_.Flush()) return Broken();
  }
  return Status::Ok();
}

Result<std::optional<v1::WorkerEnvelope>> PipeWorkerTransport::Receive(std::chrono::milliseconds timeout) {
  if (frames_.empty() && !link_.broken()) {
    if (!link_.HasFrame() && timeout.count() > 0 && !Wait(POLLIN, timeout)) return std::optional<v1::WorkerEnvelope>();
    (void)link_.Read([&](std::string_view f) {
      Frame& parsed = frames_.emplace_back();
      parsed.size = f.size();
      parsed.ok = parsed.envelope.ParseFromArray(f.data(), static_cast<int>(f.size()));
    });
  }
  if (frames_.empty()) {
    if (link_.broken()) return Broken();
    return std::optional<v1::WorkerEnvelope>();
  }
  Frame frame = std::move(frames_.front());
  frames_.pop_front();
  if (!frame.ok) {
    return Status(StatusCode::kDataLoss,
                  "a " + std::to_string(frame.size) + "-byte frame does not parse as a WorkerEnvelope");
  }
  return std::optional<v1::WorkerEnvelope>(std::move(frame.envelope));
}

}  // namespace loom::worker
