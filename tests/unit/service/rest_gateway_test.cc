// The REST gateway in process: LoomApi over the in-memory store, the gateway on 127.0.0.1:0,
// and cpp-httplib's client. Covers every route family, authentication, the error mapping, the
// limits and bad input, long polls and result streams, and HTTPS.
#include "service/rest_gateway.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <thread>

#include "common/kernel_api.h"
#include "common/util.h"
#include "common/value.h"
#include "service/memory_task_store.h"
#include "tests/support/test_env.h"
#include "tests/support/tls_certs.h"

namespace loom::service {
namespace {

using namespace std::chrono_literals;

class NullNotifier : public DispatchNotifier {
 public:
  void TasksQueued(const std::vector<std::string>&) override {}
  void TasksDispatched(const std::string&, const std::string&, int64_t, std::vector<v1::TaskSpec>, int64_t) override {}
  void TasksCancelled(const std::string&, const std::vector<std::string>&) override {}
};

// Bearer tokens with fixed meanings; others are refused.
class FakeAuthenticator : public Authenticator {
 public:
  Result<Principal> Authenticate(std::string_view h) override {
    ++calls;
    if (h.empty()) return Unauthenticated("no Authorization header: send Authorization: Bearer <token>");
    if (h == "Bearer alice-token") return Principal{"alice", false};
    if (h == "Bearer root-token") return Principal{"root", true};
    if (h == "Bearer busy") return ResourceExhausted("alice sends too many requests").WithRetryAfter(1500);
    if (h == "Bearer store-down") return Unavailable("the token store is unreachable").WithRetryAfter(200);
    return Unauthenticated("the token is unknown or revoked");
  }
  std::atomic<int> calls{0};
};

struct HostPort {
  std::string host;
  int port;
};
HostPort Split(const std::string& address) {
  const size_t colon = address.rfind(':');
  return {address.substr(0, colon), std::stoi(address.substr(colon + 1))};
}

template <typename M>
M ParseJson(const std::string& body) {
  M m;
  auto s = google::protobuf::util::JsonStringToMessage(body, &m);
  EXPECT_TRUE(s.ok()) << s.ToString() << " in " << body;
  return m;
}

// The "code" and "message" of an error body.
std::pair<std::string, std::string> ErrorOf(const std::string& body) {
  auto s = ParseJson<google::protobuf::Struct>(body);
  auto field = [&](const char* k) {
    auto it = s.fields().find(k);
    return it == s.fields().end() ? std::string("<missing>") : it->second.string_value();
  };
  EXPECT_EQ(s.fields_size(), 2) << body;
  return {field("code"), field("message")};
}

constexpr const char* kJson = "application/json";

class RestGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    limits_.max_message_bytes = 16 * 1024;
    limits_.max_batch = 50;
    api_ = std::make_unique<LoomApi>(&store_, &hub_, &notifier_, limits_);
    // ep1's session (lease epoch 1): the store leases only to an endpoint's latest session.
    ASSERT_EQ(store_.RegisterSession("ep1", {}, "test", 0)->lease_epoch, 1);
    v1::EndpointRecord ep;
    ep.set_id("ep1");
    ep.set_owner("alice");
    ep.add_allowed_users("*");
    ep.set_status(v1::ENDPOINT_STATUS_ONLINE);
    *ep.add_kernels() = MakeKernelInfo("add", "1", "a+b",
                                       {Param("a", v1::VALUE_TYPE_NUMBER, ""), Param("b", v1::VALUE_TYPE_NUMBER, "")},
                                       v1::VALUE_TYPE_NUMBER);
    *ep.add_kernels() = MakeKernelInfo("echo", "1", "", {Param("value", v1::VALUE_TYPE_ANY, "")}, v1::VALUE_TYPE_ANY);
    ASSERT_TRUE(store_.PutEndpoint(ep).ok());
    StartGateway(Options());
  }

  RestOptions Options() {
    RestOptions o;
    o.address = "127.0.0.1:0";
    o.max_body_bytes = 64 * 1024;
    o.threads = 8;
    return o;
  }

  void StartGateway(const RestOptions& o) {
    gateway_.reset();
    auto gw = RestGateway::Start(o, api_.get(), &auth_);
    ASSERT_TRUE(gw.ok()) << gw.status().ToString();
    gateway_ = std::move(gw).value();
  }

  std::unique_ptr<httplib::Client> Client(const std::string& token = "alice-token") {
    auto [host, port] = Split(gateway_->address());
    auto c = std::make_unique<httplib::Client>(host, port);
    c->set_read_timeout(30, 0);
    c->set_connection_timeout(5, 0);
    if (!token.empty()) c->set_default_headers({{"Authorization", "Bearer " + token}});
    return c;
  }

