// Endpoint authentication and the endpoint's own allow-list, with real processes on 127.0.0.1:
// - a curve-mode fabric runs tasks, and a restarted endpoint keeps its key;
// - an unknown CURVE key, a plaintext endpoint, and an endpoint claiming another's id with its
//   own valid key cannot register (and the service counts each);
// - with the ZAP handler down, connections fail (an in-process Broker, so the handler can be
//   stopped), also where libzmq would let them through (the broker's own check);
// - a replaced key fences the session that used the old one;
// - the endpoint refuses tasks its allow-list excludes even when the service is bypassed (a
//   fake service: the test's own ROUTER, a real loom-endpoint and its workers).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <deque>
#include <filesystem>
#include <map>
#include <set>
#include <zmq.hpp>

#include "common/curve.h"
#include "common/local_fabric.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "common/wire.h"
#include "loom/client.h"
#include "service/broker.h"
#include "service/memory_task_store.h"
#include "tests/support/fabric_client.h"
#include "tests/support/http_get.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using loom::testing::BinDir;
using loom::testing::WaitFor;

std::unique_ptr<LocalFabric> MakeCurveFabric(const std::string& name) {
  LocalFabricOptions o;
  o.bin_dir = BinDir();
  o.state_dir = loom::testing::MakeTempDir(name);
  o.log_level = "debug";
  o.metrics = true;
  o.endpoint_auth = "curve";
  o.remove_state_dir = std::getenv("LOOM_KEEP_TEST_STATE") == nullptr;
  return std::make_unique<LocalFabric>(o);
}

// A series of the service's /metrics page; -1 when it cannot be read.
double ServiceMetric(const LocalFabric& f, const std::string& series) {
  auto body = loom::testing::HttpGet(f.service_metrics_address());
  if (!body.ok()) return -1;
  return loom::testing::ScrapeValue(*body, series).value_or(-1);
}

// A loom-endpoint started by hand: LocalFabric::StartEndpoint waits for a registration that
// these never get.
struct ManualEndpoint {
  Subprocess process;
  std::string log;
  std::string ready;
  std::string Log() const { return ReadFileOrEmpty(log); }
};

ManualEndpoint StartManualEndpoint(const std::string& dir, const std::string& id, const std::string& service,
                                   const std::vector<std::string>& extra) {
  ManualEndpoint e;
  e.log = dir + "/manual-" + id + ".log";
  e.ready = dir + "/manual-" + id + ".ready";
  std::vector<std::string> argv = {BinDir() + "/loom-endpoint",
                                   "--id",
                                   id,
                                   "--service",
                                   service,
                                   "--workers",
                                   "1",
                                   "--ready-file",
                                   e.ready,
                                   "--run-dir",
                                   dir + "/run-" + id,
                                   "--spool-dir",
                                   dir + "/spool-" + id,
                                   "--log-level",
                                   "debug"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  SpawnOptions o;
  o.log_path = e.log;
  auto p = Subprocess::Spawn(argv, o);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (p.ok()) e.process = std::move(p).value();
  return e;
}

v1::EndpointStatus StatusOf(Client& client, const std::string& id) {
  auto e = client.GetEndpoint(id);
  return e.ok() ? e->status() : v1::ENDPOINT_STATUS_UNSPECIFIED;
}

// ---------------------------------------------------------------- whole fabrics

TEST(EndpointAuthTest, ACurveFabricRunsTasksAndARestartedEndpointKeepsItsKey) {
  auto f = MakeCurveFabric("auth-e2e");
  Status s = f->StartAll("ep", 1);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto client = loom::testing::ConnectClient(*f);
  ASSERT_NE(client, nullptr);
  loom::testing::RegisterBuiltins(*client);
  auto run = [&](int64_t v) -> int64_t {
    // Keyed, so the SDK may send it again right after the service restarted.
    SubmitOptions keyed;
    keyed.idempotency_key = "run-" + std::to_string(v);
    auto id = client->Submit("ep", "echo", {IntValue(v)}, {}, keyed);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (!id.ok()) return -1;
    auto r = client->GetResult(*id, 20s);
    EXPECT_TRUE(r.ok() && r->has_value());
    return r.ok() && r->has_value() ? (*r)->result().int_value() : -1;
  };
  EXPECT_EQ(run(7), 7);
  auto keys = curve::ReadSecretKeyFile(f->EndpointKeyFile("ep"));
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  auto rec = client->GetEndpoint("ep");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->curve_public_key(), keys->public_key);
  EXPECT_GE(ServiceMetric(*f, "loom_zap_replies_total{status=\"200\"}"), 1);
  EXPECT_EQ(ServiceMetric(*f, "loom_auth_refused_total"), 0);

  f->KillEndpoint("ep", SIGKILL);
  ASSERT_TRUE(f->StartEndpoint("ep", 1).ok()) << f->LogTail("endpoint-ep");
  EXPECT_EQ(curve::ReadSecretKeyFile(f->EndpointKeyFile("ep"))->public_key, keys->public_key);
  EXPECT_EQ(run(8), 8);
  // A restarted service keeps its key too, and the endpoint comes back to it.
  const std::string service_key = f->service_public_key();
  f->KillService(SIGKILL);
  ASSERT_TRUE(f->StartService().ok()) << f->LogTail("service");
  EXPECT_EQ(f->service_public_key(), service_key);
  client = loom::testing::ConnectClient(*f);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(run(9), 9);
}

