// RedisPool against a real redis-server started per test (and, for LOADING, a fake that speaks
// RESP): commands, error replies, and the circuit breaker under real faults: SIGSTOP, SIGKILL and
// restart on the same port, nothing listening.
#include "common/redis.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "common/subprocess.h"
#include "common/util.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

milliseconds Since(Clock::time_point start) { return std::chrono::duration_cast<milliseconds>(Clock::now() - start); }

// A redis-server on a free loopback port and a Unix socket in a temporary directory, without
// persistence. Killed (SIGKILL) with this object.
class RedisServer {
 public:
  explicit RedisServer(const std::string& dir) : dir_(dir), port_(FreeLoopbackPort()), socket_(dir + "/redis.sock") {}

  // Starts (or restarts, on the same port) and waits until it answers PING.
  Status Start() {
    std::vector<std::string> argv = {"redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir_,
                                     "--unixsocket",
                                     socket_,
                                     "--unixsocketperm",
                                     "700",
                                     "--daemonize",
                                     "no"};
    SpawnOptions so;
    so.log_path = dir_ + "/redis.log";
    LOOM_ASSIGN_OR_RETURN(server_, Subprocess::Spawn(argv, so));
    const bool up = loom::testing::WaitFor(
        [&] {
          for (const RedisOptions& o : {Tcp(), Unix()}) {
            auto c = RedisConnection::Connect(o);
            if (!c.ok() || !(*c)->Command({"PING"}).ok()) return false;
          }
          return true;
        },
        milliseconds(5000));
    if (!up) return Unavailable("redis-server did not start on port " + std::to_string(port_) + "; see " + so.log_path);
    return Status::Ok();
  }

  void Kill() {
    server_.Signal(SIGKILL);
    ASSERT_TRUE(server_.Wait(milliseconds(5000)).has_value());
  }
  void Signal(int sig) const { server_.Signal(sig); }

  RedisOptions Tcp() const {
    RedisOptions o;
    o.port = port_;
    return o;
  }
  RedisOptions Unix() const {
    RedisOptions o;
    o.unix_socket = socket_;
    return o;
  }
  int port() const { return port_; }

 private:
  std::string dir_;
  int port_;
  std::string socket_;
  Subprocess server_;
};

// One command on a leased connection; the reply as a string.
Result<std::string> Exec(RedisPool& pool, const std::vector<std::string_view>& argv) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool.Acquire());
  LOOM_ASSIGN_OR_RETURN(auto reply, conn->Command(argv));
  return ReplyString(reply.get());
}

// "... retrying in 812 ms" -> 812; -1 when the message does not say.
int RetryInMs(const std::string& message) {
  const std::string key = "retrying in ";
  auto at = message.find(key);
  return at == std::string::npos ? -1 : std::stoi(message.substr(at + key.size()));
}

class RedisPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // As loom-service does: writing to a Redis that died is an error to handle, not a reason to die.
    std::signal(SIGPIPE, SIG_IGN);
    // A missing redis-server is a failure, never a skip.
    Status s = redis_.Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  loom::testing::TempDir dir_{"redis-test"};
  RedisServer redis_{dir_.path()};
};

TEST_F(RedisPoolTest, RunsCommandsOverTcpAndUnixSocketAndReusesConnections) {
  for (const RedisOptions& o : {redis_.Tcp(), redis_.Unix()}) {
    RedisPool pool(o);
    ASSERT_TRUE(Exec(pool, {"SET", "k", o.unix_socket.empty() ? "tcp" : "unix"}).ok());
    auto got = Exec(pool, {"GET", "k"});
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, o.unix_socket.empty() ? "tcp" : "unix");
    // Sequential leases share one connection.
    auto first = Exec(pool, {"CLIENT", "ID"});
    auto second = Exec(pool, {"CLIENT", "ID"});
    ASSERT_TRUE(first.ok() && second.ok());
    EXPECT_EQ(*first, *second);
    EXPECT_TRUE(pool.available());
    EXPECT_EQ(pool.failures(), 0u);
  }
}

TEST(FormatRedisCommandTest, WritesTheProtocolWithBinaryAndEmptyArguments) {
  std::string out = "left over from an earlier command";
  const std::string binary("a\0\r\nb", 5);
  FormatRedisCommand({"SET", "k", binary, ""}, &out);
  static constexpr char kWant[] = "*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\0\r\nb\r\n$0\r\n\r\n";
  EXPECT_EQ(out, std::string(kWant, sizeof(kWant) - 1));
  FormatRedisCommand({}, &out);
  EXPECT_EQ(out, "*0\r\n");
}

