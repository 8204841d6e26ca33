// The ZAP handler's decisions and its key directory, without sockets: requests are the frames
// libzmq would send (RFC 27), the store is an InMemoryTaskStore, the clock is passed in.
#include "service/zap_handler.h"

#include <gtest/gtest.h>
#include <zmq.h>

#include <random>

#include "common/curve.h"
#include "service/memory_task_store.h"

namespace loom::service {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The 32 bytes a CURVE client's public key travels as.
std::string Binary(const std::string& z85) {
  std::string out(32, '\0');
  EXPECT_NE(zmq_z85_decode(reinterpret_cast<uint8_t*>(out.data()), z85.c_str()), nullptr);
  return out;
}

std::vector<std::string> CurveRequest(const std::string& z85_key, const std::string& domain = kLoomZapDomain) {
  return {"1.0", "1", domain, "10.0.0.7", "", "CURVE", Binary(z85_key)};
}

class ZapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_a_ = curve::GenerateKeyPair()->public_key;
    key_b_ = curve::GenerateKeyPair()->public_key;
    Put("ep-a", key_a_);
    Put("ep-b", key_b_);
    Put("plain", "");  // registered in plaintext mode once: no key
  }
  v1::EndpointRecord Put(const std::string& id, const std::string& key) {
    v1::EndpointRecord e;
    e.set_id(id);
    e.set_owner("alice");
    e.set_curve_public_key(key);
    EXPECT_TRUE(store_.PutEndpoint(e).ok());
    return e;
  }
  ZapReply Decide(const std::vector<std::string>& frames) { return DecideZap(frames, kLoomZapDomain, keys_, now_); }

  InMemoryTaskStore store_;
  EndpointKeyDirectory keys_{&store_, {.min_refresh_interval = 1000ms}};
  Clock::time_point now_ = Clock::time_point() + 1h;
  std::string key_a_, key_b_;
};

TEST_F(ZapTest, AKnownKeyIsAcceptedAsItsEndpointWithTheKeyInTheMetadata) {
  ZapReply r = Decide(CurveRequest(key_a_));
  EXPECT_EQ(r.status_code, "200");
  EXPECT_EQ(r.request_id, "1");
  EXPECT_EQ(r.user_id, "ep-a");
  EXPECT_EQ(r.metadata, EncodeZapMetadata({{kKeyProperty, key_a_}}));
  const auto frames = r.Frames();
  ASSERT_EQ(frames.size(), 6u);
  EXPECT_EQ(frames[0], "1.0");
  EXPECT_EQ(Decide(CurveRequest(key_b_)).user_id, "ep-b");
}

TEST_F(ZapTest, AnUnknownKeyIsRefused) {
  ZapReply r = Decide(CurveRequest(curve::GenerateKeyPair()->public_key));
  EXPECT_EQ(r.status_code, "400");  // after a reload from the store
  EXPECT_EQ(r.user_id, "");
  EXPECT_EQ(r.metadata, "");
}

TEST_F(ZapTest, OtherMechanismsAndDomainsAreRefused) {
  EXPECT_EQ(Decide({"1.0", "1", kLoomZapDomain, "10.0.0.7", "", "NULL"}).status_code, "400");
  EXPECT_EQ(Decide({"1.0", "1", kLoomZapDomain, "10.0.0.7", "", "PLAIN", "ep-a", "secret"}).status_code, "400");
  EXPECT_EQ(Decide(CurveRequest(key_a_, "other")).status_code, "400");
}

TEST_F(ZapTest, MalformedRequestsAreRefusedNeverCrash) {
  std::vector<std::vector<std::string>> bad = {
      {},
      {"1.0"},
      {"1.0", "7"},
      {"2.0", "1", kLoomZapDomain, "a", "", "CURVE", Binary(key_a_)},            // another version
      {"1.0", "1", kLoomZapDomain, "a", "", "CURVE"},                            // no credentials
      {"1.0", "1", kLoomZapDomain, "a", "", "CURVE", Binary(key_a_), "x"},       // two
      {"1.0", "1", kLoomZapDomain, "a", "", "CURVE", Binary(key_a_).substr(1)},  // 31 bytes
      {"1.0", "1", kLoomZapDomain, "a", "", "CURVE", key_a_},                    // Z85, not binary
  };
  for (const auto& frames : bad) {
    ZapReply r = Decide(frames);
    EXPECT_EQ(r.status_code, "400") << frames.size() << " frames";
    EXPECT_EQ(r.user_id, "");
  }
  EXPECT_EQ(Decide({"1.0", "7"}).request_id, "7");  // still answered, for libzmq to fail it
  // Random frames: always an answer, never an acceptance.
  std::mt19937 rng(27);
  for (int i = 0; i < 2000; ++i) {
    std::vector<std::string> frames(rng() % 9);
    for (auto& f : frames) {
      f.resize(rng() % 40);
      for (auto& c : f) c = static_cast<char>(rng());
    }
    if (rng() % 2 && frames.size() > 5) {
      frames[0] = "1.0";
      frames[2] = kLoomZapDomain;
      frames[5] = "CURVE";
    }
    const std::string code = Decide(frames).status_code;
    EXPECT_TRUE(code == "400" || code == "300") << code;
  }
}