  // Registers add and echo as alice, through REST.
  void RegisterFunctions() {
    auto c = Client();
    for (const char* fn : {R"({"function": {"name": "add", "kernel": "add@1"}})",
                           R"({"function": {"name": "echo", "kernel": "echo@1"}})"}) {
      auto r = c->Post("/v1/functions", fn, kJson);
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 201) << r->body;
    }
  }

  std::string SubmitEcho(httplib::Client& c, int v) {
    auto r = c.Post(
        "/v1/tasks",
        R"({"function": "echo", "endpoint": "ep1", "args": [{"int_value": ")" + std::to_string(v) + R"("}]})", kJson);
    EXPECT_TRUE(r);
    if (!r) return "";
    EXPECT_EQ(r->status, 201) << r->body;
    return ParseJson<v1::SubmitResponse>(r->body).task_id();
  }

  // What an endpoint would do: lease the tasks and commit results, then publish them.
  void Finish(const std::vector<std::string>& ids) {
    auto leased = store_.LeaseTasks("ep1", 1, 1000, NowNanos());
    ASSERT_TRUE(leased.ok());
    std::vector<v1::TaskResult> results;
    for (const auto& id : ids) {
      v1::TaskResult r;
      r.set_task_id(id);
      r.set_ok(true);
      *r.mutable_value() = StringValue("done " + id);
      results.push_back(r);
    }
    auto done = store_.CompleteTasks("ep1", 1, results, NowNanos());
    ASSERT_TRUE(done.ok()) << done.status().ToString();
    hub_.Publish(done->finished);
  }

  InMemoryTaskStore store_;
  CompletionHub hub_;
  NullNotifier notifier_;
  ServiceLimits limits_;
  FakeAuthenticator auth_;
  std::unique_ptr<LoomApi> api_;
  std::unique_ptr<RestGateway> gateway_;
};

TEST(RestStatusTest, MapsEveryCodeToItsHttpStatus) {
  EXPECT_EQ(HttpStatusFor(Status::Ok()), 200);
  EXPECT_EQ(HttpStatusFor(InvalidArgument("")), 400);
  EXPECT_EQ(HttpStatusFor(FailedPrecondition("")), 400);
  EXPECT_EQ(HttpStatusFor(Status(StatusCode::kOutOfRange, "")), 400);
  EXPECT_EQ(HttpStatusFor(Unauthenticated("")), 401);
  EXPECT_EQ(HttpStatusFor(PermissionDenied("")), 403);
  EXPECT_EQ(HttpStatusFor(NotFound("")), 404);
  EXPECT_EQ(HttpStatusFor(AlreadyExists("")), 409);
  EXPECT_EQ(HttpStatusFor(Status(StatusCode::kAborted, "")), 409);
  EXPECT_EQ(HttpStatusFor(ResourceExhausted("")), 413);
  EXPECT_EQ(HttpStatusFor(ResourceExhausted("").WithRetryAfter(10)), 429);
  EXPECT_EQ(HttpStatusFor(Status(StatusCode::kCancelled, "")), 499);
  EXPECT_EQ(HttpStatusFor(Status(StatusCode::kUnimplemented, "")), 501);
  EXPECT_EQ(HttpStatusFor(Unavailable("")), 503);
  EXPECT_EQ(HttpStatusFor(DeadlineExceeded("")), 504);
  EXPECT_EQ(HttpStatusFor(Internal("")), 500);
  EXPECT_EQ(HttpStatusFor(Status(StatusCode::kUnknown, "")), 500);
  EXPECT_EQ(HttpStatusFor(Status(StatusCode::kDataLoss, "")), 500);
  EXPECT_EQ(ErrorJson(NotFound("task 'x\"y' is not known")),
            R"({"code":"NOT_FOUND","message":"task 'x\"y' is not known"})");
}

TEST_F(RestGatewayTest, HealthNeedsNoTokenAndEverythingElseDoes) {
  auto anonymous = Client("");
  auto h = anonymous->Get("/v1/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, R"({"status":"ok"})");
  EXPECT_EQ(h->get_header_value("Content-Type"), kJson);

  auto r = anonymous->Get("/v1/functions");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("WWW-Authenticate").rfind("Bearer", 0), 0u);
  EXPECT_EQ(ErrorOf(r->body),
            std::make_pair(std::string("UNAUTHENTICATED"),
                           std::string("no Authorization header: send Authorization: Bearer <token>")));
  auto bad = Client("stolen");
  r = bad->Post("/v1/tasks", R"({"function": "echo", "endpoint": "ep1"})", kJson);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(ErrorOf(r->body).second, "the token is unknown or revoked");
  EXPECT_EQ(*store_.QueueDepth("ep1"), 0);
}

