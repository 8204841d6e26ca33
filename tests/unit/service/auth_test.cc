// Bearer tokens (TokenAuthenticator over the in-memory token store), quotas, and tenant
// isolation in LoomApi: what one user may see and do with another's functions, endpoints,
// tasks and tokens.
#include "service/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/kernel_api.h"
#include "common/util.h"
#include "service/api.h"
#include "service/memory_task_store.h"
#include "service/quota.h"

namespace loom::service {
namespace {

class NullNotifier : public DispatchNotifier {
 public:
  void TasksQueued(const std::vector<std::string>&) override {}
  void TasksDispatched(const std::string&, const std::string&, int64_t, std::vector<v1::TaskSpec>, int64_t) override {}
  void TasksCancelled(const std::string&, const std::vector<std::string>&) override {}
};

// ------------------------------------------------------------------ tokens

TEST(TokenTest, ParseAcceptsOnlyTheLoomShape) {
  const std::string id(16, 'a'), secret(64, 'b');
  auto ok = token::Parse("loom_" + id + "_" + secret);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->first, id);
  EXPECT_EQ(ok->second, secret);
  EXPECT_FALSE(token::Parse("").has_value());
  EXPECT_FALSE(token::Parse("loom_" + id + "-" + secret).has_value());
  EXPECT_FALSE(token::Parse("loom_" + id + "_" + secret + "0").has_value());
  EXPECT_FALSE(token::Parse("loom_" + std::string(16, 'G') + "_" + secret).has_value());
  EXPECT_FALSE(token::Parse("xxxx_" + id + "_" + secret).has_value());
  EXPECT_EQ(token::Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_NE(token::RandomHex(32), token::RandomHex(32));
  EXPECT_EQ(token::RandomHex(8).size(), 16u);
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  InMemoryTokenStore store_;
  TokenAuthenticator auth_{&store_, {}};
};

TEST_F(AuthenticatorTest, AcceptsAFreshTokenAndSaysWhoItIs) {
  auto t = auth_.Create("alice", false, std::chrono::seconds(0), "laptop");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->info().user(), "alice");
  EXPECT_EQ(t->info().expires_unix_nanos(), 0);
  auto who = auth_.Authenticate("Bearer " + t->token());
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  EXPECT_EQ(who->user, "alice");
  EXPECT_FALSE(who->admin);
  // The scheme is case-insensitive.
  EXPECT_TRUE(auth_.Authenticate("bearer " + t->token()).ok());
  // The store holds a digest, never the secret.
  auto stored = store_.GetToken(t->info().id());
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ(t->token().find((*stored)->secret_sha256), std::string::npos);
  EXPECT_EQ((*stored)->secret_sha256, token::Sha256Hex(token::Parse(t->token())->second));
}

TEST_F(AuthenticatorTest, RefusesMissingMalformedUnknownWrongAndExpiredTokensWithTheReason) {
  auto t = auth_.Create("alice", false, std::chrono::seconds(0), "");
  ASSERT_TRUE(t.ok());
  auto code_and_message = [&](const std::string& header) {
    auto r = auth_.Authenticate(header);
    EXPECT_FALSE(r.ok()) << header;
    return std::make_pair(r.status().code(), r.status().message());
  };
  auto [c1, m1] = code_and_message("");
  EXPECT_EQ(c1, StatusCode::kUnauthenticated);
  EXPECT_NE(m1.find("no credentials"), std::string::npos) << m1;
  auto [c2, m2] = code_and_message("Basic dXNlcjpwYXNz");
  EXPECT_EQ(c2, StatusCode::kUnauthenticated);
  EXPECT_NE(m2.find("not a bearer token"), std::string::npos) << m2;
  auto [c3, m3] = code_and_message("Bearer not-a-token");
  EXPECT_EQ(c3, StatusCode::kUnauthenticated);
  EXPECT_NE(m3.find("malformed"), std::string::npos) << m3;
  auto [c4, m4] = code_and_message("Bearer loom_" + std::string(16, '0') + "_" + std::string(64, '0'));
  EXPECT_EQ(c4, StatusCode::kUnauthenticated);
  EXPECT_NE(m4.find("unknown or was revoked"), std::string::npos) << m4;
  // The right id with another secret.
  std::string forged = t->token();
  forged.back() = forged.back() == '0' ? '1' : '0';
  auto [c5, m5] = code_and_message("Bearer " + forged);
  EXPECT_EQ(c5, StatusCode::kUnauthenticated);

  StoredToken old;
  old.info.set_id(std::string(16, 'e'));
  old.info.set_user("alice");
  old.info.set_expires_unix_nanos(NowNanos() - 1000000000);
  old.secret_sha256 = token::Sha256Hex(std::string(64, 'e'));
  ASSERT_TRUE(store_.PutToken(old).ok());
  auto [c6, m6] = code_and_message("Bearer loom_" + std::string(16, 'e') + "_" + std::string(64, 'e'));
  EXPECT_EQ(c6, StatusCode::kUnauthenticated);
  EXPECT_NE(m6.find("expired"), std::string::npos) << m6;
}

TEST_F(AuthenticatorTest, ARevokedTokenStopsWorkingAtOnceDespiteTheCache) {
  auto t = auth_.Create("alice", false, std::chrono::seconds(0), "");
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(auth_.Authenticate("Bearer " + t->token()).ok());  // now cached
  ASSERT_TRUE(auth_.Revoke(t->info().id()).ok());
  EXPECT_EQ(auth_.Authenticate("Bearer " + t->token()).status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(auth_.Revoke(t->info().id()).code(), StatusCode::kNotFound);
}

// A store that can be made to fail, as Redis does while it restarts.
class FlakyTokenStore final : public TokenStore {
 public:
  Status PutToken(const StoredToken& t) override { return inner.PutToken(t); }
  Result<std::optional<StoredToken>> GetToken(const std::string& id) override {
    if (down) return Unavailable("redis is down");
    return inner.GetToken(id);
  }
  Result<bool> DeleteToken(const std::string& id) override { return inner.DeleteToken(id); }
  Result<std::vector<v1::TokenInfo>> ListTokens() override { return inner.ListTokens(); }
  InMemoryTokenStore inner;
  bool down = false;
};

TEST(AuthenticatorOutageTest, AKnownTokenOutlivesARedisOutageAndAnUnknownOneIsUnavailable) {
  FlakyTokenStore store;
  TokenAuthenticatorOptions o;
  o.cache_ttl = std::chrono::milliseconds(0);  // every check asks the store
  TokenAuthenticator auth(&store, o);
  auto known = auth.Create("alice", false, std::chrono::seconds(0), "");
  auto other = auth.Create("bob", false, std::chrono::seconds(0), "");
  ASSERT_TRUE(known.ok() && other.ok());
  ASSERT_TRUE(auth.Authenticate("Bearer " + known->token()).ok());
  store.down = true;
  auto during = auth.Authenticate("Bearer " + known->token());
  ASSERT_TRUE(during.ok()) << during.status().ToString();
  EXPECT_EQ(during->user, "alice");
  EXPECT_EQ(auth.Authenticate("Bearer " + other->token()).status().code(), StatusCode::kUnavailable);
  // A wrong secret is still wrong.
  std::string forged = known->token();
  forged.back() = forged.back() == '0' ? '1' : '0';
  EXPECT_EQ(auth.Authenticate("Bearer " + forged).status().code(), StatusCode::kUnauthenticated);
}

TEST_F(AuthenticatorTest, ListsLiveTokensByUser) {
  ASSERT_TRUE(auth_.Create("alice", false, std::chrono::seconds(0), "a").ok());
  ASSERT_TRUE(auth_.Create("alice", false, std::chrono::seconds(3600), "b").ok());
  ASSERT_TRUE(auth_.Create("bob", false, std::chrono::seconds(0), "c").ok());
  EXPECT_EQ(auth_.List("alice")->size(), 2u);
  EXPECT_EQ(auth_.List("bob")->size(), 1u);
  EXPECT_EQ(auth_.List("*")->size(), 3u);
}

TEST_F(AuthenticatorTest, BootstrapWritesAPrivateAdminTokenOnceAndKeepsIt) {
  const std::string path = ::testing::TempDir() + "loom_bootstrap_" + std::to_string(::getpid()) + ".token";
  std::filesystem::remove(path);
  auto user = auth_.EnsureBootstrapToken(path, "root");
  ASSERT_TRUE(user.ok()) << user.status().ToString();
  EXPECT_EQ(*user, "root");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string first;
  std::getline(std::ifstream(path), first);
  auto who = auth_.Authenticate("Bearer " + first);
  ASSERT_TRUE(who.ok());
  EXPECT_TRUE(who->admin);
  // A second start keeps the same token.
  ASSERT_TRUE(auth_.EnsureBootstrapToken(path, "root").ok());
  std::string second;
  std::getline(std::ifstream(path), second);
  EXPECT_EQ(first, second);
  // A file whose token was revoked gets a new one.
  ASSERT_TRUE(auth_.Revoke(token::Parse(first)->first).ok());
  ASSERT_TRUE(auth_.EnsureBootstrapToken(path, "root").ok());
  std::string third;
  std::getline(std::ifstream(path), third);
  EXPECT_NE(third, first);
  EXPECT_TRUE(auth_.Authenticate("Bearer " + third).ok());
  std::filesystem::remove(path);
}

// ------------------------------------------------------------------ quotas

TEST(QuotaTest, TheRateQuotaRefillsOverTimeAndSaysWhenToRetry) {
  QuotaOptions o;
  o.defaults.requests_per_second = 10;
  o.defaults.burst = 2;
  o.users["vip"].requests_per_second = 0;  // no limit
  Quotas q(o);
  const auto t0 = Quotas::Clock::now();
  EXPECT_TRUE(q.AdmitRequest("alice", t0).ok());
  EXPECT_TRUE(q.AdmitRequest("alice", t0).ok());
  Status over = q.AdmitRequest("alice", t0);
  EXPECT_EQ(over.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(over.retry_after_ms(), 100);
  EXPECT_NE(over.message().find("request quota"), std::string::npos) << over.message();
  // Users have buckets of their own.
  EXPECT_TRUE(q.AdmitRequest("bob", t0).ok());
  // A tenth of a second refills one request.
  EXPECT_TRUE(q.AdmitRequest("alice", t0 + std::chrono::milliseconds(100)).ok());
  EXPECT_FALSE(q.AdmitRequest("alice", t0 + std::chrono::milliseconds(100)).ok());
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(q.AdmitRequest("vip", t0).ok());
}

TEST(QuotaTest, TasksInFlightAreReservedAndGivenBackWhenTheyFinish) {
  QuotaOptions o;
  o.defaults.max_in_flight = 3;
  Quotas q(o);
  EXPECT_TRUE(q.ReserveTasks("alice", 2).ok());
  Status over = q.ReserveTasks("alice", 2);
  EXPECT_EQ(over.code(), StatusCode::kResourceExhausted);
  EXPECT_GT(over.retry_after_ms(), 0);
  EXPECT_EQ(q.InFlight("alice"), 2);
  v1::TaskRecord done;
  done.set_owner("alice");
  q.TasksFinished({done});
  EXPECT_EQ(q.InFlight("alice"), 1);
  EXPECT_TRUE(q.ReserveTasks("alice", 2).ok());
  q.ReleaseTasks("alice", 3);
  EXPECT_EQ(q.InFlight("alice"), 0);
  // A task submitted before this process started does not go negative.
  q.TasksFinished({done});
  EXPECT_EQ(q.InFlight("alice"), 0);
}

// ------------------------------------------------------------------ tenancy in LoomApi

class TenancyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    security_.tokens = &tokens_;
    api_ = std::make_unique<LoomApi>(&store_, &hub_, &notifier_, ServiceLimits(), nullptr, nullptr, security_);
    // alice owns endpoint "lab" (offering add@1), and a function "add2".
    v1::CreateEndpointRequest ce;
    ce.set_name("lab");
    auto lab = api_->CreateEndpoint(ce, alice_);
    ASSERT_TRUE(lab.ok()) << lab.status().ToString();
    v1::EndpointRecord rec = *lab;
    *rec.add_kernels() = MakeKernelInfo("add", "1", "a+b",
                                        {Param("a", v1::VALUE_TYPE_NUMBER, ""), Param("b", v1::VALUE_TYPE_NUMBER, "")},
                                        v1::VALUE_TYPE_NUMBER);
    ASSERT_TRUE(store_.PutEndpoint(rec).ok());
    api_->EndpointUpdated(rec);
    Register(alice_, "add2");
  }

  void Register(const Principal& who, const std::string& name) {
    v1::RegisterFunctionRequest r;
    r.mutable_function()->set_name(name);
    r.mutable_function()->set_kernel("add@1");
    auto f = api_->RegisterFunction(r, who);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
  }

  Result<v1::SubmitResponse> Submit(const Principal& who, const std::string& fn) {
    v1::SubmitRequest r;
    r.set_function(fn);
    r.set_endpoint("lab");
    *r.add_args() = IntValue(1);
    *r.add_args() = IntValue(2);
    return api_->Submit(r, who);
  }

  Status Share(const Principal& who, std::vector<std::string> users, std::vector<std::string> functions) {
    v1::UpdateEndpointRequest u;
    u.set_id("lab");
    for (auto& x : users) u.mutable_allowed_users()->add_items(x);
    if (!functions.empty()) {
      for (auto& x : functions) u.mutable_allowed_functions()->add_items(x);
    }
    return api_->UpdateEndpoint(u, who).status();
  }

  Principal alice_{"alice", false}, bob_{"bob", false}, root_{"root", true};
  InMemoryTaskStore store_;
  InMemoryTokenStore token_store_;
  TokenAuthenticator tokens_{&token_store_, {}};
  ApiSecurity security_;
  CompletionHub hub_;
  NullNotifier notifier_;
  std::unique_ptr<LoomApi> api_;
};

TEST_F(TenancyTest, FunctionsLiveInTheirOwnersNamespace) {
  Register(bob_, "add2");  // the same name, another function
  auto mine = api_->ListFunctions(alice_);
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ(mine->functions_size(), 1);
  EXPECT_EQ(mine->functions(0).owner(), "alice");
  v1::GetFunctionRequest g;
  g.set_name("alice/add2");
  EXPECT_EQ(api_->GetFunction(g, bob_).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(api_->GetFunction(g, root_).ok());
  EXPECT_EQ(api_->ListFunctions(root_)->functions_size(), 2);
}

TEST_F(TenancyTest, AnotherTenantsTaskAnswersExactlyLikeAnUnknownOne) {
  auto id = Submit(alice_, "add2");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  v1::GetTasksRequest get;
  get.add_task_ids(id->task_id());
  ASSERT_TRUE(api_->GetTasks(get, alice_).ok());
  auto theirs = api_->GetTasks(get, bob_);
  v1::GetTasksRequest unknown;
  unknown.add_task_ids(NewId());
  auto none = api_->GetTasks(unknown, bob_);
  ASSERT_EQ(theirs.status().code(), StatusCode::kNotFound);
  ASSERT_EQ(none.status().code(), StatusCode::kNotFound);
  // The same words, with only the id differing.
  std::string a = theirs.status().message(), b = none.status().message();
  a.replace(a.find(id->task_id()), id->task_id().size(), "ID");
  b.replace(b.find(unknown.task_ids(0)), unknown.task_ids(0).size(), "ID");
  EXPECT_EQ(a, b);

  v1::CancelRequest cancel;
  cancel.set_task_id(id->task_id());
  EXPECT_EQ(api_->Cancel(cancel, bob_).status().code(), StatusCode::kNotFound);
  v1::WaitResultsRequest wait;
  wait.add_task_ids(id->task_id());
  wait.set_timeout_ms(1);
  EXPECT_EQ(api_->WaitResults(
                    wait, bob_, [](const LoomApi::Burst&) { return true; }, [] { return false; })
                .code(),
            StatusCode::kNotFound);
  // Deleting someone else's task skips it like an unknown id (and it is not deleted).
  ASSERT_TRUE(api_->Cancel(cancel, alice_).ok());
  v1::DeleteTasksRequest del;
  del.add_task_ids(id->task_id());
  EXPECT_EQ(api_->DeleteTasks(del, bob_)->deleted(), 0);
  EXPECT_EQ(api_->DeleteTasks(del, alice_)->deleted(), 1);
}

TEST_F(TenancyTest, EndpointAllowListsDecideWhoMaySubmitAndWhichFunctionsRun) {
  Register(bob_, "add2");
  // bob neither sees alice's endpoint nor may submit to it.
  EXPECT_EQ(api_->ListEndpoints(bob_)->endpoints_size(), 0);
  v1::GetEndpointRequest ge;
  ge.set_id("lab");
  EXPECT_EQ(api_->GetEndpoint(ge, bob_).status().code(), StatusCode::kNotFound);
  auto refused = Submit(bob_, "add2");
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("does not accept tasks from user 'bob'"), std::string::npos)
      << refused.status().message();
  // Only the owner changes the lists.
  EXPECT_EQ(Share(bob_, {"bob"}, {}).code(), StatusCode::kNotFound);
  ASSERT_TRUE(Share(alice_, {"bob"}, {}).ok());
  EXPECT_EQ(Share(bob_, {"bob", "carol"}, {}).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(api_->ListEndpoints(bob_)->endpoints_size(), 1);
  auto id = Submit(bob_, "add2");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto rec = store_.GetTasks({id->task_id()}, true);
  ASSERT_TRUE(rec.ok() && (*rec)[0].has_value());
  EXPECT_EQ((*rec)[0]->owner(), "bob");

  // Now only alice's own add2 may run there.
  ASSERT_TRUE(Share(alice_, {"bob"}, {"add2"}).ok());
  auto wrong_fn = Submit(bob_, "add2");
  EXPECT_EQ(wrong_fn.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(wrong_fn.status().message().find("does not run function 'bob/add2'"), std::string::npos)
      << wrong_fn.status().message();
  EXPECT_TRUE(Submit(alice_, "add2").ok());
  ASSERT_TRUE(Share(alice_, {"bob"}, {"add2", "bob/add2"}).ok());
  EXPECT_TRUE(Submit(bob_, "add2").ok());

  // Bad lists are refused with the rule.
  EXPECT_EQ(Share(alice_, {"bad name"}, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Share(alice_, {}, {"a/b/c"}).code(), StatusCode::kInvalidArgument);
}

TEST_F(TenancyTest, TasksCarryTheirOwnersForTheEndpointsOwnCheck) {
  auto id = Submit(alice_, "add2");
  ASSERT_TRUE(id.ok());
  auto rec = store_.GetTasks({id->task_id()}, true);
  ASSERT_TRUE(rec.ok() && (*rec)[0].has_value());
  // The spec the endpoint receives names who submitted it and whose function it is.
  ASSERT_EQ(store_.RegisterSession("lab", {}, "test", NowNanos())->lease_epoch, 1);
  auto leased = store_.LeaseTasks("lab", 1, 10, NowNanos());
  ASSERT_TRUE(leased.ok()) << leased.status().ToString();
  ASSERT_EQ(leased->size(), 1u);
  EXPECT_EQ((*leased)[0].owner(), "alice");
  EXPECT_EQ((*leased)[0].function_owner(), "alice");
}

TEST_F(TenancyTest, TokensAreManagedByTheirUserOrAnAdmin) {
  v1::CreateTokenRequest mine;
  auto t = api_->CreateToken(mine, alice_);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->info().user(), "alice");
  v1::CreateTokenRequest for_bob;
  for_bob.set_user("bob");
  EXPECT_EQ(api_->CreateToken(for_bob, alice_).status().code(), StatusCode::kPermissionDenied);
  v1::CreateTokenRequest admin;
  admin.set_admin(true);
  EXPECT_EQ(api_->CreateToken(admin, alice_).status().code(), StatusCode::kPermissionDenied);
  auto bobs = api_->CreateToken(for_bob, root_);
  ASSERT_TRUE(bobs.ok());
  // alice cannot see or revoke bob's token: it answers like an unknown one.
  v1::RevokeTokenRequest revoke;
  revoke.set_id(bobs->info().id());
  EXPECT_EQ(api_->RevokeToken(revoke, alice_).status().code(), StatusCode::kNotFound);
  v1::ListTokensRequest list_bob;
  list_bob.set_user("bob");
  EXPECT_EQ(api_->ListTokens(list_bob, alice_).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(api_->ListTokens(v1::ListTokensRequest(), alice_)->tokens_size(), 1);
  ASSERT_TRUE(api_->RevokeToken(revoke, bob_).ok());
  EXPECT_EQ(tokens_.Authenticate("Bearer " + bobs->token()).status().code(), StatusCode::kUnauthenticated);
  v1::CreateTokenRequest negative;
  negative.set_ttl_seconds(-1);
  EXPECT_EQ(api_->CreateToken(negative, alice_).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(TenancyTest, QuotasRefuseSubmitsOverTheLimitWithARetryHint) {
  QuotaOptions qo;
  qo.defaults.max_in_flight = 2;
  Quotas quotas(qo);
  ApiSecurity sec = security_;
  sec.quotas = &quotas;
  hub_.SetObserver([&](const std::vector<v1::TaskRecord>& r) { quotas.TasksFinished(r); });
  LoomApi api(&store_, &hub_, &notifier_, ServiceLimits(), nullptr, nullptr, sec);
  v1::SubmitRequest r;
  r.set_function("add2");
  r.set_endpoint("lab");
  *r.add_args() = IntValue(1);
  *r.add_args() = IntValue(2);
  auto first = api.Submit(r, alice_);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(api.Submit(r, alice_).ok());
  auto over = api.Submit(r, alice_);
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted);
  EXPECT_GT(over.status().retry_after_ms(), 0);
  // A finished task frees its place.
  v1::CancelRequest cancel;
  cancel.set_task_id(first->task_id());
  ASSERT_TRUE(api.Cancel(cancel, alice_).ok());
  EXPECT_TRUE(api.Submit(r, alice_).ok());
  // A retried submit with a used idempotency key takes no new place.
  r.set_idempotency_key("k1");
  EXPECT_EQ(api.Submit(r, alice_).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(quotas.InFlight("alice"), 2);
}

}  // namespace
}  // namespace loom::service
