#include "common/frame_link.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace loom {
namespace {

constexpr size_t kReadChunk = 64 * 1024;

void PutLength(char* p, uint32_t n) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((n >> (8 * i)) & 0xff);
}

uint32_t GetLength(const char* p) {
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return n;
}

}  // namespace

FrameLink::FrameLink(int fd, int64_t max_frame_bytes) : fd_(fd), max_frame_bytes_(max_frame_bytes) {
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) < 0) {
    Fail(Internal(std::string("cannot make the link non-blocking: ") + std::strerror(errno)));
  }
}

FrameLink::~FrameLink() {
  if (fd_ >= 0) ::close(fd_);
}

bool FrameLink::Fail(Status s) {
  if (error_.ok()) error_ = std::move(s);
  return false;
}

char* FrameLink::Buffer::Reserve(size_t n) {
  if (end + n <= cap) return data.get() + end;
  const size_t held = size();
  if (held + n <= cap) {
    std::memmove(data.get(), data.get() + begin, held);
  } else {
    const size_t grown = std::max({cap * 2, held + n, kReadChunk});
    std::unique_ptr<char[]> bigger(new char[grown]);  // default-initialised: not zeroed
    if (held > 0) std::memcpy(bigger.get(), data.get() + begin, held);
    data = std::move(bigger);
    cap = grown;
  }
  begin = 0;
  end = held;
  return data.get() + end;
}

void FrameLink::Buffer::Consume(size_t n) {
  begin += n;
  if (begin < end) return;
  begin = end = 0;
  if (cap > (size_t{1} << 20)) {  // a large message went through: do not keep its room
    data.reset();
    cap = 0;
  }
}

bool FrameLink::Send(size_t size, const std::function<void(char*)>& fill) {
  if (broken()) return false;
  if (size > static_cast<size_t>(max_frame_bytes_) || size > UINT32_MAX) {
    return Fail(InvalidArgument("a frame of " + std::to_string(size) + " bytes is over the link's limit of " +
                                std::to_string(max_frame_bytes_)));
  }
  char* p = out_.Reserve(kHeaderBytes + size);
  PutLength(p, static_cast<uint32_t>(size));
  fill(p + kHeaderBytes);
  out_.end += kHeaderBytes + size;
  return Flush();
}

bool FrameLink::Send(std::string_view payload) {
  return Send(payload.size(), [&](char* p) { std::memcpy(p, payload.data(), payload.size()); });
}

bool FrameLink::Unsend(size_t bytes) {
  if (pending_bytes() < bytes) return false;
  out_.end -= bytes;
  if (out_.size() == 0) out_.Consume(0);
  return true;
}

bool FrameLink::Flush() {
  if (broken()) return false;
  while (out_.size() > 0) {
    // MSG_NOSIGNAL: a peer that went away is an error here, not a SIGPIPE.
    const ssize_t n = ::send(fd_, out_.head(), out_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      out_.Consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return Fail(Unavailable(std::string("cannot write to the link: ") + std::strerror(errno)));
  }
  return true;
}

bool FrameLink::HasFrame() const {
  if (in_.size() < kHeaderBytes) return false;
  return in_.size() - kHeaderBytes >= GetLength(in_.head());
}

bool FrameLink::Deliver(const std::function<void(std::string_view)>& on_frame) {
  while (in_.size() >= kHeaderBytes) {
    const uint32_t n = GetLength(in_.head());
    if (n > max_frame_bytes_) {
      return Fail(Status(StatusCode::kDataLoss, "the peer sent a frame of " + std::to_string(n) +
                                                    " bytes, over the limit of " + std::to_string(max_frame_bytes_)));
    }
    if (in_.size() - kHeaderBytes < n) break;
    on_frame(std::string_view(in_.head() + kHeaderBytes, n));
    in_.Consume(kHeaderBytes + n);
  }
  return true;
}

bool FrameLink::Read(const std::function<void(std::string_view)>& on_frame) {
  if (broken()) return false;
  while (true) {
    // Room for the rest of the frame being read (a large task arrives in few reads), at least
    // a chunk.
    size_t want = kReadChunk;
    if (in_.size() >= kHeaderBytes) {
      const uint32_t n = GetLength(in_.head());
      if (n <= max_frame_bytes_ && n + kHeaderBytes > in_.size()) {
        want = std::max(want, n + kHeaderBytes - in_.size());
      }
    }
    char* p = in_.Reserve(want);
    const ssize_t n = ::read(fd_, p, want);
    if (n > 0) {
      in_.end += static_cast<size_t>(n);
      if (!Deliver(on_frame)) return false;
      if (static_cast<size_t>(n) < want) return true;  // drained: the next read would block
      continue;
    }
    if (n == 0) {
      (void)Deliver(on_frame);
      return Fail(Unavailable(in_.size() == 0 ? kClosedByPeer : "the peer closed the link in the middle of a frame"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    return Fail(Unavailable(std::string("cannot read from the link: ") + std::strerror(errno)));
  }
}

}  // namespace loom