TEST(EndpointAuthTest, AnUnknownKeyCannotConnectAndTheServiceCountsIt) {
  auto f = MakeCurveFabric("auth-unknown");
  ASSERT_TRUE(f->StartRedis().ok());
  ASSERT_TRUE(f->StartService().ok()) << f->LogTail("service");
  ASSERT_TRUE(f->EnrollEndpoint("ghost").ok());  // its record holds another key
  const std::string rogue = f->state_dir() + "/rogue.key";
  ASSERT_TRUE(curve::WriteSecretKeyFile(rogue, *curve::GenerateKeyPair()).ok());
  auto ep = StartManualEndpoint(f->state_dir(), "ghost", f->endpoint_address(),
                                {"--curve-secret-key-file", rogue, "--service-public-key", f->service_public_key()});
  ASSERT_TRUE(WaitFor([&] { return ServiceMetric(*f, "loom_zap_replies_total{status=\"400\"}") >= 1; }, 20s))
      << f->LogTail("service");
  ASSERT_TRUE(WaitFor([&] { return ep.Log().find("refused this endpoint's CURVE key") != std::string::npos; }, 10s))
      << ep.Log();
  EXPECT_NE(f->LogTail("service", 20000).find("unknown CURVE key"), std::string::npos);
  EXPECT_EQ(ServiceMetric(*f, "loom_zap_replies_total{status=\"200\"}"), 0);
  EXPECT_FALSE(fs::exists(ep.ready));
  auto client = loom::testing::ConnectClient(*f);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(StatusOf(*client, "ghost"), v1::ENDPOINT_STATUS_NEVER_CONNECTED);
  EXPECT_TRUE(ep.process.Running());  // it keeps trying; nothing crashed
  EXPECT_TRUE(f->service().Running());
  // Once its owner registers that key for it, the same endpoint process gets in (its next
  // fresh connection), and the service still serves.
  v1::UpdateEndpointRequest update;
  update.set_id("ghost");
  update.set_curve_public_key(curve::ReadSecretKeyFile(rogue)->public_key);
  ASSERT_TRUE(client->UpdateEndpoint(update).ok());
  EXPECT_TRUE(WaitFor([&] { return fs::exists(ep.ready); }, 30s)) << ep.Log();
  EXPECT_EQ(StatusOf(*client, "ghost"), v1::ENDPOINT_STATUS_ONLINE);
}