TEST_F(ZapTest, AMissReloadsFromTheStoreAtMostOncePerInterval) {
  const std::string key_c = curve::GenerateKeyPair()->public_key;
  EXPECT_EQ(Decide(CurveRequest(key_c)).status_code, "400");  // first miss: reloads
  EXPECT_EQ(keys_.refreshes(), 1u);
  // A flood of unknown keys within the interval: no more reads; they are told to come back.
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(Decide(CurveRequest(curve::GenerateKeyPair()->public_key)).status_code, "300");
  }
  EXPECT_EQ(keys_.refreshes(), 1u);
  // Known keys never read the store.
  EXPECT_EQ(Decide(CurveRequest(key_a_)).status_code, "200");
  EXPECT_EQ(keys_.refreshes(), 1u);
  // A record written behind the service's back (another service process) is found on the
  // first miss after the interval.
  Put("ep-c", key_c);
  EXPECT_EQ(Decide(CurveRequest(key_c)).status_code, "300");
  now_ += 1001ms;
  EXPECT_EQ(Decide(CurveRequest(key_c)).user_id, "ep-c");
  EXPECT_EQ(keys_.refreshes(), 2u);
}

TEST_F(ZapTest, UpdatesFromTheApiTakeEffectAtOnceAndAReplacedKeyIsForgotten) {
  ASSERT_TRUE(keys_.Refresh().ok());
  const uint64_t lists = keys_.refreshes();
  const std::string key_d = curve::GenerateKeyPair()->public_key;
  keys_.Update(Put("ep-d", key_d));
  EXPECT_EQ(Decide(CurveRequest(key_d)).user_id, "ep-d");
  // ep-a gets a new key: the old one no longer opens anything.
  const std::string new_a = curve::GenerateKeyPair()->public_key;
  keys_.Update(Put("ep-a", new_a));
  EXPECT_EQ(Decide(CurveRequest(new_a)).user_id, "ep-a");
  EXPECT_EQ(Decide(CurveRequest(key_a_)).status_code, "400");
  // ...nor after a reload.
  now_ += 2s;
  EXPECT_EQ(Decide(CurveRequest(key_a_)).status_code, "400");
  EXPECT_EQ(Decide(CurveRequest(new_a)).user_id, "ep-a");
  EXPECT_GT(keys_.refreshes(), lists);
  // A key removed from a record.
  keys_.Update(Put("ep-d", ""));
  now_ += 2s;
  EXPECT_EQ(Decide(CurveRequest(key_d)).status_code, "400");
}

TEST_F(ZapTest, AKeyTwoEndpointsClaimOpensNeither) {
  ASSERT_TRUE(keys_.Refresh().ok());  // as the broker does at start
  keys_.Update(Put("ep-twin", key_a_));
  EXPECT_EQ(Decide(CurveRequest(key_a_)).status_code, "400");
  ASSERT_TRUE(keys_.Refresh().ok());
  EXPECT_EQ(Decide(CurveRequest(key_a_)).status_code, "400");
  EXPECT_EQ(Decide(CurveRequest(key_b_)).user_id, "ep-b");
}

TEST(ZapMetadataTest, EncodesZmtpProperties) {
  EXPECT_EQ(EncodeZapMetadata({{"X-K", "ab"}}), std::string("\x03X-K\x00\x00\x00\x02"
                                                            "ab",
                                                            10));
  EXPECT_EQ(EncodeZapMetadata({}), "");
}

}  // namespace
}  // namespace loom::service
