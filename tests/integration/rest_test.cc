// The REST gateway of a real loom-service (started by LocalFabric with --rest-address
// 127.0.0.1:0, read back from its ready file): tasks submitted over REST run on a real endpoint,
// their results come back by long poll and by stream, and the gRPC SDK sees the same tasks.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include "common/local_fabric.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;

template <typename M>
M ParseJson(const std::string& body) {
  M m;
  auto s = google::protobuf::util::JsonStringToMessage(body, &m);
  EXPECT_TRUE(s.ok()) << s.ToString() << " in " << body;
  return m;
}

constexpr const char* kJson = "application/json";

class RestFabricTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fabric_ = loom::testing::MakeFabric("rest").release();
    Status s = fabric_->StartAll("ep", 2);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    delete fabric_;
    fabric_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(fabric_, nullptr);
    const std::string& address = fabric_->rest_address();
    ASSERT_FALSE(address.empty()) << "the service wrote no rest= line to its ready file";
    const size_t colon = address.rfind(':');
    host_ = address.substr(0, colon);
    port_ = std::stoi(address.substr(colon + 1));
    http_ = std::make_unique<httplib::Client>(host_, port_);
    http_->set_read_timeout(60, 0);
    http_->set_bearer_token_auth(fabric_->token());
    for (const char* fn : {R"({"function": {"name": "add", "kernel": "add@1"}})",
                           R"({"function": {"name": "echo", "kernel": "echo@1"}})"}) {
      auto r = http_->Post("/v1/functions", fn, kJson);
      ASSERT_TRUE(r) << httplib::to_string(r.error());
      ASSERT_TRUE(r->status == 201 || r->status == 200) << r->body;
    }
  }
  static LocalFabric* fabric_;
  std::string host_;
  int port_ = 0;
  std::unique_ptr<httplib::Client> http_;  // with the fabric's admin token
};
LocalFabric* RestFabricTest::fabric_ = nullptr;

TEST_F(RestFabricTest, TokensGuardEveryRouteButHealthAndTenantsAreKeptApart) {
  const std::string& address = fabric_->rest_address();
  const size_t colon = address.rfind(':');
  httplib::Client anonymous(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  auto health = anonymous.Get("/v1/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto none = anonymous.Get("/v1/functions");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401) << none->body;
  EXPECT_EQ(none->get_header_value("WWW-Authenticate").rfind("Bearer", 0), 0u);
  EXPECT_NE(none->body.find("UNAUTHENTICATED"), std::string::npos) << none->body;
  anonymous.set_bearer_token_auth("loom_not_a_token");
  auto malformed = anonymous.Get("/v1/functions");
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->status, 401) << malformed->body;

  // The admin's task, seen by another user: exactly like an unknown id.
  auto submitted =
      http_->Post("/v1/tasks", R"({"function": "echo", "endpoint": "ep", "args": [{"int_value": "1"}]})", kJson);
  ASSERT_TRUE(submitted);
  ASSERT_EQ(submitted->status, 201) << submitted->body;
  const size_t at = submitted->body.find("\"task_id\":\"") + 11;
  const std::string id = submitted->body.substr(at, 32);
  auto admin = loom::testing::ConnectClient(*fabric_);
  ASSERT_NE(admin, nullptr);
  v1::CreateTokenRequest for_mallory;
  for_mallory.set_user("mallory");
  auto token = admin->CreateToken(for_mallory);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  httplib::Client mallory(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  mallory.set_bearer_token_auth(token->token());
  auto theirs = mallory.Get("/v1/tasks/" + id);
  auto unknown = mallory.Get("/v1/tasks/" + std::string(32, '0'));
  ASSERT_TRUE(theirs && unknown);
  EXPECT_EQ(theirs->status, 404) << theirs->body;
  EXPECT_EQ(unknown->status, 404) << unknown->body;
  std::string a = theirs->body, b = unknown->body;
  a.replace(a.find(id), id.size(), "ID");
  b.replace(b.find(std::string(32, '0')), 32, "ID");
  EXPECT_EQ(a, b);
  auto refused = mallory.Post("/v1/tasks", R"({"function": "echo", "endpoint": "ep", "args": []})", kJson);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 404) << refused->body;  // mallory has no function "echo"
}

TEST_F(RestFabricTest, ATaskSubmittedOverRestRunsOnARealEndpoint) {
  auto ep = http_->Get("/v1/endpoints/ep");
  ASSERT_TRUE(ep);
  ASSERT_EQ(ep->status, 200) << ep->body;
  EXPECT_EQ(ParseJson<v1::EndpointRecord>(ep->body).status(), v1::ENDPOINT_STATUS_ONLINE);

  auto sub = http_->Post("/v1/tasks", R"({"function": "add", "endpoint": "ep",
                                         "args": [{"int_value": "40"}, {"int_value": "2"}]})",
                         kJson);
  ASSERT_TRUE(sub);
  ASSERT_EQ(sub->status, 201) << sub->body;
  const std::string id = ParseJson<v1::SubmitResponse>(sub->body).task_id();

  auto done = http_->Get("/v1/tasks/" + id + "?wait_ms=30000");
  ASSERT_TRUE(done);
  ASSERT_EQ(done->status, 200) << done->body;
  auto rec = ParseJson<v1::TaskRecord>(done->body);
  ASSERT_EQ(rec.state(), v1::TASK_STATE_SUCCESS) << done->body;
  EXPECT_EQ(rec.result().int_value(), 42);
  EXPECT_NE(done->body.find(R"("result":{"int_value":"42"})"), std::string::npos) << done->body;

  // The same task through the gRPC SDK: one API behind both.
  auto grpc = loom::testing::ConnectClient(*fabric_);
  ASSERT_NE(grpc, nullptr);
  auto status = grpc->GetStatus(id);
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ(status->result().int_value(), 42);
}