TEST_F(RestGatewayTest, PassesTheCallerToTheApi) {
  RegisterFunctions();
  auto r = Client()->Get("/v1/functions/add");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto fn = ParseJson<v1::Function>(r->body);
  EXPECT_EQ(fn.owner(), "alice");  // set by LoomApi from the Principal
  EXPECT_EQ(fn.kernel(), "add@1");
  // Another user's function: the admin reaches it as owner/name, alice's own name is not root's.
  auto root = Client("root-token");
  r = root->Get("/v1/functions/alice/add");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(root->Get("/v1/functions/add")->status, 404);
  EXPECT_EQ(Client()->Get("/v1/functions/root/add")->status, 404);
  r = Client("root-token")->Get("/v1/whoami");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto me = ParseJson<v1::WhoAmIResponse>(r->body);
  EXPECT_EQ(me.user(), "root");
  EXPECT_TRUE(me.admin());
}

TEST_F(RestGatewayTest, WithoutAnAuthenticatorEveryCallerIsLocal) {
  gateway_.reset();
  auto gw = RestGateway::Start(Options(), api_.get(), nullptr);
  ASSERT_TRUE(gw.ok());
  gateway_ = std::move(gw).value();
  auto r = Client("")->Post("/v1/functions", R"({"function": {"name": "add", "kernel": "add@1"}})", kJson);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(ParseJson<v1::RegisterFunctionResponse>(r->body).function().owner(), kLocalUser);
  EXPECT_EQ(auth_.calls.load(), 0);
}

TEST_F(RestGatewayTest, FunctionsRegisterListAndGet) {
  RegisterFunctions();
  auto c = Client();
  // Registering the same function again creates nothing: 200, "created": false.
  auto again = c->Post("/v1/functions", R"({"function": {"name": "add", "kernel": "add@1"}})", kJson);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
  EXPECT_NE(again->body.find(R"("created":false)"), std::string::npos) << again->body;
  auto clash = c->Post("/v1/functions", R"({"function": {"name": "add", "kernel": "echo@1"}})", kJson);
  ASSERT_TRUE(clash);
  EXPECT_EQ(clash->status, 409) << clash->body;
  EXPECT_EQ(ErrorOf(clash->body).first, "ALREADY_EXISTS");
  auto list = c->Get("/v1/functions");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->status, 200);
  auto fns = ParseJson<v1::ListFunctionsResponse>(list->body);
  ASSERT_EQ(fns.functions_size(), 2);
  // snake_case names on the way out.
  EXPECT_NE(list->body.find("\"created_unix_nanos\""), std::string::npos) << list->body;
  auto missing = c->Get("/v1/functions/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(ErrorOf(missing->body).first, "NOT_FOUND");
  EXPECT_NE(ErrorOf(missing->body).second.find("'nope' is not registered"), std::string::npos);
}

TEST_F(RestGatewayTest, EndpointsCreateListGetAndRefuseDuplicates) {
  auto c = Client();
  auto made = c->Post("/v1/endpoints", R"({"name": "beamline-7"})", kJson);
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  EXPECT_EQ(made->get_header_value("Location"), "/v1/endpoints/beamline-7");
  auto rec = ParseJson<v1::EndpointRecord>(made->body);
  EXPECT_EQ(rec.owner(), "alice");
  EXPECT_EQ(rec.status(), v1::ENDPOINT_STATUS_NEVER_CONNECTED);
  EXPECT_NE(made->body.find(R"("status":"ENDPOINT_STATUS_NEVER_CONNECTED")"), std::string::npos);
  auto dup = c->Post("/v1/endpoints", R"({"name": "beamline-7"})", kJson);
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->status, 409);
  auto list = c->Get("/v1/endpoints");
  ASSERT_TRUE(list);
  EXPECT_EQ(ParseJson<v1::ListEndpointsResponse>(list->body).endpoints_size(), 2);
  auto one = c->Get("/v1/endpoints/ep1");
  ASSERT_TRUE(one);
  ASSERT_EQ(one->status, 200);
  auto ep = ParseJson<v1::EndpointRecord>(one->body);
  EXPECT_EQ(ep.kernels_size(), 2);
  EXPECT_EQ(ep.queue_depth(), 0);
  auto missing = c->Get("/v1/endpoints/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

TEST_F(RestGatewayTest, UpdateEndpointTakesItsIdFromThePath) {
  auto c = Client();
  // The body may repeat the path's id, not name another.
  auto other = c->Patch("/v1/endpoints/ep1", R"({"id": "ep2", "allowed_users": {"items": ["bob"]}})", kJson);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 400);
  EXPECT_EQ(ErrorOf(other->body).second, "the body's id 'ep2' is not the path's 'ep1'");
  auto r = c->Patch("/v1/endpoints/ep1", R"({"allowed_users": {"items": ["bob"]}})", kJson);
  ASSERT_TRUE(r);
  // Whatever LoomApi answers (it decides who may), the route reached it: not a routing error.
  EXPECT_NE(r->status, 404);
  EXPECT_NE(r->status, 405);
  EXPECT_NE(r->status, 400) << r->body;
}

