#include "common/frame_link.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

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

bool FrameLink::Send(size_t size, const std::function<void(char*)>& fill) {
  if (broken()) return false;
  if (size > static_cast<size_t>(max_frame_bytes_) || size > UINT32_MAX) {
    return Fail(InvalidArgument("a frame of " + std::to_string(size) + " bytes is over the link's limit of " +
                                std::to_string(max_frame_bytes_)));
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  }
  const size_t at = out_.size();
  out_.resize(at + kHeaderBytes + size);
  PutLength(out_.data() + at, static_cast<uint32_t>(size));
  fill(out_.data() + at + kHeaderBytes);
  return Flush();
}

bool FrameLink::Send(std::string_view payload) {
  return Send(payload.size(), [&](char* p) { std::memcpy(p, payload.data(), payload.size()); });
}

bool FrameLink::Unsend(size_t bytes) {
  if (pending_bytes() < bytes) return false;
  out_.resize(out_.size() - bytes);
  return true;
}

bool FrameLink::Flush() {
  if (broken()) return false;
  while (out_off_ < out_.size()) {
    // MSG_NOSIGNAL: a peer that went away is an error here, not a SIGPIPE.
    const ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
    if (n > 0) {
      out_off_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return Fail(Unavailable(std::string("cannot write to the link: ") + std::strerror(errno)));
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > (1 << 20) && out_off_ * 2 > out_.size()) {
    out_.erase(0, out_off_);  // keep a long-blocked queue from growing without bound at the front
    out_off_ = 0;
  }
  return true;
}

bool FrameLink::HasFrame() const {
  if (in_.size() < kHeaderBytes) return false;
  return in_.size() - kHeaderBytes >= GetLength(in_.data());
}

bool FrameLink::Deliver(const std::function<void(std::string_view)>& on_frame) {
  size_t off = 0;
  while (in_.size() - off >= kHeaderBytes) {
    const uint32_t n = GetLength(in_.data() + off);
    if (n > max_frame_bytes_) {
      in_.erase(0, off);
      return Fail(Status(StatusCode::kDataLoss, "the peer sent a frame of " + std::to_string(n) +
                                                    " bytes, over the limit of " + std::to_string(max_frame_bytes_)));
    }
    if (in_.size() - off - kHeaderBytes < n) break;
    on_frame(std::string_view(in_.data() + off + kHeaderBytes, n));
    off += kHeaderBytes + n;
  }
  in_.erase(0, off);
  return true;
}

bool FrameLink::Read(const std::function<void(std::string_view)>& on_frame) {
  if (broken()) return false;
  while (true) {
    // Room for the rest of the frame being read (a large task arrives in few reads), at least
    // a chunk.
    size_t want = kReadChunk;
    if (in_.size() >= kHeaderBytes) {
      const uint32_t n = GetLength(in_.data());
      if (n <= max_frame_bytes_ && n + kHeaderBytes > in_.size()) {
        want = std::max(want, n + kHeaderBytes - in_.size());
      }
    }
    const size_t at = in_.size();
    in_.resize(at + want);
    const ssize_t n = ::read(fd_, in_.data() + at, want);
    in_.resize(at + static_cast<size_t>(std::max<ssize_t>(n, 0)));
    if (n > 0) {
      if (!Deliver(on_frame)) return false;
      continue;
    }
    if (n == 0) {
      (void)Deliver(on_frame);
      return Fail(Unavailable(in_.empty() ? kClosedByPeer : "the peer closed the link in the middle of a frame"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    return Fail(Unavailable(std::string("cannot read from the link: ") + std::strerror(errno)));
  }
}

}  // namespace loom