TEST(EndpointAuthTest, APlaintextEndpointCannotRegisterWithACurveService) {
  auto f = MakeCurveFabric("auth-plain");
  ASSERT_TRUE(f->StartRedis().ok());
  ASSERT_TRUE(f->StartService().ok()) << f->LogTail("service");
  ASSERT_TRUE(f->EnrollEndpoint("ep").ok());
  auto ep = StartManualEndpoint(f->state_dir(), "ep", f->endpoint_address(), {});
  // The handshake fails on the mechanism (NULL against CURVE); the endpoint says so.
  ASSERT_TRUE(WaitFor([&] { return ep.Log().find("the service may require CURVE") != std::string::npos; }, 20s))
      << ep.Log();
  EXPECT_FALSE(fs::exists(ep.ready));
  auto client = loom::testing::ConnectClient(*f);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(StatusOf(*client, "ep"), v1::ENDPOINT_STATUS_NEVER_CONNECTED);
  EXPECT_EQ(ServiceMetric(*f, "loom_endpoints_online"), 0);
  EXPECT_EQ(ServiceMetric(*f, "loom_zap_replies_total{status=\"200\"}"), 0);
}

TEST(EndpointAuthTest, AnEndpointWithItsOwnValidKeyCannotRegisterAsAnother) {
  auto f = MakeCurveFabric("auth-impostor");
  ASSERT_TRUE(f->StartRedis().ok());
  ASSERT_TRUE(f->StartService().ok()) << f->LogTail("service");
  ASSERT_TRUE(f->EnrollEndpoint("a").ok());
  ASSERT_TRUE(f->EnrollEndpoint("b").ok());
  // Endpoint a's key, claiming to be b.
  auto ep = StartManualEndpoint(
      f->state_dir(), "b", f->endpoint_address(),
      {"--curve-secret-key-file", f->EndpointKeyFile("a"), "--service-public-key", f->service_public_key()});
  // The service fences it off; it stops with exit code 3 and says why.
  ASSERT_TRUE(ep.process.Wait(20s).has_value()) << ep.Log();
  ASSERT_TRUE(ep.process.exit_status().has_value());
  EXPECT_TRUE(WIFEXITED(*ep.process.exit_status()));
  EXPECT_EQ(WEXITSTATUS(*ep.process.exit_status()), 3);
  EXPECT_NE(ep.Log().find("authenticated as endpoint 'a' (by its CURVE key) tried to register as 'b'"),
            std::string::npos)
      << ep.Log();
  EXPECT_GE(ServiceMetric(*f, "loom_auth_refused_total"), 1);
  EXPECT_NE(f->LogTail("service", 20000).find("tried to register as 'b'"), std::string::npos);
  auto client = loom::testing::ConnectClient(*f);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(StatusOf(*client, "b"), v1::ENDPOINT_STATUS_NEVER_CONNECTED);
  EXPECT_EQ(StatusOf(*client, "a"), v1::ENDPOINT_STATUS_NEVER_CONNECTED);
  EXPECT_FALSE(fs::exists(ep.ready));
}