TEST_F(RestGatewayTest, SubmitGetAndLongPollATask) {
  RegisterFunctions();
  auto c = Client();
  auto r = c->Post("/v1/tasks",
                   R"({"function": "add", "endpoint": "ep1", "args": [{"int_value": "40"}, {"intValue": 2}]})", kJson);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  const std::string id = ParseJson<v1::SubmitResponse>(r->body).task_id();
  ASSERT_EQ(id.size(), 32u);
  EXPECT_EQ(r->get_header_value("Location"), "/v1/tasks/" + id);

  auto now = c->Get("/v1/tasks/" + id + "?include_args=true");
  ASSERT_TRUE(now);
  ASSERT_EQ(now->status, 200) << now->body;
  auto rec = ParseJson<v1::TaskRecord>(now->body);
  EXPECT_EQ(rec.state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_EQ(rec.owner(), "alice");  // set by LoomApi from the Principal
  ASSERT_EQ(rec.args_size(), 2);
  EXPECT_EQ(rec.args(1).int_value(), 2);
  EXPECT_NE(now->body.find(R"("int_value":"40")"), std::string::npos) << "int64 is a string in proto JSON";

  // A long poll that nothing finishes returns the record as it is, after wait_ms.
  const auto start = std::chrono::steady_clock::now();
  auto waited = c->Get("/v1/tasks/" + id + "?wait_ms=150");
  ASSERT_TRUE(waited);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  EXPECT_EQ(ParseJson<v1::TaskRecord>(waited->body).state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);

  // One that the task finishes during returns the result.
  std::thread poller([&] {
    auto done = Client()->Get("/v1/tasks/" + id + "?wait_ms=20000");
    ASSERT_TRUE(done);
    ASSERT_EQ(done->status, 200) << done->body;
    auto d = ParseJson<v1::TaskRecord>(done->body);
    EXPECT_EQ(d.state(), v1::TASK_STATE_SUCCESS);
    EXPECT_EQ(d.result().string_value(), "done " + id);
  });
  Finish({id});
  poller.join();

  auto unknown = c->Get("/v1/tasks/0123456789abcdef0123456789abcdef");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_NE(ErrorOf(unknown->body).second.find("is not known"), std::string::npos);
}

// Capability routing over REST (docs/ENDPOINTS.md): a group submit names the member it went
// to, and a function the endpoint lacks the devices for is refused with 400 FAILED_PRECONDITION.
TEST_F(RestGatewayTest, GroupSubmitsNameTheMemberAndMissingDevicesAreRefused) {
  auto rec = *store_.GetEndpoint("ep1");
  rec->set_group("beamline");
  rec->set_worker_count(1);
  auto* cpu = rec->add_devices();
  cpu->set_kind("cpu");
  cpu->set_count(2);
  ASSERT_TRUE(store_.PutEndpoint(*rec).ok());
  auto c = Client();
  auto reg = c->Post(
      "/v1/functions",
      R"({"function": {"name": "train", "kernel": "echo@1", "requirements": {"device_classes": ["gpu"]}}})", kJson);
  ASSERT_TRUE(reg);
  ASSERT_EQ(reg->status, 201) << reg->body;
  EXPECT_NE(reg->body.find(R"("requirements":{"device_classes":["gpu"]})"), std::string::npos) << reg->body;
  RegisterFunctions();

  auto r = c->Post("/v1/tasks", R"({"function": "echo", "endpoint": "group:beamline", "args": [{"int_value": "1"}]})",
                   kJson);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(ParseJson<v1::SubmitResponse>(r->body).endpoint(), "ep1");

  auto refused =
      c->Post("/v1/tasks", R"({"function": "train", "endpoint": "ep1", "args": [{"int_value": "1"}]})", kJson);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400);
  auto [code, message] = ErrorOf(refused->body);
  EXPECT_EQ(code, "FAILED_PRECONDITION");
  EXPECT_NE(message.find("no device of class 'gpu'"), std::string::npos) << message;
}

