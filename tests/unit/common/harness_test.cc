// The fault-injection harness itself: FaultProxy against a real echo server (and a ZeroMQ
// REQ/REP pair) on loopback, DeliveryChecker on hand-made records.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "common/util.h"
#include "loom.pb.h"
#include "tests/support/delivery_checker.h"
#include "tests/support/fault_proxy.h"
#include "tests/support/test_env.h"

namespace loom::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kTimeout(10000);  // for things that must happen
constexpr milliseconds kQuiet(300);      // how long "nothing arrives" is watched for

// An owned socket fd.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Connects `fd` to 127.0.0.1:port; returns 0 or the errno of the failed connect.
int TryConnectLoopback(const Fd& fd, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
}

Fd ConnectLoopback(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (int err = TryConnectLoopback(fd, port); err != 0) {
    ADD_FAILURE() << "connect to 127.0.0.1:" << port << ": " << std::generic_category().message(err);
  }
  return fd;
}

int MillisLeft(Clock::time_point deadline) {
  return static_cast<int>(std::max<int64_t>(0, std::chrono::ceil<milliseconds>(deadline - Clock::now()).count()));
}

// What a client read: data, then how the stream ended (if it did).
struct Received {
  std::string data;
  bool eof = false;
  int error = 0;  // errno of a failed recv, e.g. ECONNRESET
  bool ended() const { return eof || error != 0; }
};

// Sends `payload` and reads until `want` bytes came back, the stream ended, or `deadline`;
// sending and reading interleave so neither side's buffers can deadlock the exchange.
Received Exchange(int fd, const std::string& payload, size_t want, Clock::time_point deadline) {
  Received r;
  size_t sent = 0;
  while (r.data.size() < want && !r.ended()) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < payload.size() ? POLLOUT : 0)), 0};
    const int n = ::poll(&p, 1, MillisLeft(deadline));
    if (n == 0) break;  // deadline
    if (n < 0) continue;
    if ((p.revents & POLLOUT) != 0) {
      ssize_t w = ::send(fd, payload.data() + sent, payload.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) sent += static_cast<size_t>(w);
    }
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      char buf[65536];
      ssize_t got = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (got > 0) {
        r.data.append(buf, static_cast<size_t>(got));
      } else if (got == 0) {
        r.eof = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        r.error = errno;
      }
    }
  }
  return r;
}

Received EchoRoundTrip(int fd, const std::string& payload) {
  return Exchange(fd, payload, payload.size(), Clock::now() + kTimeout);
}

// Reads whatever arrives within `window` (absence of data is what the caller checks).
Received ReadFor(int fd, milliseconds window) { return Exchange(fd, "", SIZE_MAX, Clock::now() + window); }

// Reads until the stream ends or kTimeout passes.
Received ReadUntilEnd(int fd) { return Exchange(fd, "", SIZE_MAX, Clock::now() + kTimeout); }

// A TCP echo server on 127.0.0.1 with a thread of its own; counts what it saw.
class EchoServer {
 public:
  EchoServer() {
    listen_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_.get(), 64) != 0 ||
        ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "echo server: " << std::generic_category().message(errno);
    }
    port_ = ntohs(addr.sin_port);
    wake_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    thread_ = std::thread([this] { Run(); });
  }
  ~EchoServer() {
    const uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
    thread_.join();
  }
  int port() const { return port_; }
  int64_t connections() const { return connections_; }
  int64_t bytes_received() const { return bytes_received_; }
  int64_t resets_seen() const { return resets_seen_; }

 private:
  struct Conn {
    Fd fd;
    std::string pending;  // received, not yet echoed
  };

  void Run() {
    std::vector<Conn> conns;
    for (;;) {
      std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}, {listen_.get(), POLLIN, 0}};
      for (const Conn& c : conns) {
        fds.push_back({c.fd.get(), static_cast<short>(c.pending.empty() ? POLLIN : POLLOUT), 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents != 0) return;
      std::vector<bool> dead(conns.size(), false);
      for (size_t i = 0; i < conns.size(); ++i) {
        const short rev = fds[i + 2].revents;
        Conn& c = conns[i];
        if ((rev & POLLOUT) != 0) {
          ssize_t w = ::send(c.fd.get(), c.pending.data(), c.pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (w > 0) c.pending.erase(0, static_cast<size_t>(w));
        }
        if ((rev & (POLLIN | POLLHUP | POLLERR)) != 0) {
          char buf[65536];
          ssize_t got = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
          if (got > 0) {
            bytes_received_ += got;
            c.pending.append(buf, static_cast<size_t>(got));
          } else if (got == 0) {
            dead[i] = true;
          } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            if (errno == ECONNRESET) ++resets_seen_;
            dead[i] = true;
          }
        }
      }
      for (size_t i = conns.size(); i-- > 0;) {
        if (dead[i]) conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
      }
      if (fds[1].revents != 0) {
        for (int fd; (fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          ++connections_;
          conns.push_back({Fd(fd), ""});
        }
      }
    }
  }

  Fd listen_;
  Fd wake_;
  int port_ = 0;
  std::atomic<int64_t> connections_{0};
  std::atomic<int64_t> bytes_received_{0};
  std::atomic<int64_t> resets_seen_{0};
  std::thread thread_;
};

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& ch : s) ch = static_cast<char>(rng() & 0xff);
  return s;
}

class FaultProxyTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(proxy_.Start().ok()); }

  EchoServer echo_;
  FaultProxy proxy_{"127.0.0.1", echo_.port()};
};

TEST_F(FaultProxyTest, PassForwardsBytesBothWaysUnchanged) {
  Fd client = ConnectLoopback(proxy_.port());
  EXPECT_EQ(EchoRoundTrip(client.get(), "hello").data, "hello");
  // Larger than the socket buffers, so it crosses in many chunks and under back-pressure.
  const std::string big = RandomBytes(3 << 20, 7);
  Received r = EchoRoundTrip(client.get(), big);
  ASSERT_EQ(r.data.size(), big.size());
  EXPECT_TRUE(r.data == big);

  // The proxy counts a write after it returns, so the counter may trail what the client saw.
  const auto total = static_cast<int64_t>(big.size() + 5);
  EXPECT_TRUE(WaitFor([&] { return proxy_.counters().bytes_to_client == total; }, kTimeout));
  const FaultProxy::Counters c = proxy_.counters();
  EXPECT_EQ(c.connections_accepted, 1);
  EXPECT_EQ(c.open_connections, 1);
  EXPECT_EQ(c.bytes_to_target, total);
  EXPECT_EQ(c.bytes_to_client, total);
  EXPECT_EQ(c.resets, 0);
  EXPECT_EQ(echo_.bytes_received(), static_cast<int64_t>(big.size() + 5));
}

TEST_F(FaultProxyTest, ClosingTheClientClosesTheTargetConnection) {
  {
    Fd client = ConnectLoopback(proxy_.port());
    EXPECT_EQ(EchoRoundTrip(client.get(), "x").data, "x");
  }
  EXPECT_TRUE(WaitFor([&] { return proxy_.counters().open_connections == 0; }, kTimeout));
  EXPECT_EQ(echo_.resets_seen(), 0);  // a FIN, passed on as a FIN
}

TEST_F(FaultProxyTest, DelayHoldsEveryChunkForAtLeastTheDelayInOrder) {
  constexpr milliseconds kDelay(400);
  Fd client = ConnectLoopback(proxy_.port());
  proxy_.Delay(kDelay);

  const auto start = Clock::now();
  Received r = EchoRoundTrip(client.get(), "ping");
  const auto took = Clock::now() - start;
  EXPECT_EQ(r.data, "ping");
  // Delayed on the way to the echo server and again on the way back.
  EXPECT_GE(took, 2 * kDelay);

  // Chunks read before Pass() keep their place: "first" is not overtaken by "second".
  ASSERT_EQ(::send(client.get(), "first", 5, MSG_NOSIGNAL), 5);
  proxy_.Pass();
  r = Exchange(client.get(), "second", 11, Clock::now() + kTimeout);
  EXPECT_EQ(r.data, "firstsecond");

  const auto pass_start = Clock::now();
  EXPECT_EQ(EchoRoundTrip(client.get(), "fast").data, "fast");
  EXPECT_LT(Clock::now() - pass_start, kDelay);
}

TEST_F(FaultProxyTest, ResetSendsRstToBothSidesAndNewConnectionsPass) {
  Fd client = ConnectLoopback(proxy_.port());
  ASSERT_EQ(EchoRoundTrip(client.get(), "before").data, "before");

  proxy_.Reset();
  Received r = ReadUntilEnd(client.get());
  EXPECT_EQ(r.error, ECONNRESET) << "eof=" << r.eof;
  EXPECT_TRUE(WaitFor([&] { return echo_.resets_seen() == 1; }, kTimeout));
  EXPECT_EQ(proxy_.counters().resets, 1);
  EXPECT_EQ(proxy_.counters().open_connections, 0);

  Fd again = ConnectLoopback(proxy_.port());
  EXPECT_EQ(EchoRoundTrip(again.get(), "after").data, "after");
  EXPECT_EQ(proxy_.counters().connections_accepted, 2);
  EXPECT_EQ(echo_.connections(), 2);
}

