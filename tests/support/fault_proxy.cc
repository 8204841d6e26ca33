#include "tests/support/fault_proxy.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <optional>
#include <system_error>
#include <utility>

namespace loom::testing {
namespace {

// Stop reading a side while this much of its data waits to be written: a slow or delayed
// peer pushes back on the sender instead of growing the proxy without bound.
constexpr size_t kMaxQueuedBytes = size_t{4} << 20;
constexpr size_t kReadBytes = size_t{64} * 1024;

// generic_category().message, not strerror: this runs on the proxy thread beside the test's.
std::string ErrnoText(int err) { return std::generic_category().message(err); }
std::string Errno(const std::string& what) { return what + ": " + ErrnoText(errno); }

bool WouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

// Closes with RST instead of FIN: SO_LINGER {on, 0 s} makes close() abort the connection.
void AbortFd(int& fd) {
  if (fd < 0) return;
  linger lg{};
  lg.l_onoff = 1;
  lg.l_linger = 0;
  (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
  fd = -1;
}

void CloseFd(int& fd) {
  if (fd < 0) return;
  ::close(fd);
  fd = -1;
}

// Latency matters more than segment count for a fault proxy: do not let Nagle hold chunks back.
void SetNoDelay(int fd) {
  int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

struct FaultProxy::Connection {
  struct Chunk {
    std::string data;
    size_t offset = 0;  // bytes of `data` already written
    Clock::time_point due;
  };
  // One direction of the connection.
  struct Pipe {
    std::deque<Chunk> queue;
    size_t queued = 0;  // bytes in `queue` not yet written
    bool eof = false;   // the source sent FIN; passed on once `queue` drains
    bool shut = false;  // FIN passed on: shutdown(SHUT_WR) on the destination
  };

  [[nodiscard]] bool closed() const { return client < 0 && target < 0; }

  int client = -1;
  int target = -1;
  bool connecting = false;  // the connect to the target is in progress
  Pipe up;                  // client -> target
  Pipe down;                // target -> client
};

FaultProxy::FaultProxy(std::string target_host, int target_port)
    : target_host_(std::move(target_host)), target_port_(target_port) {}

FaultProxy::~FaultProxy() { Stop(); }

std::string FaultProxy::endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }

Status FaultProxy::Start() {
  LOOM_CHECK(listen_fd_ < 0 && !thread_.joinable());

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(target_port_);
  if (int rc = ::getaddrinfo(target_host_.c_str(), port.c_str(), &hints, &found); rc != 0 || found == nullptr) {
    return InvalidArgument("fault proxy: cannot resolve target '" + target_host_ + "': " + ::gai_strerror(rc) +
                           "; pass an address such as 127.0.0.1");
  }
  std::memcpy(&target_addr_, found->ai_addr, found->ai_addrlen);
  target_addr_len_ = found->ai_addrlen;
  ::freeaddrinfo(found);

  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Internal(Errno("fault proxy: socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, SOMAXCONN) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Status st = Internal(Errno("fault proxy: listen on 127.0.0.1:0"));
    CloseFd(fd);
    return st;
  }
  int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    Status st = Internal(Errno("fault proxy: eventfd"));
    CloseFd(fd);
    return st;
  }
  listen_fd_ = fd;
  port_ = ntohs(addr.sin_port);
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_fd_ = wake;
    running_ = true;
    stop_ = false;
  }
  spdlog::debug("fault proxy 127.0.0.1:{} -> {}:{} started", port_, target_host_, target_port_);
  thread_ = std::thread(&FaultProxy::Run, this);
  return Status::Ok();
}

void FaultProxy::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    Wake();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  CloseFd(listen_fd_);
  CloseFd(wake_fd_);
}

void FaultProxy::Pass() { Command(Mode::kPass, std::chrono::milliseconds(0), false); }
void FaultProxy::Delay(std::chrono::milliseconds delay) { Command(Mode::kDelay, delay, false); }
void FaultProxy::Reset() { Command(Mode::kPass, std::chrono::milliseconds(0), true); }
void FaultProxy::BlackHole() { Command(Mode::kBlackHole, std::chrono::milliseconds(0), false); }

FaultProxy::Counters FaultProxy::counters() const {
  Counters c;
  c.connections_accepted = accepted_.load();
  c.open_connections = open_.load();
  c.bytes_to_target = to_target_.load();
  c.bytes_to_client = to_client_.load();
  c.resets = resets_.load();
  return c;
}

void FaultProxy::Command(Mode mode, std::chrono::milliseconds delay, bool reset) {
  std::unique_lock<std::mutex> lock(mu_);
  mode_ = mode;
  delay_ = delay;
  if (reset) reset_requested_ = true;
  const uint64_t mine = ++requested_;
  // Not running: the thread applies it when it starts, and there is nothing to reset yet.
  if (!running_) return;
  Wake();
  applied_cv_.wait(lock, [&] { return applied_ >= mine || !running_; });
}

// REQUIRES: mu_ held (so Stop() cannot close wake_fd_ under us).
void FaultProxy::Wake() {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void FaultProxy::Apply() {
  Mode mode;
  std::chrono::milliseconds delay;
  bool reset;
  uint64_t requested;
  {
    std::lock_guard<std::mutex> lock(mu_);
    mode = mode_;
    delay = delay_;
    reset = std::exchange(reset_requested_, false);
    requested = requested_;
  }
  if (reset || (cur_mode_ == Mode::kBlackHole && mode != Mode::kBlackHole)) ResetAll();
  cur_mode_ = mode;
  cur_delay_ = delay;
  {
    std::lock_guard<std::mutex> lock(mu_);
    applied_ = requested;
  }
  applied_cv_.notify_all();
}

void FaultProxy::Run() {
  struct Watch {
    Connection* conn;
    bool client_side;
  };
  std::vector<pollfd> fds;
  std::vector<Watch> watches;  // watches[i] belongs to fds[i + 2]
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
    Apply();

    fds.clear();
    watches.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    const auto now = Clock::now();
    std::optional<Clock::time_point> next_due;
    // Wants POLLOUT when the head chunk is due (Flush() stopped on EAGAIN); otherwise wakes the
    // poll when it becomes due.
    auto want_write = [&](const Connection::Pipe& p) -> int {
      if (p.queue.empty()) return 0;
      if (p.queue.front().due <= now) return POLLOUT;
      next_due = next_due ? std::min(*next_due, p.queue.front().due) : p.queue.front().due;
      return 0;
    };
    for (auto& c : conns_) {
      int client_events = 0;
      int target_events = 0;
      if (cur_mode_ == Mode::kBlackHole) {
        // Read nothing, so nothing crosses; only notice peers that go away, to free their fds.
        client_events = POLLRDHUP;
        target_events = POLLRDHUP;
      } else {
        if (!c->up.eof && c->up.queued < kMaxQueuedBytes) client_events |= POLLIN;
        client_events |= want_write(c->down);
        if (c->connecting) {
          target_events = POLLOUT;
        } else {
          if (!c->down.eof && c->down.queued < kMaxQueuedBytes) target_events |= POLLIN;
          target_events |= want_write(c->up);
        }
      }
      if (c->client >= 0) {
        fds.push_back({c->client, static_cast<short>(client_events), 0});
        watches.push_back({c.get(), true});
      }
      if (c->target >= 0) {
        fds.push_back({c->target, static_cast<short>(target_events), 0});
        watches.push_back({c.get(), false});
      }
    }
    int timeout_ms = -1;
    if (next_due) {
      // Round up: waking before the chunk is due would only spin.
      timeout_ms =
          static_cast<int>(std::max<int64_t>(0, std::chrono::ceil<std::chrono::milliseconds>(*next_due - now).count()));
    }

    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("fault proxy 127.0.0.1:{}: {}; it stops forwarding", port_, Errno("poll"));
      break;
    }
    if (fds[0].revents != 0) {
      uint64_t drained;
      (void)!::read(wake_fd_, &drained, sizeof drained);
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      const short revents = fds[i].revents;
      if (revents == 0) continue;
      Connection& c = *watches[i - 2].conn;
      const bool client_side = watches[i - 2].client_side;
      // An earlier event may have closed this side already.
      if ((client_side ? c.client : c.target) != fds[i].fd) continue;
      if (cur_mode_ == Mode::kBlackHole) {
        HandleBlackHoleEvent(c, client_side, revents);
      } else {
        HandleEvent(c, client_side, revents);
      }
    }
    if (fds[1].revents != 0) AcceptAll();
    if (cur_mode_ != Mode::kBlackHole) {
      for (auto& c : conns_) {
        Flush(*c);
        FinishHalfCloses(*c);
      }
    }
    std::erase_if(conns_, [](const std::unique_ptr<Connection>& c) { return c->closed(); });
    open_ = static_cast<int64_t>(conns_.size());
  }