TEST_F(RestGatewayTest, LongPollsAreCutToTheConfiguredMaximum) {
  RestOptions o = Options();
  o.max_wait_ms = 100;
  StartGateway(o);
  RegisterFunctions();
  auto c = Client();
  const std::string id = SubmitEcho(*c, 1);
  const auto start = std::chrono::steady_clock::now();
  auto r = c->Get("/v1/tasks/" + id + "?wait_ms=600000");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
  auto batch = c->Post("/v1/tasks:get", R"({"task_ids": [")" + id + R"("], "wait_ms": "600000"})", kJson);
  ASSERT_TRUE(batch);
  ASSERT_EQ(batch->status, 200) << batch->body;
  EXPECT_EQ(ParseJson<v1::GetTasksResponse>(batch->body).tasks(0).state(), v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
}

TEST_F(RestGatewayTest, BatchSubmitGetCancelAndDelete) {
  RegisterFunctions();
  auto c = Client();
  auto r = c->Post("/v1/tasks:batch", R"({"tasks": [
      {"function": "echo", "endpoint": "ep1", "args": [{"string_value": "a"}]},
      {"function": "echo", "endpoint": "ep1", "args": [{"list_value": {"items": [{"null_value": true}]}}]},
      {"function": "echo", "endpoint": "ep1", "args": [{"bytes_value": "AAEC"}]}]})",
                   kJson);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  auto ids = ParseJson<v1::SubmitBatchResponse>(r->body).task_ids();
  ASSERT_EQ(ids.size(), 3);
  auto got = c->Post("/v1/tasks:get",
                     R"({"task_ids": [")" + ids[0] + R"(", ")" + ids[2] + R"("], "include_args": true})", kJson);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->status, 200) << got->body;
  auto recs = ParseJson<v1::GetTasksResponse>(got->body);
  ASSERT_EQ(recs.tasks_size(), 2);
  EXPECT_EQ(recs.tasks(0).args(0).string_value(), "a");
  EXPECT_EQ(recs.tasks(1).args(0).bytes_value(), std::string("\0\1\2", 3));

  auto cancelled = c->Post("/v1/tasks/" + ids[1] + ":cancel", "", kJson);
  ASSERT_TRUE(cancelled);
  ASSERT_EQ(cancelled->status, 200) << cancelled->body;
  EXPECT_EQ(ParseJson<v1::CancelResponse>(cancelled->body).task().state(), v1::TASK_STATE_CANCELLED);
  auto wrong = c->Post("/v1/tasks/" + ids[1] + ":cancel", R"({"task_id": "other"})", kJson);
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 400);

  auto del = c->Post("/v1/tasks:delete", R"({"task_ids": [")" + ids[1] + R"("]})", kJson);
  ASSERT_TRUE(del);
  ASSERT_EQ(del->status, 200) << del->body;
  EXPECT_EQ(del->body, R"({"deleted":1})");
  auto gone = c->Get("/v1/tasks/" + ids[1]);
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);

  // The API's own refusals keep their codes: a batch over max_batch is a size limit.
  std::string big = R"({"tasks": [)";
  for (int i = 0; i <= limits_.max_batch; ++i) big += std::string(i ? "," : "") + R"({"function": "echo"})";
  big += "]}";
  auto over = c->Post("/v1/tasks:batch", big, kJson);
  ASSERT_TRUE(over);
  EXPECT_EQ(over->status, 413);
  EXPECT_NE(ErrorOf(over->body).second.find("max_batch"), std::string::npos);
  auto precondition =
      c->Post("/v1/tasks", R"({"function": "add", "endpoint": "ep1", "args": [{"string_value": "x"}]})", kJson);
  ASSERT_TRUE(precondition);
  EXPECT_EQ(precondition->status, 400) << precondition->body;
}

TEST_F(RestGatewayTest, WaitStreamsEachResultAsItFinishesThenAStatusLine) {
  RegisterFunctions();
  auto c = Client();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(SubmitEcho(*c, i));
  Finish({ids[0]});
  // Each line that arrives finishes the next task: the stream must deliver them one by one.
  std::string pending;
  std::vector<std::string> lines;
  const std::string body =
      R"({"task_ids": [")" + ids[0] + R"(", ")" + ids[1] + R"(", ")" + ids[2] + R"("], "timeout_ms": "20000"})";
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/tasks:wait";
  req.headers = {{"Authorization", "Bearer alice-token"}};
  req.body = body;
  req.set_header("Content-Type", kJson);
  int status = 0;
  std::string content_type;
  req.response_handler = [&](const httplib::Response& r) {
    status = r.status;
    content_type = r.get_header_value("Content-Type");
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    pending.append(data, n);
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.empty()) continue;  // a keep-alive
      lines.push_back(line);
      if (lines.size() == 1) Finish({ids[2]});
      if (lines.size() == 2) Finish({ids[1]});
    }
    return true;
  };
  auto r = c->send(req);
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(status, 200);
  EXPECT_EQ(content_type, "application/x-ndjson");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(ParseJson<v1::TaskRecord>(lines[0]).id(), ids[0]);
  EXPECT_EQ(ParseJson<v1::TaskRecord>(lines[1]).id(), ids[2]);
  auto last = ParseJson<v1::TaskRecord>(lines[2]);
  EXPECT_EQ(last.id(), ids[1]);
  EXPECT_EQ(last.state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(lines[3], R"({"status":{"code":"OK","message":""}})");
}