TEST_F(FaultProxyTest, BlackHoleForwardsNothingAndPassNeedsANewConnection) {
  Fd old_conn = ConnectLoopback(proxy_.port());
  ASSERT_EQ(EchoRoundTrip(old_conn.get(), "hello").data, "hello");

  proxy_.BlackHole();
  const FaultProxy::Counters before = proxy_.counters();  // current once a setter returns
  EXPECT_EQ(before.bytes_to_client, 5);
  ASSERT_EQ(::send(old_conn.get(), "lost", 4, MSG_NOSIGNAL), 4);
  // A new connection is accepted, but never reaches the target.
  Fd during = ConnectLoopback(proxy_.port());
  ASSERT_EQ(::send(during.get(), "also lost", 9, MSG_NOSIGNAL), 9);
  EXPECT_TRUE(ReadFor(old_conn.get(), kQuiet).data.empty());
  EXPECT_TRUE(ReadFor(during.get(), kQuiet).data.empty());
  EXPECT_EQ(echo_.bytes_received(), 5);
  EXPECT_EQ(echo_.connections(), 1);
  FaultProxy::Counters c = proxy_.counters();
  EXPECT_EQ(c.connections_accepted, 2);
  EXPECT_EQ(c.bytes_to_target, before.bytes_to_target);
  EXPECT_EQ(c.bytes_to_client, before.bytes_to_client);

  // The route comes back: the connections it held are dead, new ones work.
  proxy_.Pass();
  Received r = ReadUntilEnd(old_conn.get());
  EXPECT_TRUE(r.data.empty());
  EXPECT_EQ(r.error, ECONNRESET) << "eof=" << r.eof;
  r = ReadUntilEnd(during.get());
  EXPECT_EQ(r.error, ECONNRESET) << "eof=" << r.eof;
  EXPECT_TRUE(WaitFor([&] { return echo_.resets_seen() == 1; }, kTimeout));
  EXPECT_EQ(proxy_.counters().resets, 2);

  Fd fresh = ConnectLoopback(proxy_.port());
  EXPECT_EQ(EchoRoundTrip(fresh.get(), "back").data, "back");
  EXPECT_EQ(echo_.bytes_received(), 5 + 4);  // nothing sent into the black hole ever arrived
  EXPECT_EQ(echo_.connections(), 2);
}

TEST(FaultProxyTargetTest, ClientIsResetWhenTheTargetRefuses) {
  FaultProxy proxy("127.0.0.1", FreeLoopbackPort());  // nothing listens there
  ASSERT_TRUE(proxy.Start().ok());
  Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  // The reset can come so fast that connect() itself reports it; otherwise the first read does.
  if (int err = TryConnectLoopback(client, proxy.port()); err != 0) {
    EXPECT_EQ(err, ECONNRESET) << std::generic_category().message(err);
  } else {
    Received r = ReadUntilEnd(client.get());
    EXPECT_EQ(r.error, ECONNRESET) << "eof=" << r.eof;
  }
  EXPECT_EQ(proxy.counters().resets, 0);  // not a fault the test injected
}

TEST(FaultProxyTargetTest, StartFailsForATargetThatDoesNotResolve) {
  FaultProxy proxy("not an address", 1);
  Status st = proxy.Start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
}

