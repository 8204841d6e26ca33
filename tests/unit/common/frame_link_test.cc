// FrameLink over real socketpairs: frames in order, frames split across reads, a queue the
// peer does not read yet, the peer closing, frames over the limit, and Unsend. Waits use
// poll(2) with a deadline; no sleep.
#include "common/frame_link.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

namespace loom {
namespace {

constexpr int64_t kMax = 1 << 24;

struct Pair {
  std::unique_ptr<FrameLink> a, b;
};

Pair MakePair(int64_t max_a = kMax, int64_t max_b = kMax) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  return {std::make_unique<FrameLink>(fds[0], max_a), std::make_unique<FrameLink>(fds[1], max_b)};
}

bool WaitReadable(int fd, int ms = 10000) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

// Reads from `link` until `n` frames arrived (or the link broke, or a wait timed out).
std::vector<std::string> ReadFrames(FrameLink& link, size_t n) {
  std::vector<std::string> got;
  while (got.size() < n) {
    if (!WaitReadable(link.fd())) break;
    if (!link.Read([&](std::string_view f) { got.emplace_back(f); })) break;
  }
  return got;
}

TEST(FrameLinkTest, FramesArriveWholeAndInOrder) {
  Pair p = MakePair();
  ASSERT_TRUE(p.a->Send("first"));
  ASSERT_TRUE(p.a->Send(""));
  ASSERT_TRUE(p.a->Send(std::string(1000, 'x')));
  EXPECT_FALSE(p.a->wants_write());
  auto got = ReadFrames(*p.b, 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], "first");
  EXPECT_EQ(got[1], "");
  EXPECT_EQ(got[2], std::string(1000, 'x'));
  // And back the other way.
  ASSERT_TRUE(p.b->Send("reply"));
  auto back = ReadFrames(*p.a, 1);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0], "reply");
}

TEST(FrameLinkTest, AFrameSplitAcrossWritesIsDeliveredOnceWhole) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  FrameLink reader(fds[0], kMax);
  // A raw peer: the header's first two bytes, then the rest with the payload.
  const std::string payload = "hello";
  const char header[4] = {static_cast<char>(payload.size()), 0, 0, 0};
  ASSERT_EQ(::write(fds[1], header, 2), 2);
  std::vector<std::string> got;
  ASSERT_TRUE(WaitReadable(reader.fd()));
  ASSERT_TRUE(reader.Read([&](std::string_view f) { got.emplace_back(f); }));
  EXPECT_TRUE(got.empty()) << "half a header is no frame";
  EXPECT_FALSE(reader.HasFrame());
  ASSERT_EQ(::write(fds[1], header + 2, 2), 2);
  ASSERT_EQ(::write(fds[1], payload.data(), 3), 3);
  ASSERT_TRUE(WaitReadable(reader.fd()));
  ASSERT_TRUE(reader.Read([&](std::string_view f) { got.emplace_back(f); }));
  EXPECT_TRUE(got.empty()) << "part of a payload is no frame";
  ASSERT_EQ(::write(fds[1], payload.data() + 3, 2), 2);
  ASSERT_TRUE(WaitReadable(reader.fd()));
  ASSERT_TRUE(reader.Read([&](std::string_view f) { got.emplace_back(f); }));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], payload);
  ::close(fds[1]);
}

TEST(FrameLinkTest, WhatThePeerDoesNotReadYetIsQueuedAndWrittenLater) {
  Pair p = MakePair();
  // Far more than a socket buffer holds: the rest waits in the link.
  const std::string big(8 << 20, 'b');
  ASSERT_TRUE(p.a->Send(big));
  ASSERT_TRUE(p.a->Send("after"));
  EXPECT_TRUE(p.a->wants_write());
  EXPECT_GT(p.a->pending_bytes(), 0u);
  std::vector<std::string> got;
  while (got.size() < 2) {
    pollfd fds[2] = {{p.a->fd(), static_cast<short>(p.a->wants_write() ? POLLOUT : 0), 0}, {p.b->fd(), POLLIN, 0}};
    ASSERT_GT(::poll(fds, 2, 10000), 0) << "stalled with " << p.a->pending_bytes() << " bytes queued";
    if (fds[0].revents & POLLOUT) {
      ASSERT_TRUE(p.a->Flush());
    }
    if (fds[1].revents & POLLIN) {
      ASSERT_TRUE(p.b->Read([&](std::string_view f) { got.emplace_back(f); }));
    }
  }
  EXPECT_EQ(got[0].size(), big.size());
  EXPECT_EQ(got[0], big);
  EXPECT_EQ(got[1], "after");
  EXPECT_FALSE(p.a->wants_write());
}