TEST_F(RestGatewayTest, WaitFailsWithAnHttpStatusBeforeStreamingAndWithAStatusLineAfter) {
  RegisterFunctions();
  auto c = Client();
  const std::string id = SubmitEcho(*c, 1);
  auto unknown = c->Post("/v1/tasks:wait", R"({"task_ids": [")" + id + R"(", "nope"]})", kJson);
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(ErrorOf(unknown->body).first, "NOT_FOUND");
  auto late = c->Post("/v1/tasks:wait", R"({"task_ids": [")" + id + R"("], "timeout_ms": 50})", kJson);
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 200);
  EXPECT_EQ(late->body.substr(late->body.find_first_not_of('\n')),
            R"({"status":{"code":"DEADLINE_EXCEEDED","message":"1 task(s) did not finish within 50 ms"}})"
            "\n");
}

TEST_F(RestGatewayTest, AStreamWhoseClientLeftFreesItsThread) {
  RestOptions o = Options();
  o.threads = 1;  // while the stream holds the thread, nothing else is served
  o.stream_keepalive = 20ms;
  StartGateway(o);
  RegisterFunctions();
  const std::string id = SubmitEcho(*Client(), 1);
  {
    auto c = Client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/tasks:wait";
    req.headers = {{"Authorization", "Bearer alice-token"}};
    req.body = R"({"task_ids": [")" + id + R"("]})";  // no timeout: until the client leaves
    bool keepalive = false;
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      keepalive = std::string(data, n).find_first_not_of('\n') == std::string::npos;
      return false;  // hang up at the first bytes
    };
    auto r = c->send(req);
    EXPECT_FALSE(r);  // cancelled by us
    EXPECT_TRUE(keepalive);
  }
  // The one thread is free again only if the stream noticed.
  auto h = Client()->Get("/v1/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST_F(RestGatewayTest, RateLimitsAndOutagesCarryRetryAfter) {
  auto busy = Client("busy")->Get("/v1/functions");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 429);
  EXPECT_EQ(busy->get_header_value("Retry-After"), "2");  // 1.5 s, rounded up
  EXPECT_EQ(ErrorOf(busy->body).first, "RESOURCE_EXHAUSTED");
  auto down = Client("store-down")->Get("/v1/functions");
  ASSERT_TRUE(down);
  EXPECT_EQ(down->status, 503);
  EXPECT_EQ(down->get_header_value("Retry-After"), "1");
  EXPECT_EQ(ErrorOf(down->body).first, "UNAVAILABLE");
}

TEST_F(RestGatewayTest, BadInputGetsAClearError) {
  RegisterFunctions();
  auto c = Client();
  struct Case {
    std::string name, method, path, body;
    int status;
    std::string message_has;
  };
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  const std::string deep_object = R"({"args": )" + std::string(10000, '[') + std::string(10000, ']') + "}";
  const std::vector<Case> cases = {
      {"malformed JSON", "POST", "/v1/tasks", R"({"function": "echo",)", 400, "is not a valid loom.v1.SubmitRequest"},
      {"not an object", "POST", "/v1/tasks", R"([1, 2])", 400, "Root element must be a message"},
      {"wrong type", "POST", "/v1/tasks", R"({"function": 5})", 400, "(function): invalid value 5"},
      {"wrong type deep", "POST", "/v1/tasks", R"({"args": [{"int_value": "x"}]})", 400, "args[0].int_value"},
      {"unknown field", "POST", "/v1/tasks", R"({"function": "echo", "colour": "red"})", 400, "colour"},
      {"two kinds of value", "POST", "/v1/tasks", R"({"args": [{"int_value": 1, "string_value": "x"}]})", 400,
       "already set"},
      {"not UTF-8", "POST", "/v1/tasks", "{\"function\": \"\xff\"}", 400, "non UTF-8"},
      {"10,000 deep", "POST", "/v1/tasks", deep, 400, "nesting deeper than 64"},
      {"10,000 deep inside", "POST", "/v1/tasks", deep_object, 400, "nesting deeper than 64"},
      {"over the body limit", "POST", "/v1/tasks", std::string(64 * 1024 + 1, ' '), 413,
       "over the limit of 65536 bytes"},
      {"missing content", "POST", "/v1/tasks", "", 400, "needs a JSON body: a loom.v1.SubmitRequest"},
      {"blank content", "POST", "/v1/functions", " \n", 400, "needs a JSON body"},
      {"body where none is taken", "DELETE", "/v1/tokens/abc", R"({"x": 1})", 400, "takes no request body"},
      {"unknown query parameter", "GET", "/v1/tasks/abc?wait=5", "", 400, "unknown query parameter 'wait'"},
      {"bad wait_ms", "GET", "/v1/tasks/abc?wait_ms=-5", "", 400, "wait_ms=-5 is not a whole number"},
      {"bad include_args", "GET", "/v1/tasks/abc?include_args=maybe", "", 400, "not true or false"},
      {"unknown route", "GET", "/v1/nothing-here", "", 404, "no route for GET /v1/nothing-here"},
      {"unknown version", "POST", "/v2/tasks", "{}", 404, "no route for POST /v2/tasks"},
      {"long path", "GET", "/v1/tasks/" + std::string(5000, 'a'), "", 414, "longer than 2048"},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    httplib::Result r = k.method == "GET"      ? c->Get(k.path)
                        : k.method == "DELETE" ? c->Delete(k.path, k.body, kJson)
                                               : c->Post(k.path, k.body, kJson);
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, k.status) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), kJson);
    auto [code, message] = ErrorOf(r->body);
    EXPECT_NE(message.find(k.message_has), std::string::npos) << message;
  }
  // A wrong method names the ones that are allowed.
  auto put = c->Put("/v1/endpoints/ep1", "{}", kJson);
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 405);
  EXPECT_EQ(put->get_header_value("Allow"), "GET, PATCH");
  EXPECT_NE(ErrorOf(put->body).second.find("method PUT is not allowed on /v1/endpoints/ep1"), std::string::npos);
  auto get_cancel = c->Get("/v1/tasks/abc:cancel");
  ASSERT_TRUE(get_cancel);
  EXPECT_EQ(get_cancel->status, 405);
  EXPECT_EQ(get_cancel->get_header_value("Allow"), "POST");
  // Nothing of the above reached the store.
  EXPECT_EQ(*store_.QueueDepth("ep1"), 0);
}

