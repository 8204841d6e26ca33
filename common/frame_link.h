// FrameLink: length-prefixed messages over a connected stream socket (one end of a
// socketpair(2)), with no thread of its own. The endpoint talks to the workers it starts itself
// over one each: a message then costs a write(2) on one side and a read(2) on the other, where a
// ZeroMQ socket also wakes an I/O thread in each process (what dominates when many endpoints
// share a host: docs/BENCHMARKS.md, "Twelfth pass").
//
// A frame is [u32 payload length, little endian][payload]. The descriptor is non-blocking: Send
// queues what the socket does not take at once, and Flush writes more of it when poll(2) says
// the socket is writable (wants_write()). Read returns every whole frame that has arrived.
// A frame longer than `max_frame_bytes` breaks the link (the peer is not a Loom process, or is
// broken): a stream cannot be resynchronised.
//
// Owns the descriptor (closed on destruction). Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace loom {

class FrameLink {
 public:
  static constexpr size_t kHeaderBytes = 4;
  // error().message() when the peer closed the link between frames (kUnavailable).
  static constexpr const char* kClosedByPeer = "the peer closed the link";

  // Takes ownership of `fd` and makes it non-blocking.
  FrameLink(int fd, int64_t max_frame_bytes);
  ~FrameLink();
  FrameLink(const FrameLink&) = delete;
  FrameLink& operator=(const FrameLink&) = delete;

  int fd() const { return fd_; }
  bool broken() const { return !error_.ok(); }
  // Why the link broke: the peer closed it, a system call failed, or a frame was too long.
  const Status& error() const { return error_; }
  // Bytes queued and not written yet.
  size_t pending_bytes() const { return out_.size(); }
  bool wants_write() const { return pending_bytes() > 0; }

  // Appends a frame holding `size` bytes that `fill` writes (a serializer writing in place),
  // then writes what the socket takes now. False once the link is broken.
  bool Send(size_t size, const std::function<void(char*)>& fill);
  bool Send(std::string_view payload);
  // Removes the last `bytes` queued if none of them was written yet (a frame the caller gives
  // up on sending this time); false, removing nothing, if some were.
  bool Unsend(size_t bytes);
  // Writes queued bytes until the socket would block. False once the link is broken.
  bool Flush();
  // Reads what has arrived (until a read comes back short or would block) and calls `on_frame`
  // for each whole frame, in order; the view is valid during the call only. False once the
  // link is broken (frames that arrived whole before the break were still delivered); the end
  // of the stream may be seen by the call after the one that read the last bytes.
  bool Read(const std::function<void(std::string_view)>& on_frame);
  // Whether a whole frame waits in the read buffer (delivered by the next Read).
  bool HasFrame() const;

 private:
  bool Fail(Status s);
  // Delivers whole frames from in_, then drops what they used.
  bool Deliver(const std::function<void(std::string_view)>& on_frame);

  // Bytes [begin, end) of `data`, which holds `cap`; grown by doubling, never zero-filled
  // (a read goes into the room after `end`), and given back when it empties past 1 MiB.
  struct Buffer {
    std::unique_ptr<char[]> data;
    size_t begin = 0, end = 0, cap = 0;
    size_t size() const { return end - begin; }
    const char* head() const { return data.get() + begin; }
    // Room for `n` more bytes at the end; returns where they go.
    char* Reserve(size_t n);
    void Consume(size_t n);
  };

  int fd_;
  const int64_t max_frame_bytes_;
  Buffer out_;
  Buffer in_;
  Status error_;
};

}  // namespace loom