TEST(FaultProxyZmqTest, CarriesZeroMqAndZeroMqReconnectsAfterReset) {
  zmq::context_t ctx;
  zmq::socket_t rep(ctx, zmq::socket_type::rep);
  rep.set(zmq::sockopt::linger, 0);
  rep.set(zmq::sockopt::rcvtimeo, static_cast<int>(kTimeout.count()));
  rep.bind("tcp://127.0.0.1:*");
  const std::string bound = rep.get(zmq::sockopt::last_endpoint);
  const int rep_port = std::stoi(bound.substr(bound.rfind(':') + 1));

  FaultProxy proxy("127.0.0.1", rep_port);
  ASSERT_TRUE(proxy.Start().ok());
  zmq::socket_t req(ctx, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  req.set(zmq::sockopt::rcvtimeo, static_cast<int>(kTimeout.count()));
  req.connect(proxy.endpoint());

  auto round_trip = [&](const std::string& body) {
    zmq::message_t msg;
    if (!req.send(zmq::buffer(body), zmq::send_flags::none)) return std::string("<send failed>");
    if (!rep.recv(msg, zmq::recv_flags::none)) return std::string("<request lost>");
    std::string got = msg.to_string();
    if (!rep.send(zmq::buffer("re:" + got), zmq::send_flags::none)) return std::string("<reply failed>");
    if (!req.recv(msg, zmq::recv_flags::none)) return std::string("<reply lost>");
    return msg.to_string();
  };

  EXPECT_EQ(round_trip("one"), "re:one");
  proxy.Reset();
  // ZeroMQ notices the reset and reconnects on its own; send once it has, so the request is not
  // written into the dying connection.
  ASSERT_TRUE(WaitFor([&] { return proxy.counters().connections_accepted == 2; }, kTimeout));
  EXPECT_EQ(round_trip("two"), "re:two");
  EXPECT_EQ(proxy.counters().resets, 1);
}

// ------------------------------------------------------------------ DeliveryChecker

v1::Value Int(int64_t v) {
  v1::Value value;
  value.set_int_value(v);
  return value;
}

v1::TaskRecord Succeeded(const std::string& id, int64_t result, int attempts = 1) {
  v1::TaskRecord r;
  r.set_id(id);
  r.set_state(v1::TASK_STATE_SUCCESS);
  *r.mutable_result() = Int(result);
  r.set_attempts(attempts);
  return r;
}

v1::TaskRecord Failed(const std::string& id, v1::FailureKind kind, const std::string& error) {
  v1::TaskRecord r;
  r.set_id(id);
  r.set_state(v1::TASK_STATE_FAILED);
  r.set_failure(kind);
  r.set_error(error);
  r.set_attempts(1);
  return r;
}

v1::TaskRecord WithState(const std::string& id, v1::TaskState state) {
  v1::TaskRecord r;
  r.set_id(id);
  r.set_state(state);
  return r;
}

TEST(DeliveryCheckerTest, CleanRunIsOkAndRereadsOfOneRecordAreNotDuplicates) {
  DeliveryChecker checker;
  checker.Acknowledged("a", Int(1));
  checker.Acknowledged("b");
  checker.Observed(WithState("a", v1::TASK_STATE_RUNNING));
  for (int i = 0; i < 3; ++i) {
    v1::TaskRecord a = Succeeded("a", 1);
    a.add_timestamps()->set_stage(i == 0 ? "success" : "reread");  // read paths differ in detail
    checker.Observed(a);
    checker.Observed(Succeeded("b", 99));
  }
  const DeliveryChecker::Report r = checker.Check(3);
  EXPECT_TRUE(r.ok()) << r.Summary();
  EXPECT_EQ(r.acknowledged, 2);
  EXPECT_EQ(r.succeeded, 2);
  EXPECT_EQ(r.failed_total(), 0);
  EXPECT_EQ(r.duplicated, 0);
  EXPECT_TRUE(r.examples.empty());
}

TEST(DeliveryCheckerTest, CountsFailuresByKindAndErrorPrefix) {
  DeliveryChecker checker;
  const std::string long_error(100, 'e');
  for (const char* id : {"f1", "f2", "f3"}) checker.Acknowledged(id);
  checker.Observed(Failed("f1", v1::FAILURE_KIND_KERNEL_ERROR, long_error));
  checker.Observed(Failed("f2", v1::FAILURE_KIND_KERNEL_ERROR, long_error + "tail that differs"));
  checker.Observed(Failed("f3", v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED, ""));
  const DeliveryChecker::Report r = checker.Check(3);
  EXPECT_TRUE(r.ok()) << r.Summary();  // a reported failure keeps the promise
  const std::map<std::string, int64_t> want{
      {"FAILURE_KIND_KERNEL_ERROR: " + std::string(60, 'e'), 2},
      {"FAILURE_KIND_ATTEMPTS_EXHAUSTED", 1},
  };
  EXPECT_EQ(r.failed, want);
  EXPECT_EQ(r.failed_total(), 3);
  EXPECT_EQ(r.succeeded, 0);
}

TEST(DeliveryCheckerTest, CountsCancelled) {
  DeliveryChecker checker;
  checker.Acknowledged("c", Int(5));
  checker.Observed(WithState("c", v1::TASK_STATE_CANCELLED));
  const DeliveryChecker::Report r = checker.Check(3);
  EXPECT_TRUE(r.ok()) << r.Summary();
  EXPECT_EQ(r.cancelled, 1);
  EXPECT_EQ(r.wrong_values, 0);  // the expectation applies to successes only
}

TEST(DeliveryCheckerTest, AcknowledgedTaskWithNoTerminalRecordIsLost) {
  DeliveryChecker checker;
  checker.Acknowledged("gone");
  checker.Acknowledged("stuck");
  checker.Observed(WithState("stuck", v1::TASK_STATE_RUNNING));
  const DeliveryChecker::Report r = checker.Check(3);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.lost, 2);
  EXPECT_EQ(r.acknowledged, 2);
  EXPECT_NE(r.Summary().find("lost gone"), std::string::npos) << r.Summary();
}