TEST_F(RestGatewayTest, BodiesOverTheLimitAreRefusedWhateverTheirEncoding) {
  auto c = Client();
  // Chunked: no Content-Length for httplib to check; the route stops reading at the limit.
  // Only a little more than the limit is sent: the client must have written it all before the
  // server answers and closes, or it may see the connection reset under its last writes.
  size_t sent = 0;
  auto r = c->Post(
      "/v1/tasks",
      [&](size_t, httplib::DataSink& sink) {
        if (sent >= 80 * 1024) {
          sink.done();
          return true;
        }
        std::string chunk(16 * 1024, ' ');
        sent += chunk.size();
        return sink.write(chunk.data(), chunk.size());
      },
      kJson);
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(ErrorOf(r->body).second.find("over the limit of 65536 bytes"), std::string::npos);
  // Compressed: a small Content-Length, a large body once inflated.
  auto gzip = Client();
  gzip->set_compress(true);
  auto inflated = gzip->Post("/v1/tasks", std::string(1 << 20, ' '), kJson);
  ASSERT_TRUE(inflated) << httplib::to_string(inflated.error());
  EXPECT_EQ(inflated->status, 413);
  EXPECT_NE(ErrorOf(inflated->body).second.find("over the limit of 65536 bytes"), std::string::npos);
  // A POST without Content-Length (curl -X POST) has an empty body, not one read until the
  // connection closes.
  auto [host, port] = Split(gateway_->address());
  httplib::Client raw(host, port);
  raw.set_read_timeout(5, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/tasks";
  req.headers = {{"Authorization", "Bearer alice-token"}};
  auto empty = raw.send(req);
  ASSERT_TRUE(empty) << httplib::to_string(empty.error());
  EXPECT_EQ(empty->status, 400);
  EXPECT_NE(ErrorOf(empty->body).second.find("needs a JSON body"), std::string::npos);
}

TEST_F(RestGatewayTest, KeepsServingOthersWhileBadRequestsHammerIt) {
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread probe([&] {
    auto c = Client("");
    do {
      auto r = c->Get("/v1/health");
      (r && r->status == 200 ? ok : failed)++;
    } while (!stop);
  });
  const std::string deep = std::string(10000, '{') + std::string(10000, '}');
  const std::string big(200 * 1024, 'x');
  int refused = 0;
  for (int i = 0; i < 40; ++i) {
    auto c = Client();
    for (const auto& [path, body] : std::vector<std::pair<std::string, std::string>>{{"/v1/tasks", "{{{"},
                                                                                     {"/v1/tasks", deep},
                                                                                     {"/v1/tasks", big},
                                                                                     {"/v1/nope", "x"},
                                                                                     {"/v1/tasks:batch", "[]"}}) {
      auto r = c->Post(path, body, kJson);
      if (r && r->status >= 400 && r->status < 500) ++refused;
    }
  }
  stop = true;
  probe.join();
  EXPECT_EQ(refused, 200);
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(failed.load(), 0);
}

TEST_F(RestGatewayTest, StoppingEndsLongPollsPromptly) {
  RestOptions o = Options();
  o.max_wait_ms = 600000;
  StartGateway(o);
  RegisterFunctions();
  const std::string id = SubmitEcho(*Client(), 1);
  std::atomic<int> status{-1};
  std::thread poller([&] {
    auto r = Client()->Get("/v1/tasks/" + id + "?wait_ms=600000");
    status = r ? r->status : 0;
  });
  // Wait until the poll is past authentication, then stop the gateway.
  ASSERT_TRUE(loom::testing::WaitFor([&] { return auth_.calls.load() >= 4; },  // 2 registrations, 1 submit, the poll
                                     10s));
  const auto start = std::chrono::steady_clock::now();
  gateway_.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s);
  poller.join();
  // Answered, not left waiting: poll again.
  EXPECT_EQ(status, 503);
}

