// The relay of a block's network-less workers (worker/relay.h), with real sockets: a ROUTER
// playing the endpoint (a CURVE server, as a block's endpoint is) and DEALERs playing workers
// on the relay's Unix socket.
#include "worker/relay.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "common/curve.h"
#include "tests/support/test_env.h"

namespace loom::worker {
namespace {

using namespace std::chrono_literals;

struct Received {
  std::string id;
  std::string body;
};

std::optional<Received> ReceiveAtRouter(zmq::socket_t& router, std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
  zmq::message_t id, body;
  if (!router.recv(id) || !id.more() || !router.recv(body)) return std::nullopt;
  return Received{id.to_string(), body.to_string()};
}

std::optional<std::string> ReceiveAtDealer(zmq::socket_t& dealer, std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
  zmq::message_t body;
  if (!dealer.recv(body)) return std::nullopt;
  return body.to_string();
}

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = curve::GenerateKeyPair();
    auto client = curve::GenerateKeyPair();
    ASSERT_TRUE(server.ok() && client.ok());
    server_ = *server;
    client_ = *client;
    endpoint_.set(zmq::sockopt::linger, 0);
    // No ZAP domain: any client key is let in, but only over CURVE, so a message arriving at
    // all proves the relay's leg ran CURVE with the endpoint's public key.
    ASSERT_TRUE(curve::MakeServer(endpoint_, server_, "", false).ok());
    endpoint_.bind("tcp://127.0.0.1:*");
    auto relay = WorkerRelay::Start(
        {endpoint_.get(zmq::sockopt::last_endpoint), dir_.path(), client_, server_.public_key, 1 << 20});
    ASSERT_TRUE(relay.ok()) << relay.status().ToString();
    relay_ = std::move(relay).value();
  }
  zmq::socket_t Worker(const std::string& id) {
    zmq::socket_t s(ctx_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::routing_id, id);
    s.set(zmq::sockopt::linger, 0);
    s.connect(relay_->address());
    return s;
  }

  loom::testing::TempDir dir_{"relay"};
  zmq::context_t ctx_;
  zmq::socket_t endpoint_{ctx_, zmq::socket_type::router};
  curve::KeyPair server_, client_;
  std::unique_ptr<WorkerRelay> relay_;
};

TEST_F(RelayTest, EachWorkersMessagesReachTheEndpointUnderItsOwnIdAndTheAnswersComeBack) {
  EXPECT_EQ(relay_->address(), "ipc://" + dir_.path() + "/workers.sock");
  auto a = Worker("b1:node:w0.1");
  auto b = Worker("b1:node:w1.1");
  ASSERT_TRUE(a.send(zmq::str_buffer("hello from a")));
  ASSERT_TRUE(b.send(zmq::str_buffer("hello from b")));
  std::set<std::string> seen;
  for (int i = 0; i < 2; ++i) {
    auto got = ReceiveAtRouter(endpoint_, 10s);
    ASSERT_TRUE(got.has_value());
    seen.insert(got->id + "=" + got->body);
  }
  EXPECT_EQ(seen, (std::set<std::string>{"b1:node:w0.1=hello from a", "b1:node:w1.1=hello from b"}));

  // The endpoint answers each by its id; each worker gets only its own.
  for (const char* id : {"b1:node:w1.1", "b1:node:w0.1"}) {
    ASSERT_TRUE(endpoint_.send(zmq::buffer(std::string(id)), zmq::send_flags::sndmore));
    ASSERT_TRUE(endpoint_.send(zmq::buffer("task for " + std::string(id))));
  }
  EXPECT_EQ(ReceiveAtDealer(a, 10s), "task for b1:node:w0.1");
  EXPECT_EQ(ReceiveAtDealer(b, 10s), "task for b1:node:w1.1");
  EXPECT_EQ(ReceiveAtDealer(a, 50ms), std::nullopt);

  // A large message crosses whole.
  const std::string big(512 << 10, 'x');
  ASSERT_TRUE(a.send(zmq::buffer(big)));
  auto got = ReceiveAtRouter(endpoint_, 10s);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->body.size(), big.size());
}

TEST_F(RelayTest, AForgottenWorkersNextGenerationConnectsAfresh) {
  {
    auto old = Worker("b1:node:w0.1");
    ASSERT_TRUE(old.send(zmq::str_buffer("first")));
    auto got = ReceiveAtRouter(endpoint_, 10s);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->id, "b1:node:w0.1");
  }
  relay_->Forget("b1:node:w0.1");
  auto next = Worker("b1:node:w0.2");
  ASSERT_TRUE(next.send(zmq::str_buffer("second")));
  auto got = ReceiveAtRouter(endpoint_, 10s);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, "b1:node:w0.2");
  EXPECT_EQ(got->body, "second");
}

// A peer without a routing id gets one from ZeroMQ that starts with a zero byte: not a Loom
// worker (they always name themselves), so its messages are dropped, and the relay goes on.
TEST_F(RelayTest, APeerWithoutAnIdIsDroppedAndTheRelayGoesOn) {
  zmq::socket_t anonymous(ctx_, zmq::socket_type::dealer);
  anonymous.set(zmq::sockopt::linger, 0);
  anonymous.connect(relay_->address());
  ASSERT_TRUE(anonymous.send(zmq::str_buffer("who am I")));
  auto worker = Worker("b1:node:w0.1");
  ASSERT_TRUE(worker.send(zmq::str_buffer("hello")));
  auto got = ReceiveAtRouter(endpoint_, 10s);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->id, "b1:node:w0.1");
  EXPECT_EQ(got->body, "hello");
  EXPECT_EQ(ReceiveAtRouter(endpoint_, 100ms), std::nullopt) << "the anonymous message got through";
}

TEST(RelayStartTest, ADirectoryIsRequiredAndAMissingOneIsAnError) {
  EXPECT_FALSE(WorkerRelay::Start({"tcp://127.0.0.1:1", "", std::nullopt, "", -1}).ok());
  auto r = WorkerRelay::Start({"tcp://127.0.0.1:1", "/nonexistent/loom-relay", std::nullopt, "", -1});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/loom-relay"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace loom::worker