// `loom endpoint configure` run twice: creates, then updates (keeping the key pair).
TEST(EndpointAuthTest, ConfigureMakesThePrivateKeyCreatesTheRecordAndUpdatesItOnARerun) {
  auto f = MakeCurveFabric("auth-configure");
  ASSERT_TRUE(f->StartRedis().ok());
  ASSERT_TRUE(f->StartService().ok()) << f->LogTail("service");
  const std::string key_dir = f->state_dir() + "/keys/x";
  auto configure = [&](const std::vector<std::string>& extra) {
    const std::string out = f->state_dir() + "/configure.out";
    std::vector<std::string> argv = {BinDir() + "/loom",
                                     "--service",
                                     f->grpc_address(),
                                     "--token-file",
                                     f->token_file(),
                                     "endpoint",
                                     "configure",
                                     "x",
                                     "--key-dir",
                                     key_dir,
                                     "--service-public-key",
                                     f->service_public_key()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::filesystem::remove(out);
    SpawnOptions o;
    o.log_path = out;
    auto p = Subprocess::Spawn(argv, o);
    EXPECT_TRUE(p.ok());
    auto status = p->Wait(30s);
    EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ReadFileOrEmpty(out);
    return ReadFileOrEmpty(out);
  };
  const std::string first = configure({"--allow-user", "bob"});
  EXPECT_NE(first.find("created endpoint x"), std::string::npos) << first;
  EXPECT_NE(first.find("--curve-secret-key-file " + key_dir + "/endpoint.key"), std::string::npos) << first;
  EXPECT_NE(first.find("--service-public-key " + f->service_public_key()), std::string::npos) << first;
  EXPECT_NE(first.find("--allow-user bob"), std::string::npos) << first;
  EXPECT_EQ(fs::status(key_dir + "/endpoint.key").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  auto keys = curve::ReadSecretKeyFile(key_dir + "/endpoint.key");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*curve::ReadPublicKeyFile(key_dir + "/endpoint.pub"), keys->public_key);

  const std::string second = configure({"--allow-function", "echo"});
  EXPECT_NE(second.find("updated endpoint x"), std::string::npos) << second;
  EXPECT_NE(second.find("key pair kept"), std::string::npos) << second;
  auto client = loom::testing::ConnectClient(*f);
  ASSERT_NE(client, nullptr);
  auto rec = client->GetEndpoint("x");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->curve_public_key(), keys->public_key);
  EXPECT_EQ(std::vector<std::string>(rec->allowed_users().begin(), rec->allowed_users().end()),
            std::vector<std::string>{"bob"});  // left as it was
  EXPECT_EQ(std::vector<std::string>(rec->allowed_functions().begin(), rec->allowed_functions().end()),
            std::vector<std::string>{"echo"});
}

// ---------------------------------------------------------------- an in-process broker

// A Broker in curve mode on an in-memory store, and a raw DEALER that speaks for endpoint "ep".
class BrokerAuthTest : public ::testing::Test {
 protected:
  void StartBroker(bool enforce_zap) {
    service_keys_ = *curve::GenerateKeyPair();
    ep_keys_ = *curve::GenerateKeyPair();
    PutRecord(ep_keys_.public_key);
    service::BrokerOptions bo;
    bo.curve = service_keys_;
    bo.enforce_zap = enforce_zap;
    bo.heartbeat_period = 500ms;
    broker_ = std::make_unique<service::Broker>(&store_, &hub_, &credit_, bo, [](const v1::EndpointRecord&) {});
    Status s = broker_->Bind();
    ASSERT_TRUE(s.ok()) << s.ToString();
    broker_->Start();
  }
  void TearDown() override {
    for (auto& d : dealers_) {
      (void)zmq_socket_monitor(d.handle(), nullptr, 0);
      d.close();
    }
    if (monitor_.handle() != nullptr) monitor_.close();
    if (broker_) broker_->Stop();
  }
  v1::EndpointRecord PutRecord(const std::string& key) {
    v1::EndpointRecord e;
    e.set_id("ep");
    e.set_owner("alice");
    e.set_curve_public_key(key);
    EXPECT_TRUE(store_.PutEndpoint(e).ok());
    return e;
  }
  // A DEALER speaking for "ep" with `keys`. With `failures`, counts its failed handshakes
  // (read by HandshakeFailures).
  zmq::socket_t& Dealer(const curve::KeyPair& keys, bool watch_handshakes = false) {
    dealers_.emplace_back(ctx_, zmq::socket_type::dealer);
    auto& d = dealers_.back();
    d.set(zmq::sockopt::linger, 0);
    EXPECT_TRUE(curve::MakeClient(d, keys, service_keys_.public_key).ok());
    if (watch_handshakes) {
      EXPECT_EQ(zmq_socket_monitor(d.handle(), "inproc://dealer-events", ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL), 0);
      monitor_ = zmq::socket_t(ctx_, zmq::socket_type::pair);
      monitor_.set(zmq::sockopt::linger, 0);
      monitor_.connect("inproc://dealer-events");
    }
    d.connect(broker_->bound_address());
    return d;
  }
  // Handshakes of the watched DEALER that failed so far.
  int HandshakeFailures() {
    zmq::message_t head, address;
    while (monitor_.recv(head, zmq::recv_flags::dontwait)) {
      if (head.more()) (void)monitor_.recv(address);
      ++handshake_failures_;
    }
    return handshake_failures_;
  }
  static void SendRegister(zmq::socket_t& d) {
    v1::Envelope env;
    env.mutable_register_()->set_endpoint_id("ep");
    env.mutable_register_()->set_session_id("s1");
    env.mutable_register_()->set_credit(1);
    (void)d.send(ToMessage(env), zmq::send_flags::dontwait);
  }
  // The next envelope from the broker within `timeout`.
  static std::optional<v1::Envelope> Receive(zmq::socket_t& d, std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{d.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
    zmq::message_t m;
    if (!d.recv(m, zmq::recv_flags::dontwait)) return std::nullopt;
    v1::Envelope env;
    if (!FromMessage(m, &env)) return std::nullopt;
    return env;
  }
  // Registers (sending again every 200 ms, as an endpoint does) until the broker answers or
  // `timeout` passes.
  static bool Registers(zmq::socket_t& d, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      SendRegister(d);
      auto env = Receive(d, 200ms);
      if (env && env->has_registered()) return true;
    }
    return false;
  }
  const service::BrokerStats& stats() const { return broker_->stats(); }