TEST_F(RestFabricTest, ABatchStreamsItsResultsAndAKernelErrorIsAFailedTask) {
  auto sub = http_->Post("/v1/tasks:batch", R"({"tasks": [
      {"function": "echo", "endpoint": "ep", "args": [{"string_value": "one"}]},
      {"function": "echo", "endpoint": "ep", "args": [{"list_value": {"items": [{"double_value": 2.5}]}}]},
      {"function": "add", "endpoint": "ep", "args": [{"int_value": "1"}, {"int_value": "2"}]}]})",
                         kJson);
  ASSERT_TRUE(sub);
  ASSERT_EQ(sub->status, 201) << sub->body;
  auto ids = ParseJson<v1::SubmitBatchResponse>(sub->body).task_ids();
  ASSERT_EQ(ids.size(), 3);
  std::string body = R"({"timeout_ms": "30000", "task_ids": [)";
  for (int i = 0; i < ids.size(); ++i) body += std::string(i ? "," : "") + "\"" + ids[i] + "\"";
  body += "]}";
  auto wait = http_->Post("/v1/tasks:wait", body, kJson);
  ASSERT_TRUE(wait);
  ASSERT_EQ(wait->status, 200) << wait->body;
  EXPECT_EQ(wait->get_header_value("Content-Type"), "application/x-ndjson");
  std::map<std::string, v1::TaskRecord> got;
  std::string last;
  for (size_t at = 0, nl; (nl = wait->body.find('\n', at)) != std::string::npos; at = nl + 1) {
    const std::string line = wait->body.substr(at, nl - at);
    if (line.empty()) continue;
    if (line.rfind(R"({"status")", 0) == 0) {
      last = line;
      continue;
    }
    auto r = ParseJson<v1::TaskRecord>(line);
    got[r.id()] = r;
  }
  EXPECT_EQ(last, R"({"status":{"code":"OK","message":""}})");
  ASSERT_EQ(got.size(), 3u) << wait->body;
  EXPECT_EQ(got[ids[0]].result().string_value(), "one");
  EXPECT_EQ(got[ids[1]].result().list_value().items(0).double_value(), 2.5);
  EXPECT_EQ(got[ids[2]].result().int_value(), 3);

  auto fail = http_->Post("/v1/functions", R"({"function": {"name": "fail", "kernel": "fail@1"}})", kJson);
  ASSERT_TRUE(fail);
  auto bad = http_->Post("/v1/tasks",
                         R"({"function": "fail", "endpoint": "ep", "args": [{"string_value": "no beam"}]})", kJson);
  ASSERT_TRUE(bad);
  ASSERT_EQ(bad->status, 201) << bad->body;
  const std::string id = ParseJson<v1::SubmitResponse>(bad->body).task_id();
  auto rec = http_->Post("/v1/tasks:get", R"({"wait_ms": 30000, "task_ids": [")" + id + R"("]})", kJson);
  ASSERT_TRUE(rec);
  ASSERT_EQ(rec->status, 200) << rec->body;
  auto t = ParseJson<v1::GetTasksResponse>(rec->body).tasks(0);
  EXPECT_EQ(t.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(t.error(), "no beam");
  EXPECT_EQ(t.failure(), v1::FAILURE_KIND_KERNEL_ERROR);
}