TEST(FrameLinkTest, ThePeerClosingBreaksTheLinkAfterItsLastFrames) {
  Pair p = MakePair();
  ASSERT_TRUE(p.a->Send("last words"));
  p.a.reset();  // closes its end
  std::vector<std::string> got;
  // The frame, then the end of the stream (in the same read or the next one).
  for (int reads = 0; reads < 2 && !p.b->broken(); ++reads) {
    ASSERT_TRUE(WaitReadable(p.b->fd()));
    (void)p.b->Read([&](std::string_view f) { got.emplace_back(f); });
  }
  ASSERT_EQ(got.size(), 1u) << "frames that arrived whole still count";
  EXPECT_EQ(got[0], "last words");
  EXPECT_TRUE(p.b->broken());
  EXPECT_EQ(p.b->error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(p.b->error().message(), FrameLink::kClosedByPeer);
  EXPECT_FALSE(p.b->Send("anyone?"));
}

TEST(FrameLinkTest, ThePeerClosingInTheMiddleOfAFrameSaysSo) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  FrameLink reader(fds[0], kMax);
  const char partial[6] = {10, 0, 0, 0, 'a', 'b'};  // 10 bytes announced, 2 sent
  ASSERT_EQ(::write(fds[1], partial, sizeof partial), static_cast<ssize_t>(sizeof partial));
  ::close(fds[1]);
  for (int reads = 0; reads < 2 && !reader.broken(); ++reads) {
    ASSERT_TRUE(WaitReadable(reader.fd()));
    (void)reader.Read([](std::string_view) { ADD_FAILURE() << "no whole frame was sent"; });
  }
  EXPECT_TRUE(reader.broken());
  EXPECT_NE(reader.error().message().find("in the middle of a frame"), std::string::npos) << reader.error().message();
}

TEST(FrameLinkTest, AFrameOverTheLimitBreaksTheLinkOnBothSides) {
  Pair p = MakePair(/*max_a=*/100, /*max_b=*/10);
  // The sender refuses one over its own limit.
  EXPECT_FALSE(p.a->Send(std::string(101, 'x')));
  EXPECT_EQ(p.a->error().code(), StatusCode::kInvalidArgument);
  // A receiver with a lower limit refuses one the sender allowed.
  Pair q = MakePair(/*max_a=*/100, /*max_b=*/10);
  ASSERT_TRUE(q.a->Send(std::string(11, 'y')));
  ASSERT_TRUE(WaitReadable(q.b->fd()));
  EXPECT_FALSE(q.b->Read([](std::string_view) { ADD_FAILURE() << "a frame over the limit was delivered"; }));
  EXPECT_EQ(q.b->error().code(), StatusCode::kDataLoss);
  EXPECT_NE(q.b->error().message().find("11 bytes"), std::string::npos) << q.b->error().message();
}

TEST(FrameLinkTest, UnsendTakesBackOnlyWhatWasNotWritten) {
  Pair p = MakePair();
  const std::string big(8 << 20, 'b');
  ASSERT_TRUE(p.a->Send(big));  // part of it is in the socket now
  const size_t pending = p.a->pending_bytes();
  ASSERT_GT(pending, 0u);
  EXPECT_FALSE(p.a->Unsend(big.size() + FrameLink::kHeaderBytes)) << "part of that frame was written";
  EXPECT_EQ(p.a->pending_bytes(), pending);
  ASSERT_TRUE(p.a->Send("queued behind it"));
  const size_t second = std::string("queued behind it").size() + FrameLink::kHeaderBytes;
  EXPECT_TRUE(p.a->Unsend(second));
  EXPECT_EQ(p.a->pending_bytes(), pending);
  // The peer gets the big frame alone.
  std::vector<std::string> got;
  while (p.a->wants_write() || got.empty()) {
    pollfd fds[2] = {{p.a->fd(), static_cast<short>(p.a->wants_write() ? POLLOUT : 0), 0}, {p.b->fd(), POLLIN, 0}};
    ASSERT_GT(::poll(fds, 2, 10000), 0);
    if (fds[0].revents & POLLOUT) {
      ASSERT_TRUE(p.a->Flush());
    }
    if (fds[1].revents & POLLIN) {
      ASSERT_TRUE(p.b->Read([&](std::string_view f) { got.emplace_back(f); }));
    }
  }
  p.a.reset();
  ASSERT_TRUE(WaitReadable(p.b->fd()));
  (void)p.b->Read([&](std::string_view f) { got.emplace_back(f); });
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].size(), big.size());
}

}  // namespace
}  // namespace loom