TEST_F(RedisPoolTest, BinaryEmptyAndLargeArgumentsRoundTrip) {
  RedisPool pool(redis_.Tcp());
  const std::string binary("\0\r\n$*\xff", 7);
  const std::string large(300 * 1024, 'x');  // over what a connection keeps of its buffer
  for (const std::string* v : {&binary, &large}) {
    for (int i = 0; i < 2; ++i) {  // the second time through a buffer the first one left
      ASSERT_TRUE(Exec(pool, {"SET", "k", *v}).ok());
      auto got = Exec(pool, {"GET", "k"});
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, *v);
    }
  }
  ASSERT_TRUE(Exec(pool, {"SET", "empty", ""}).ok());
  auto empty = Exec(pool, {"STRLEN", "empty"});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "0");
}

TEST_F(RedisPoolTest, ErrorRepliesDoNotOpenTheCircuitNorDropTheConnection) {
  RedisPool pool(redis_.Tcp());
  auto id = Exec(pool, {"CLIENT", "ID"});
  ASSERT_TRUE(id.ok());

  auto lua = Exec(pool, {"EVAL", "return redis.error_reply('boom')", "0"});
  EXPECT_EQ(lua.status().code(), StatusCode::kInternal);
  EXPECT_NE(lua.status().message().find("boom"), std::string::npos) << lua.status().message();

  auto noscript = Exec(pool, {"EVALSHA", "0123456789012345678901234567890123456789", "0"});
  EXPECT_EQ(noscript.status().code(), StatusCode::kInternal);
  // Callers recognise NOSCRIPT by the message (RedisTaskStore::Eval falls back to EVAL).
  EXPECT_NE(noscript.status().message().find("NOSCRIPT"), std::string::npos) << noscript.status().message();

  auto wrongtype = Exec(pool, {"EVAL", "redis.call('SET', 'x', 1); return redis.call('LPUSH', 'x', 1)", "0"});
  EXPECT_EQ(wrongtype.status().code(), StatusCode::kInternal);

  EXPECT_TRUE(pool.available());
  EXPECT_EQ(pool.failures(), 0u);
  auto again = Exec(pool, {"CLIENT", "ID"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *id) << "an error reply must not cost the connection";
}

TEST_F(RedisPoolTest, UnreadPipelinedRepliesAreNotHandedToTheNextCaller) {
  RedisPool pool(redis_.Tcp());
  ASSERT_TRUE(Exec(pool, {"SET", "a", "1"}).ok());
  ASSERT_TRUE(Exec(pool, {"SET", "b", "2"}).ok());
  {
    auto conn = pool.Acquire();
    ASSERT_TRUE(conn.ok());
    (*conn)->Append({"GET", "a"});
    (*conn)->Append({"GET", "b"});
    auto r = (*conn)->GetReply();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(ReplyString(r->get()), "1");
    // Returns early, as a caller propagating an error from the middle of a pipeline would.
  }
  auto c = Exec(pool, {"GET", "a"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, "1") << "the reply to the abandoned GET b leaked to the next caller";
  EXPECT_TRUE(pool.available());
  EXPECT_EQ(pool.failures(), 0u);
}

TEST_F(RedisPoolTest, MarkBrokenOpensTheCircuitAndTheProbeClosesIt) {
  RedisOptions o = redis_.Tcp();
  o.reconnect_backoff_initial = milliseconds(50);
  RedisPool pool(o);
  {
    auto conn = pool.Acquire();
    ASSERT_TRUE(conn.ok());
    ASSERT_TRUE((*conn)->Command({"PING"}).ok());
    conn->MarkBroken("reply made no sense");
  }
  EXPECT_FALSE(pool.available());
  EXPECT_EQ(pool.failures(), 1u);
  auto fast = pool.Acquire();
  ASSERT_FALSE(fast.ok());
  EXPECT_EQ(fast.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(fast.status().message().find("reply made no sense"), std::string::npos) << fast.status().message();

  EXPECT_TRUE(loom::testing::WaitFor([&] { return Exec(pool, {"PING"}).ok(); }, milliseconds(3000)));
  EXPECT_TRUE(pool.available());
  EXPECT_EQ(pool.reconnects(), 1u);
}

class RedisPoolStopTest : public RedisPoolTest, public ::testing::WithParamInterface<bool> {};

TEST_P(RedisPoolStopTest, StoppedRedisCostsOneTimeoutThenFailsFastAndRecoversAfterSigcont) {
  RedisOptions o = GetParam() ? redis_.Unix() : redis_.Tcp();
  o.command_timeout = milliseconds(300);
  // Long enough that the fast-failure checks below run inside the first open window.
  o.reconnect_backoff_initial = milliseconds(400);
  o.reconnect_backoff_max = milliseconds(2000);
  RedisPool pool(o);
  ASSERT_TRUE(Exec(pool, {"PING"}).ok());  // leaves one idle connection

  redis_.Signal(SIGSTOP);

  // The first caller pays one command timeout.
  auto start = Clock::now();
  auto first = Exec(pool, {"PING"});
  const milliseconds first_took = Since(start);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(first.status().message().find("did not answer within 300 ms"), std::string::npos)
      << first.status().message();
  EXPECT_GE(first_took, milliseconds(250));
  EXPECT_LT(first_took, milliseconds(1000));
  EXPECT_FALSE(pool.available());
  EXPECT_EQ(pool.failures(), 1u);

  // Everyone after fails fast, without a socket call, with an actionable message.
  for (int i = 0; i < 10; ++i) {
    start = Clock::now();
    auto r = pool.Acquire();
    const milliseconds took = Since(start);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    EXPECT_LT(took, milliseconds(50));
    const std::string& m = r.status().message();
    EXPECT_NE(m.find("redis at " + pool.address() + " is unavailable (last error: no reply within 300 ms)"),
              std::string::npos)
        << m;
    EXPECT_GT(RetryInMs(m), 0) << m;
  }
  EXPECT_EQ(pool.failures(), 1u);

  // When the delay passes, exactly one of several concurrent callers probes (and waits out the
  // timeout, Redis being still stopped); the others keep failing fast.
  std::atomic<int> slow{0};
  std::atomic<int> calls{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      loom::testing::WaitFor(
          [&] {
            auto s = Clock::now();
            auto r = Exec(pool, {"PING"});
            EXPECT_FALSE(r.ok());
            EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
            if (Since(s) >= milliseconds(200)) ++slow;
            ++calls;
            return pool.failures() >= 2;
          },
          milliseconds(4000));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(pool.failures(), 2u);
  EXPECT_EQ(slow.load(), 1) << "calls: " << calls.load();

  // The failed probe doubled the delay (400 ms +-20% -> 800 ms +-20%).
  auto after_probe = pool.Acquire();
  ASSERT_FALSE(after_probe.ok());
  const int retry_ms = RetryInMs(after_probe.status().message());
  EXPECT_GT(retry_ms, 500) << after_probe.status().message();
  EXPECT_LE(retry_ms, 960) << after_probe.status().message();

  // Redis resumes: the pool recovers by itself, with the same pool object.
  redis_.Signal(SIGCONT);
  start = Clock::now();
  EXPECT_TRUE(loom::testing::WaitFor([&] { return Exec(pool, {"PING"}).ok(); }, milliseconds(5000)));
  EXPECT_LT(Since(start), milliseconds(1500));
  EXPECT_TRUE(pool.available());
  EXPECT_EQ(pool.reconnects(), 1u);
  EXPECT_EQ(pool.failures(), 2u);
  ASSERT_TRUE(Exec(pool, {"SET", "after", "stop"}).ok());
  auto got = Exec(pool, {"GET", "after"});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "stop");
}

INSTANTIATE_TEST_SUITE_P(Transports, RedisPoolStopTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& param_info) {
                           return param_info.param ? "Unix" : "Tcp";
                         });

TEST_F(RedisPoolTest, KilledRedisFailsFastAndThePoolRecoversAfterRestartOnTheSamePort) {
  RedisOptions o = redis_.Tcp();
  o.command_timeout = milliseconds(300);
  o.reconnect_backoff_initial = milliseconds(50);
  o.reconnect_backoff_max = milliseconds(400);
  RedisPool pool(o);
  ASSERT_TRUE(Exec(pool, {"SET", "k", "v"}).ok());

  redis_.Kill();

  auto first = Exec(pool, {"GET", "k"});
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(pool.available());

  // While it is down every call fails fast: from the open circuit, or from a probe whose connect
  // is refused. Keep calling until two probes have failed.
  int fast_failures = 0;
  EXPECT_TRUE(loom::testing::WaitFor(
      [&] {
        auto s = Clock::now();
        auto r = Exec(pool, {"GET", "k"});
        EXPECT_LT(Since(s), milliseconds(50));
        EXPECT_FALSE(r.ok());
        EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
        EXPECT_NE(r.status().message().find("127.0.0.1:" + std::to_string(redis_.port())), std::string::npos)
            << r.status().message();
        if (r.status().message().find("is unavailable (last error:") != std::string::npos) ++fast_failures;
        return pool.failures() >= 3;
      },
      milliseconds(3000)));
  EXPECT_GT(fast_failures, 0);
  EXPECT_EQ(pool.reconnects(), 0u);

  ASSERT_TRUE(redis_.Start().ok());
  const auto start = Clock::now();
  EXPECT_TRUE(loom::testing::WaitFor([&] { return Exec(pool, {"SET", "k", "again"}).ok(); }, milliseconds(5000)));
  EXPECT_LT(Since(start), milliseconds(1500));
  EXPECT_TRUE(pool.available());
  EXPECT_EQ(pool.reconnects(), 1u);
  auto got = Exec(pool, {"GET", "k"});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "again");
}

TEST(RedisPoolNoServerTest, RefusedConnectIsUnavailableAndNamesTheAddress) {
  RedisOptions o;
  o.port = FreeLoopbackPort();  // nothing listens there
  RedisPool pool(o);
  const std::string address = "127.0.0.1:" + std::to_string(o.port);

  auto first = pool.Acquire();
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(first.status().message().find(address), std::string::npos) << first.status().message();
  EXPECT_FALSE(pool.available());
  EXPECT_EQ(pool.failures(), 1u);

  const auto start = Clock::now();
  auto second = pool.Acquire();
  EXPECT_LT(Since(start), milliseconds(50));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("redis at " + address + " is unavailable (last error: Connection refused)"),
            std::string::npos)
      << second.status().message();
}