  for (auto& c : conns_) {
    CloseFd(c->client);
    CloseFd(c->target);
  }
  conns_.clear();
  open_ = 0;
  spdlog::debug("fault proxy 127.0.0.1:{} stopped", port_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
  }
  applied_cv_.notify_all();
}

void FaultProxy::AcceptAll() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        spdlog::warn("fault proxy 127.0.0.1:{}: {}", port_, Errno("accept"));
      }
      return;
    }
    ++accepted_;
    SetNoDelay(fd);
    auto c = std::make_unique<Connection>();
    c->client = fd;
    // A dead route: the connection is accepted but never reaches the target.
    if (cur_mode_ != Mode::kBlackHole) StartTargetConnect(*c);
    spdlog::debug("fault proxy 127.0.0.1:{}: accepted a connection{}", port_,
                  cur_mode_ == Mode::kBlackHole ? " into the black hole" : "");
    if (!c->closed()) conns_.push_back(std::move(c));
  }
}

void FaultProxy::StartTargetConnect(Connection& c) {
  c.target = ::socket(target_addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.target < 0) {
    spdlog::warn("fault proxy 127.0.0.1:{}: {}", port_, Errno("socket"));
    Abort(c);
    return;
  }
  SetNoDelay(c.target);
  if (::connect(c.target, reinterpret_cast<const sockaddr*>(&target_addr_), target_addr_len_) == 0) return;
  if (errno == EINPROGRESS) {
    c.connecting = true;
    return;
  }
  spdlog::debug("fault proxy 127.0.0.1:{}: {}", port_, Errno("connect to target"));
  Abort(c);
}

