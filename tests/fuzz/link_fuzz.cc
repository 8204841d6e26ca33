// libFuzzer target: what an endpoint reads from the socket of a worker it started
// (common/frame_link.h). A worker runs user kernels, so its bytes are not trusted. The input is a
// sequence of chunks, each [length byte][that many bytes], written raw into one end of a
// socketpair and read by a FrameLink at the other after each write; every frame it delivers is
// parsed as a WorkerEnvelope, as the endpoint does. Then the same payload bytes go through a
// FrameLink writer as frames and must come out whole and in order. Must never crash, hang, leak
// or deliver a frame over the limit.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/frame_link.h"
#include "loom.pb.h"

namespace {

constexpr int64_t kMaxFrame = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  loom::FrameLink reader(fds[0], kMaxFrame);
  auto on_frame = [](std::string_view f) {
    if (static_cast<int64_t>(f.size()) > kMaxFrame) std::abort();
    loom::v1::WorkerEnvelope e;
    (void)e.ParseFromArray(f.data(), static_cast<int>(f.size()));
  };
  std::vector<std::string> chunks;
  for (size_t i = 0; i < size;) {
    const size_t n = std::min<size_t>(data[i], size - i - 1);
    chunks.emplace_back(reinterpret_cast<const char*>(data + i + 1), n);
    i += 1 + n;
  }
  for (const auto& c : chunks) {
    if (reader.broken()) break;
    if (!c.empty() && ::write(fds[1], c.data(), c.size()) != static_cast<ssize_t>(c.size())) std::abort();
    (void)reader.Read(on_frame);
  }
  ::close(fds[1]);
  for (int reads = 0; reads < 3 && !reader.broken(); ++reads) (void)reader.Read(on_frame);
  if (!reader.broken()) std::abort();  // the peer closed: the link must say so

  // The chunks as frames through a writer: each arrives whole, in order.
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) std::abort();
  loom::FrameLink out(pair[0], kMaxFrame), in(pair[1], kMaxFrame);
  size_t got = 0;
  for (const auto& c : chunks) {
    if (!out.Send(c)) std::abort();
    while (out.wants_write()) {
      if (!in.Read([&](std::string_view f) {
            if (got >= chunks.size() || f != chunks[got]) std::abort();
            ++got;
          })) {
        std::abort();
      }
      if (!out.Flush()) std::abort();
    }
  }
  while (got < chunks.size()) {
    if (!in.Read([&](std::string_view f) {
          if (f != chunks[got]) std::abort();
          ++got;
        })) {
      std::abort();
    }
  }
  return 0;
}