TEST_F(RestFabricTest, ErrorsFromTheApiKeepTheirMeaning) {
  auto unknown_fn = http_->Post("/v1/tasks", R"({"function": "nope", "endpoint": "ep"})", kJson);
  ASSERT_TRUE(unknown_fn);
  EXPECT_EQ(unknown_fn->status, 404);
  EXPECT_NE(unknown_fn->body.find(R"("code":"NOT_FOUND")"), std::string::npos) << unknown_fn->body;
  auto wrong_args = http_->Post("/v1/tasks", R"({"function": "add", "endpoint": "ep"})", kJson);
  ASSERT_TRUE(wrong_args);
  EXPECT_EQ(wrong_args->status, 400) << wrong_args->body;
  auto health = http_->Get("/v1/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(RestFabricTest, TokensAuthenticateAndTenantsStaySeparate) {
  httplib::Client anonymous(host_, port_);
  auto refused = anonymous.Get("/v1/functions");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(refused->get_header_value("WWW-Authenticate").rfind("Bearer", 0), 0u);
  EXPECT_EQ(anonymous.Get("/v1/health")->status, 200);

  // The admin makes a token for bob; bob is bob.
  auto made = http_->Post("/v1/tokens", R"({"user": "bob", "description": "rest_test"})", kJson);
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  auto token = ParseJson<v1::CreateTokenResponse>(made->body);
  EXPECT_EQ(token.info().user(), "bob");
  httplib::Client bob(host_, port_);
  bob.set_bearer_token_auth(token.token());
  auto me = bob.Get("/v1/whoami");
  ASSERT_TRUE(me);
  ASSERT_EQ(me->status, 200) << me->body;
  EXPECT_EQ(ParseJson<v1::WhoAmIResponse>(me->body).user(), "bob");
  EXPECT_FALSE(ParseJson<v1::WhoAmIResponse>(me->body).admin());
  auto listed = bob.Get("/v1/tokens");
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->status, 200) << listed->body;
  ASSERT_EQ(ParseJson<v1::ListTokensResponse>(listed->body).tokens_size(), 1);
  EXPECT_EQ(ParseJson<v1::ListTokensResponse>(listed->body).tokens(0).id(), token.info().id());

  // The admin's task is not bob's: it answers like an unknown id.
  auto sub =
      http_->Post("/v1/tasks", R"({"function": "echo", "endpoint": "ep", "args": [{"string_value": "mine"}]})", kJson);
  ASSERT_TRUE(sub);
  ASSERT_EQ(sub->status, 201) << sub->body;
  const std::string id = ParseJson<v1::SubmitResponse>(sub->body).task_id();
  auto theirs = bob.Get("/v1/tasks/" + id);
  ASSERT_TRUE(theirs);
  EXPECT_EQ(theirs->status, 404) << theirs->body;
  auto forbidden = bob.Post("/v1/tokens", R"({"user": "carol"})", kJson);
  ASSERT_TRUE(forbidden);
  EXPECT_EQ(forbidden->status, 403) << forbidden->body;

  // Revoked through this service, bob's token stops working at once.
  auto revoked = http_->Delete("/v1/tokens/" + token.info().id());
  ASSERT_TRUE(revoked);
  EXPECT_EQ(revoked->status, 200) << revoked->body;
  auto after = bob.Get("/v1/whoami");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 401) << after->body;
}

}  // namespace
}  // namespace loom