TEST_F(RestGatewayTest, RefusesBadOptions) {
  RestOptions o = Options();
  o.address = "127.0.0.1";
  EXPECT_EQ(RestGateway::Start(o, api_.get(), nullptr).status().code(), StatusCode::kInvalidArgument);
  o = Options();
  o.tls_cert_file = "/nonexistent/cert.pem";
  EXPECT_EQ(RestGateway::Start(o, api_.get(), nullptr).status().code(), StatusCode::kInvalidArgument);
  o.tls_key_file = "/nonexistent/key.pem";
  auto s = RestGateway::Start(o, api_.get(), nullptr).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("/nonexistent/cert.pem"), std::string::npos);
  o = Options();
  o.address = gateway_->address();  // taken
  EXPECT_EQ(RestGateway::Start(o, api_.get(), nullptr).status().code(), StatusCode::kUnavailable);
}

// A gateway over an empty in-memory API, serving HTTPS with the given files.
class RestTlsTest : public ::testing::Test {
 protected:
  Result<std::unique_ptr<RestGateway>> StartHttps(const std::string& cert_file, const std::string& key_file) {
    RestOptions o;
    o.address = "127.0.0.1:0";
    o.tls_cert_file = cert_file;
    o.tls_key_file = key_file;
    return RestGateway::Start(o, &api_, nullptr);
  }
  loom::testing::TempDir dir_{"rest-tls"};
  InMemoryTaskStore store_;
  CompletionHub hub_;
  NullNotifier notifier_;
  LoomApi api_{&store_, &hub_, &notifier_, {}};
};

TEST_F(RestTlsTest, ServesHttpsWithTheGivenCertificateAndRefusesPlainHttp) {
  auto tls = loom::testing::MakeSelfSignedCert(dir_.path());
  ASSERT_TRUE(tls.ok()) << tls.status().ToString();
  auto gw = StartHttps(tls->cert_file, tls->key_file);
  ASSERT_TRUE(gw.ok()) << gw.status().ToString();
  EXPECT_TRUE((*gw)->tls());
  auto [host, port] = Split((*gw)->address());

  httplib::SSLClient https(host, port);
  https.set_ca_cert_path(tls->ca_file.c_str());
  https.enable_server_certificate_verification(true);
  auto r = https.Get("/v1/health");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"status":"ok"})");
  auto fns = https.Get("/v1/functions");
  ASSERT_TRUE(fns);
  EXPECT_EQ(fns->status, 200);

  httplib::Client plain(host, port);
  plain.set_read_timeout(5, 0);
  auto refused = plain.Get("/v1/health");
  EXPECT_FALSE(refused) << "plain HTTP answered with " << refused->status;

  // A client that trusts another certificate refuses this server.
  auto other = loom::testing::MakeSelfSignedCert(dir_.path(), {.file_prefix = "other"});
  ASSERT_TRUE(other.ok());
  httplib::SSLClient wary(host, port);
  wary.set_ca_cert_path(other->ca_file.c_str());
  wary.enable_server_certificate_verification(true);
  auto untrusted = wary.Get("/v1/health");
  EXPECT_FALSE(untrusted);
  EXPECT_EQ(untrusted.error(), httplib::Error::SSLServerVerification);
}

TEST_F(RestTlsTest, RefusesAKeyThatIsNotTheCertificates) {
  auto a = loom::testing::MakeSelfSignedCert(dir_.path(), {.file_prefix = "a"});
  auto b = loom::testing::MakeSelfSignedCert(dir_.path(), {.file_prefix = "b"});
  ASSERT_TRUE(a.ok() && b.ok());
  auto gw = StartHttps(a->cert_file, b->key_file);
  EXPECT_EQ(gw.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(gw.status().message().find("the key must be the certificate's"), std::string::npos);
}

}  // namespace
}  // namespace loom::service
