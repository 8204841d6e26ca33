// Authentication, tenant isolation and quotas end to end: real redis-server, loom-service,
// loom-endpoint and workers on 127.0.0.1, driven through the SDK with each user's own token.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "common/local_fabric.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"
#include "tests/support/tls_certs.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using loom::testing::MakeFabric;

class AuthFabricTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Clients here carry exactly the token each test gives them.
    ::unsetenv("LOOM_TOKEN");
    ::unsetenv("LOOM_TOKEN_FILE");
    // A low request quota for one user only ("greedy"), set in the config file.
    config_ = ::testing::TempDir() + "loom_auth_fabric_" + std::to_string(::getpid()) + ".yaml";
    std::ofstream(config_) << "quotas:\n  users:\n    greedy: {requests_per_second: 2, burst: 2}\n";
    fabric_ = MakeFabric("auth", {"--config", config_}).release();
    Status s = fabric_->StartAll("lab", 1);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    delete fabric_;
    fabric_ = nullptr;
    std::remove(config_.c_str());
  }

  void SetUp() override {
    ASSERT_NE(fabric_, nullptr);
    admin_ = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(admin_, nullptr);
  }

  // A client with `token` (empty: none at all).
  static std::unique_ptr<Client> As(const std::string& token) {
    ClientOptions o;
    o.address = fabric_->grpc_address();
    o.token = token;
    o.rpc_timeout = 10s;
    auto c = Client::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(c).value() : nullptr;
  }

  std::string TokenFor(const std::string& user, int64_t ttl_seconds = 0) {
    v1::CreateTokenRequest r;
    r.set_user(user);
    r.set_ttl_seconds(ttl_seconds);
    auto t = admin_->CreateToken(r);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? t->token() : "";
  }

  static LocalFabric* fabric_;
  static std::string config_;
  std::unique_ptr<Client> admin_;
};
LocalFabric* AuthFabricTest::fabric_ = nullptr;
std::string AuthFabricTest::config_;