TEST(DeliveryCheckerTest, DifferentTerminalStateOrResultIsADuplicateCommit) {
  DeliveryChecker checker;
  checker.Acknowledged("state");
  checker.Observed(Succeeded("state", 1));
  checker.Observed(Failed("state", v1::FAILURE_KIND_WORKER_LOST, "worker died"));
  checker.Acknowledged("result");
  checker.Observed(Succeeded("result", 1));
  checker.Observed(Succeeded("result", 2));
  checker.Observed(Succeeded("result", 1));
  const DeliveryChecker::Report r = checker.Check(3);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.duplicated, 2);
  EXPECT_EQ(r.succeeded, 2);  // each counted once, by its first terminal record
  EXPECT_NE(r.Summary().find("duplicated result: result int_value: 1 then int_value: 2"), std::string::npos)
      << r.Summary();
}

TEST(DeliveryCheckerTest, TerminalRecordNeverAcknowledgedIsUnknown) {
  DeliveryChecker checker;
  checker.Observed(Succeeded("stranger", 1));
  checker.Observed(WithState("not-finished", v1::TASK_STATE_RUNNING));  // not an outcome
  const DeliveryChecker::Report r = checker.Check(3);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.unknown, 1);
  EXPECT_EQ(r.acknowledged, 0);
  EXPECT_EQ(r.succeeded, 0);
}

TEST(DeliveryCheckerTest, AttemptsOrAttemptHistoryBeyondTheBudgetAreReported) {
  DeliveryChecker checker;
  checker.Acknowledged("counted");
  checker.Observed(Succeeded("counted", 1, /*attempts=*/4));
  checker.Acknowledged("history");
  v1::TaskRecord history = Failed("history", v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED, "");
  for (int i = 1; i <= 4; ++i) history.add_attempt_history()->set_number(i);
  checker.Observed(history);
  checker.Acknowledged("within");
  checker.Observed(Succeeded("within", 1, /*attempts=*/3));
  checker.Acknowledged("running");
  checker.Observed(WithState("running", v1::TASK_STATE_RUNNING));
  v1::TaskRecord running = WithState("running", v1::TASK_STATE_RUNNING);
  running.set_attempts(5);
  checker.Observed(running);
  checker.Observed(Succeeded("running", 1, 5));

  DeliveryChecker::Report r = checker.Check(3);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.over_attempts, 3);
  r = checker.Check(5);
  EXPECT_TRUE(r.ok()) << r.Summary();
}

TEST(DeliveryCheckerTest, SuccessWithAnotherValueThanExpectedIsAWrongValue) {
  DeliveryChecker checker;
  checker.Acknowledged("wrong", Int(42));
  checker.Observed(Succeeded("wrong", 43));
  checker.Acknowledged("right", Int(7));
  checker.Observed(Succeeded("right", 7));
  checker.Acknowledged("unchecked");
  checker.Observed(Succeeded("unchecked", 1000));
  // Maps compare as maps; NaN equals NaN (a kernel that returns NaN returns it every time).
  v1::Value map;
  (*map.mutable_map_value()->mutable_entries())["x"] = Int(1);
  (*map.mutable_map_value()->mutable_entries())["nan"].set_double_value(std::nan(""));
  checker.Acknowledged("map", map);
  v1::TaskRecord map_rec = Succeeded("map", 0);
  *map_rec.mutable_result() = map;
  checker.Observed(map_rec);

  const DeliveryChecker::Report r = checker.Check(3);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.wrong_values, 1);
  EXPECT_EQ(r.succeeded, 4);
  EXPECT_NE(r.Summary().find("wrong_value wrong: expected int_value: 42, got int_value: 43"), std::string::npos)
      << r.Summary();
}

TEST(DeliveryCheckerTest, RecordsFromManyThreads) {
  DeliveryChecker checker;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&checker, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = std::to_string(t) + "-" + std::to_string(i);
        checker.Acknowledged(id, Int(i));
        checker.Observed(Succeeded(id, i));
        checker.Observed(Succeeded(id, i));
      }
    });
  }
  for (auto& th : threads) th.join();
  const DeliveryChecker::Report r = checker.Check(1);
  EXPECT_TRUE(r.ok()) << r.Summary();
  EXPECT_EQ(r.acknowledged, kThreads * kPerThread);
  EXPECT_EQ(r.succeeded, kThreads * kPerThread);
}

}  // namespace
}  // namespace loom::testing