  service::InMemoryTaskStore store_;
  service::CompletionHub hub_;
  service::CreditBook credit_;
  curve::KeyPair service_keys_, ep_keys_;
  std::unique_ptr<service::Broker> broker_;
  zmq::context_t ctx_;
  std::deque<zmq::socket_t> dealers_;
  zmq::socket_t monitor_;
  int handshake_failures_ = 0;
};

TEST_F(BrokerAuthTest, WithTheZapHandlerDownAValidKeyCannotConnect) {
  StartBroker(/*enforce_zap=*/true);
  ASSERT_TRUE(broker_->zap_enforced()) << "this libzmq ignores ZMQ_ZAP_ENFORCE_DOMAIN";
  broker_->StopZapHandler();
  auto& d = Dealer(ep_keys_, /*watch_handshakes=*/true);
  SendRegister(d);
  // The handshake fails, again and again (libzmq retries).
  ASSERT_TRUE(WaitFor([&] { return HandshakeFailures() >= 2; }, 10s));
  EXPECT_FALSE(Registers(d, 2s));
  EXPECT_EQ(stats().endpoints_online, 0);
  EXPECT_EQ(stats().zap.accepted, 0u);
  // The same key gets in once the handler answers again: it was the handler's absence.
  ASSERT_TRUE(broker_->StartZapHandler().ok());
  EXPECT_TRUE(Registers(d, 20s));
  EXPECT_EQ(stats().endpoints_online, 1);
  EXPECT_EQ(stats().auth_refused, 0u);
}

TEST_F(BrokerAuthTest, WhereLibzmqLetsAConnectionInWithoutZapTheBrokerStillRefusesIt) {
  StartBroker(/*enforce_zap=*/false);  // as a libzmq without ZMQ_ZAP_ENFORCE_DOMAIN behaves
  broker_->StopZapHandler();
  auto& d = Dealer(ep_keys_);
  ASSERT_TRUE(WaitFor(
      [&] {
        SendRegister(d);
        return stats().auth_refused >= 1;
      },
      10s));
  EXPECT_FALSE(Registers(d, 1s));
  EXPECT_EQ(stats().endpoints_online, 0);
  EXPECT_EQ(stats().zap.accepted + stats().zap.denied, 0u);  // no ZAP handler was asked
}