TEST_F(AuthFabricTest, NoMalformedOrRevokedTokenIsUnauthenticated) {
  auto anonymous = As("");
  auto none = anonymous->ListFunctions();
  EXPECT_EQ(none.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(none.status().message().find("Bearer"), std::string::npos) << none.status().message();

  EXPECT_EQ(As("loom_nonsense")->ListFunctions().status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(As("loom_" + std::string(16, '0') + "_" + std::string(64, '0'))->ListFunctions().status().code(),
            StatusCode::kUnauthenticated);

  v1::CreateTokenRequest r;
  r.set_user("carol");
  auto t = admin_->CreateToken(r);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto carol = As(t->token());
  auto me = carol->WhoAmI();
  ASSERT_TRUE(me.ok()) << me.status().ToString();
  EXPECT_EQ(me->user(), "carol");
  EXPECT_FALSE(me->admin());
  ASSERT_TRUE(admin_->RevokeToken(t->info().id()).ok());
  EXPECT_EQ(carol->WhoAmI().status().code(), StatusCode::kUnauthenticated);
  // Every RPC is behind the check, including the streaming one.
  EXPECT_EQ(anonymous
                ->StreamResults(
                    {NewId()}, [](const v1::TaskRecord&) { return true; }, 2s)
                .code(),
            StatusCode::kUnauthenticated);
}

TEST_F(AuthFabricTest, TenantsSeeOnlyTheirOwnAndSubmitOnlyWhereAllowed) {
  auto alice = As(TokenFor("alice"));
  auto bob = As(TokenFor("bob"));
  ASSERT_TRUE(alice && bob);
  // The endpoint belongs to the fabric's admin: nobody else sees it until it is shared.
  EXPECT_EQ(alice->GetEndpoint("lab").status().code(), StatusCode::kNotFound);
  v1::UpdateEndpointRequest share;
  share.set_id("lab");
  share.mutable_allowed_users()->add_items("alice");
  ASSERT_TRUE(admin_->UpdateEndpoint(share).ok());
  ASSERT_TRUE(alice->GetEndpoint("lab").ok());

  ASSERT_TRUE(alice->RegisterFunction("sum", "add@1").ok());
  ASSERT_TRUE(bob->RegisterFunction("sum", "add@1").ok());  // bob's own "sum"
  auto id = alice->Submit("lab", "sum", {IntValue(40), IntValue(2)});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto done = alice->GetResult(*id, 30s);
  ASSERT_TRUE(done.ok() && done->has_value()) << (done.ok() ? "not finished" : done.status().ToString());
  EXPECT_EQ((*done)->state(), v1::TASK_STATE_SUCCESS);
  EXPECT_EQ((*done)->result().int_value(), 42);
  EXPECT_EQ((*done)->owner(), "alice");

  // bob: alice's task is unknown to him, her endpoint refuses him.
  auto peek = bob->GetStatus(*id);
  EXPECT_EQ(peek.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(bob->Cancel(*id).status().code(), StatusCode::kNotFound);
  auto refused = bob->Submit("lab", "sum", {IntValue(1), IntValue(2)});
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(bob->ListEndpoints()->size(), 0u);
  ASSERT_EQ(bob->ListFunctions()->size(), 1u);
  EXPECT_EQ((*bob->ListFunctions())[0].owner(), "bob");
  // Only an admin mints tokens for others.
  v1::CreateTokenRequest for_alice;
  for_alice.set_user("alice");
  EXPECT_EQ(bob->CreateToken(for_alice).status().code(), StatusCode::kPermissionDenied);
}

TEST_F(AuthFabricTest, AUserOverTheRequestQuotaIsToldToRetry) {
  auto greedy = As(TokenFor("greedy"));
  ASSERT_NE(greedy, nullptr);
  int refused = 0;
  Status last;
  for (int i = 0; i < 10; ++i) {
    auto r = greedy->WhoAmI();
    if (!r.ok()) {
      ++refused;
      last = r.status();
    }
  }
  // A burst of 2 at 2 per second: most of ten back-to-back calls are refused.
  EXPECT_GE(refused, 5);
  EXPECT_EQ(last.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(last.message().find("retry after"), std::string::npos) << last.message();
  // Other users are not affected.
  EXPECT_TRUE(admin_->WhoAmI().ok());
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

using namespace std::chrono_literals;

TEST(GrpcTlsTest, AServiceWithACertificateServesTlsOnlyAndTheSdkVerifiesIt) {
  loom::testing::TempDir certs("grpc-tls");
  auto tls = loom::testing::MakeSelfSignedCert(certs.path());
  ASSERT_TRUE(tls.ok()) << tls.status().ToString();
  auto fabric = loom::testing::MakeFabric("grpc-tls", {"--tls-cert", tls->cert_file, "--tls-key", tls->key_file});
  ASSERT_TRUE(fabric->StartRedis().ok());
  Status started = fabric->StartService();
  ASSERT_TRUE(started.ok()) << started.ToString();

  ClientOptions o;
  o.address = fabric->grpc_address();
  o.token = fabric->token();
  o.rpc_timeout = 5s;
  o.tls_ca_file = tls->ca_file;
  auto secure = Client::Connect(o);
  ASSERT_TRUE(secure.ok()) << secure.status().ToString();
  auto me = (*secure)->WhoAmI();
  ASSERT_TRUE(me.ok()) << me.status().ToString();
  EXPECT_TRUE(me->admin());

  // Plaintext to the TLS port never gets through.
  o.tls_ca_file.clear();
  o.rpc_timeout = 1s;
  auto plain = Client::Connect(o);
  EXPECT_EQ(plain.status().code(), StatusCode::kUnavailable);
  // A certificate the client does not trust is refused too.
  loom::testing::CertOptions another;
  another.file_prefix = "other";
  auto other = loom::testing::MakeSelfSignedCert(certs.path(), another);
  ASSERT_TRUE(other.ok());
  o.tls_ca_file = other->ca_file;
  EXPECT_EQ(Client::Connect(o).status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace loom