void FaultProxy::HandleEvent(Connection& c, bool client_side, short revents) {
  if (!client_side && c.connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(c.target, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      // The client sees the refused target as a reset of its own connection.
      spdlog::debug("fault proxy 127.0.0.1:{}: connect to {}:{}: {}", port_, target_host_, target_port_,
                    ErrnoText(err));
      Abort(c);
      return;
    }
    c.connecting = false;
    return;
  }
  if ((revents & POLLERR) != 0) {
    // A reset on one side is passed on as a reset on the other.
    Abort(c);
    return;
  }
  if ((revents & (POLLIN | POLLHUP)) != 0) ReadInto(c, client_side);
  // POLLOUT: Flush() writes after every poll.
}

void FaultProxy::HandleBlackHoleEvent(Connection& c, bool client_side, short revents) {
  // A peer that closed or reset goes away on its side only: nothing crosses a dead route.
  if ((revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) CloseFd(client_side ? c.client : c.target);
}

void FaultProxy::ReadInto(Connection& c, bool client_side) {
  Connection::Pipe& pipe = client_side ? c.up : c.down;
  const int fd = client_side ? c.client : c.target;
  if (pipe.eof) return;
  // Read into a scratch buffer and queue an exact copy: a chunk must not pin kReadBytes of
  // capacity when many small ones (heartbeats) wait out a delay.
  std::array<char, kReadBytes> buf;
  const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  if (n > 0) {
    const auto delay = cur_mode_ == Mode::kDelay ? cur_delay_ : std::chrono::milliseconds(0);
    pipe.queue.push_back({std::string(buf.data(), static_cast<size_t>(n)), 0, Clock::now() + delay});
    pipe.queued += static_cast<size_t>(n);
  } else if (n == 0) {
    pipe.eof = true;
  } else if (!WouldBlock(errno)) {
    spdlog::debug("fault proxy 127.0.0.1:{}: {}", port_, Errno(client_side ? "recv from client" : "recv from target"));
    Abort(c);
  }
}

void FaultProxy::Flush(Connection& c) {
  if (c.closed()) return;
  const auto now = Clock::now();
  for (const bool upward : {true, false}) {
    Connection::Pipe& pipe = upward ? c.up : c.down;
    const int fd = upward ? c.target : c.client;
    if (fd < 0 || (upward && c.connecting)) continue;
    while (!pipe.queue.empty() && pipe.queue.front().due <= now) {
      Connection::Chunk& chunk = pipe.queue.front();
      const ssize_t n = ::send(fd, chunk.data.data() + chunk.offset, chunk.data.size() - chunk.offset, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        spdlog::debug("fault proxy 127.0.0.1:{}: {}", port_, Errno(upward ? "send to target" : "send to client"));
        Abort(c);
        return;
      }
      chunk.offset += static_cast<size_t>(n);
      pipe.queued -= static_cast<size_t>(n);
      (upward ? to_target_ : to_client_) += n;
      if (chunk.offset == chunk.data.size()) pipe.queue.pop_front();
    }
  }
}

void FaultProxy::FinishHalfCloses(Connection& c) {
  if (c.closed() || c.connecting) return;
  if (c.up.eof && c.up.queue.empty() && !c.up.shut) {
    ::shutdown(c.target, SHUT_WR);
    c.up.shut = true;
  }
  if (c.down.eof && c.down.queue.empty() && !c.down.shut) {
    ::shutdown(c.client, SHUT_WR);
    c.down.shut = true;
  }
  if (c.up.shut && c.down.shut) {
    CloseFd(c.client);
    CloseFd(c.target);
  }
}

void FaultProxy::Abort(Connection& c) {
  AbortFd(c.client);
  AbortFd(c.target);
}

void FaultProxy::ResetAll() {
  for (auto& c : conns_) {
    if (c->closed()) continue;
    Abort(*c);
    ++resets_;
  }
  if (!conns_.empty()) spdlog::debug("fault proxy 127.0.0.1:{}: reset {} connection(s)", port_, conns_.size());
  conns_.clear();
  open_ = 0;
}

}  // namespace loom::testing