TEST_F(BrokerAuthTest, AReplacedKeyFencesTheSessionThatUsedTheOldOne) {
  StartBroker(/*enforce_zap=*/true);
  auto& old_conn = Dealer(ep_keys_);
  ASSERT_TRUE(Registers(old_conn, 10s));
  const curve::KeyPair new_keys = *curve::GenerateKeyPair();
  broker_->EndpointChanged(PutRecord(new_keys.public_key));  // what UpdateEndpoint reports
  std::optional<v1::Envelope> fenced;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto env = Receive(old_conn, 50ms);
        if (env && env->has_fenced()) fenced = env;
        return fenced.has_value();
      },
      10s));
  EXPECT_NE(fenced->fenced().reason().find("new CURVE key"), std::string::npos) << fenced->fenced().reason();
  EXPECT_TRUE(WaitFor([&] { return stats().endpoints_online == 0; }, 5s));
  // The old connection cannot register again, nor can a new one with the old key; the new key can.
  EXPECT_FALSE(Registers(old_conn, 1s));
  EXPECT_FALSE(Registers(Dealer(ep_keys_), 1s));
  EXPECT_TRUE(Registers(Dealer(new_keys), 10s));
  EXPECT_GE(stats().auth_refused, 1u);
  EXPECT_GE(stats().zap.denied + stats().zap.deferred, 1u);
}

// ---------------------------------------------------------------- the endpoint's allow-list