// A fake Redis on a loopback port that answers every command with LOADING, as Redis does while it
// loads its data after a restart. Serves one client at a time.
class LoadingRedis {
 public:
  LoadingRedis() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~LoadingRedis() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    ::close(listen_fd_);
  }
  int port() const { return port_; }

 private:
  // Waits up to 20 ms for `fd` to be readable, so that the loop notices stop_.
  static bool Readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 20) > 0;
  }
  void Serve() {
    static constexpr std::string_view kLoading = "-LOADING Redis is loading the dataset in memory\r\n";
    while (!stop_) {
      if (!Readable(listen_fd_)) continue;
      int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) continue;
      std::array<char, 4096> buf{};
      while (!stop_) {
        if (!Readable(client)) continue;
        ssize_t n = ::read(client, buf.data(), buf.size());
        if (n <= 0) break;  // the client closed the connection
        // hiredis writes each command in one piece, so one read is one command here.
        if (::write(client, kLoading.data(), kLoading.size()) < 0) break;
      }
      ::close(client);
    }
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(RedisPoolLoadingTest, LoadingIsUnavailableAndKeepsTheCircuitOpenWhileItLasts) {
  LoadingRedis fake;
  RedisOptions o;
  o.port = fake.port();
  o.reconnect_backoff_initial = milliseconds(50);
  RedisPool pool(o);

  auto r = Exec(pool, {"GET", "k"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("is loading its data"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("LOADING"), std::string::npos) << r.status().message();
  EXPECT_FALSE(pool.available());
  EXPECT_EQ(pool.failures(), 1u);

  // The probe's PING gets LOADING too: the circuit stays open.
  EXPECT_TRUE(loom::testing::WaitFor(
      [&] {
        EXPECT_EQ(Exec(pool, {"GET", "k"}).status().code(), StatusCode::kUnavailable);
        return pool.failures() >= 2;
      },
      milliseconds(3000)));
  EXPECT_FALSE(pool.available());
  EXPECT_EQ(pool.reconnects(), 0u);
}

}  // namespace
}  // namespace loom