// The service bypassed: the test's own ROUTER (a CURVE server with no ZAP handler, so any key
// may connect) sends a real loom-endpoint tasks that its allow-list excludes.
TEST(EndpointAllowListTest, TheEndpointRefusesTasksItsAllowListExcludesWithoutRunningThem) {
  loom::testing::TempDir dir("auth-allow");
  const auto service_keys = *curve::GenerateKeyPair();
  const std::string ep_key = dir.path() + "/gate.key";
  ASSERT_TRUE(curve::WriteSecretKeyFile(ep_key, *curve::GenerateKeyPair()).ok());
  zmq::context_t ctx;
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  ASSERT_TRUE(curve::MakeServer(router, service_keys, "", /*enforce_zap=*/false).ok());
  router.bind("tcp://127.0.0.1:*");
  const std::string address = router.get(zmq::sockopt::last_endpoint);
  auto ep = StartManualEndpoint(
      dir.path(), "gate", address,
      {"--curve-secret-key-file", ep_key, "--service-public-key", service_keys.public_key, "--owner", "alice",
       "--allow-user", "bob", "--allow-function", "echo", "--metrics-address", "127.0.0.1:0"});

  std::string rid;
  auto receive = [&](std::chrono::milliseconds timeout) -> std::optional<v1::Envelope> {
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
    zmq::message_t id, body;
    if (!router.recv(id, zmq::recv_flags::dontwait) || !id.more() || !router.recv(body)) return std::nullopt;
    rid = id.to_string();
    v1::Envelope env;
    if (!FromMessage(body, &env)) return std::nullopt;
    return env;
  };
  auto send = [&](const v1::Envelope& env) {
    router.send(zmq::buffer(rid), zmq::send_flags::sndmore);
    router.send(ToMessage(env), zmq::send_flags::none);
  };
  std::optional<v1::Envelope> reg;
  ASSERT_TRUE(WaitFor(
      [&] {
        reg = receive(100ms);
        return reg && reg->has_register_();
      },
      20s))
      << ep.Log();
  v1::Envelope ok;
  ok.mutable_registered()->set_session_id(reg->register_().session_id());
  ok.mutable_registered()->set_heartbeat_period_ms(1000);
  ok.mutable_registered()->set_heartbeat_misses(10);
  ok.mutable_registered()->set_max_message_bytes(10 << 20);
  ok.mutable_registered()->set_lease_epoch(1);
  send(ok);
  ASSERT_TRUE(WaitFor([&] { return fs::exists(ep.ready); }, 10s)) << ep.Log();
  const std::set<pid_t> workers = loom::testing::ChildPids(ep.process.pid());

  auto spec = [](const std::string& id, const std::string& owner, const std::string& fn, const std::string& kernel) {
    v1::TaskSpec t;
    t.set_task_id(id);
    t.set_owner(owner);
    t.set_function(fn);
    t.set_function_owner("alice");
    t.set_kernel(kernel);
    *t.add_args() = StringValue(id);
    return t;
  };
  v1::Envelope batch;
  *batch.mutable_tasks()->add_tasks() = spec("t-mallory", "mallory", "echo", "echo@1");  // user not allowed
  *batch.mutable_tasks()->add_tasks() = spec("t-crash", "bob", "crash", "crash@1");      // function not allowed
  *batch.mutable_tasks()->add_tasks() = spec("t-ok", "bob", "echo", "echo@1");           // allowed: runs
  send(batch);

  std::map<std::string, v1::TaskResult> results;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto env = receive(100ms);
        if (!env) return false;
        if (env->has_heartbeat()) send(*env);
        if (env->has_results()) {
          v1::Envelope ack;
          for (const auto& r : env->results().results()) {
            results[r.task_id()] = r;
            ack.mutable_ack()->add_task_ids(r.task_id());
          }
          send(ack);
        }
        return results.size() == 3;
      },
      20s))
      << ep.Log();

  const auto& mallory = results.at("t-mallory");
  EXPECT_FALSE(mallory.ok());
  EXPECT_EQ(mallory.failure(), v1::FAILURE_KIND_REJECTED);
  EXPECT_EQ(mallory.error(), "endpoint 'gate' does not accept tasks of user 'mallory'");
  const auto& crash = results.at("t-crash");
  EXPECT_FALSE(crash.ok());
  EXPECT_EQ(crash.failure(), v1::FAILURE_KIND_REJECTED);
  EXPECT_EQ(crash.error(), "endpoint 'gate' does not accept tasks of function 'alice/crash'");
  const auto& fine = results.at("t-ok");
  ASSERT_TRUE(fine.ok()) << fine.error();
  EXPECT_EQ(fine.value().string_value(), "t-ok");
  // No worker saw the refused ones: no worker stamps, and the crash kernel killed nobody.
  auto stages = [](const v1::TaskResult& r) {
    std::set<std::string> out;
    for (const auto& t : r.timestamps()) out.insert(t.stage());
    return out;
  };
  EXPECT_FALSE(stages(mallory).contains("worker_started"));
  EXPECT_FALSE(stages(crash).contains("worker_started"));
  EXPECT_TRUE(stages(fine).contains("worker_started"));
  EXPECT_EQ(loom::testing::ChildPids(ep.process.pid()), workers);
  // Counted, and logged.
  const std::string ready = ReadFileOrEmpty(ep.ready);
  const auto at = ready.find("metrics=");
  ASSERT_NE(at, std::string::npos) << ready;
  const std::string metrics_address = ready.substr(at + 8, ready.find('\n', at) - at - 8);
  auto scrape = loom::testing::HttpGet(metrics_address);
  ASSERT_TRUE(scrape.ok()) << scrape.status().ToString();
  EXPECT_EQ(loom::testing::ScrapeValue(*scrape, "loom_endpoint_tasks_refused_total{reason=\"user\"}"), 1);
  EXPECT_EQ(loom::testing::ScrapeValue(*scrape, "loom_endpoint_tasks_refused_total{reason=\"function\"}"), 1);
  EXPECT_EQ(loom::testing::ScrapeValue(*scrape, "loom_endpoint_worker_restarts_total{reason=\"crash\"}"), 0);
  EXPECT_NE(ep.Log().find("refused task t-mallory"), std::string::npos);
  ep.process.Stop();
}

TEST(EndpointAllowListTest, AnAllowListWithoutAnOwnerIsAStartUpError) {
  loom::testing::TempDir dir("auth-allow-flags");
  auto ep = StartManualEndpoint(dir.path(), "x", "tcp://127.0.0.1:1", {"--allow-user", "bob"});
  ASSERT_TRUE(ep.process.Wait(20s).has_value());
  EXPECT_NE(WEXITSTATUS(*ep.process.exit_status()), 0);
  EXPECT_NE(ep.Log().find("need --owner"), std::string::npos) << ep.Log();
}

}  // namespace
}  // namespace loom
