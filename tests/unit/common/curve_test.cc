// common/curve and common/secret_file: key pairs, Z85 checks, and the key files (modes, atomic
// creation, damage detection).
#include "common/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/secret_file.h"
#include "tests/support/test_env.h"

namespace loom::curve {
namespace {

namespace fs = std::filesystem;

unsigned Mode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(CurveTest, GeneratedKeysAreValidDistinctAndThePublicKeyDerivesFromTheSecret) {
  auto a = GenerateKeyPair();
  auto b = GenerateKeyPair();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(IsValidKey(a->public_key));
  EXPECT_TRUE(IsValidKey(a->secret_key));
  EXPECT_NE(a->public_key, b->public_key);
  EXPECT_NE(a->secret_key, a->public_key);
  auto derived = PublicKeyOf(a->secret_key);
  ASSERT_TRUE(derived.ok());
  EXPECT_EQ(*derived, a->public_key);
}

TEST(CurveTest, KeyValidationWantsFortyCharactersOfZ85ThatFitThirtyTwoBits) {
  const std::string good = GenerateKeyPair()->public_key;
  EXPECT_TRUE(IsValidKey(good));
  EXPECT_FALSE(IsValidKey(""));
  EXPECT_FALSE(IsValidKey(good.substr(0, 39)));
  EXPECT_FALSE(IsValidKey(good + "0"));
  EXPECT_FALSE(IsValidKey(good.substr(0, 39) + "\""));  // not in the Z85 alphabet
  EXPECT_FALSE(IsValidKey(good.substr(0, 39) + " "));
  EXPECT_FALSE(IsValidKey("#####" + good.substr(5)));  // 85^5 - 1 is over 2^32
  EXPECT_TRUE(IsValidKey("%nSc0" + good.substr(5)));   // 2^32 - 1, the largest group
  EXPECT_FALSE(IsValidKey("%nSc1" + good.substr(5)));  // 2^32
  Status s = CheckKey("short", "--service-public-key");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--service-public-key"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("40 characters"), std::string::npos) << s.message();
}

TEST(CurveTest, SecretKeyFileIsPrivateAndReadsBack) {
  loom::testing::TempDir dir("curve");
  const std::string path = dir.path() + "/keys/ep.key";  // the directory is made, 0700
  auto keys = GenerateKeyPair();
  ASSERT_TRUE(keys.ok());
  ASSERT_TRUE(WriteSecretKeyFile(path, *keys).ok());
  EXPECT_EQ(Mode(path), 0600u);
  EXPECT_EQ(Mode(dir.path() + "/keys"), 0700u);
  auto back = ReadSecretKeyFile(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->public_key, keys->public_key);
  EXPECT_EQ(back->secret_key, keys->secret_key);
  // No temporary file is left next to it.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path() + "/keys")) ++files;
  EXPECT_EQ(files, 1);
  // Not replaced unless asked.
  auto other = GenerateKeyPair();
  EXPECT_EQ(WriteSecretKeyFile(path, *other).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(ReadSecretKeyFile(path)->secret_key, keys->secret_key);
  ASSERT_TRUE(WriteSecretKeyFile(path, *other, /*replace=*/true).ok());
  EXPECT_EQ(ReadSecretKeyFile(path)->secret_key, other->secret_key);
  EXPECT_EQ(Mode(path), 0600u);
}

TEST(CurveTest, ASecretKeyFileOthersMayReadIsRefusedWithTheFix) {
  loom::testing::TempDir dir("curve");
  const std::string path = dir.path() + "/ep.key";
  ASSERT_TRUE(WriteSecretKeyFile(path, *GenerateKeyPair()).ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto r = ReadSecretKeyFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("chmod 600"), std::string::npos) << r.status().message();
}

TEST(CurveTest, ADamagedOrMissingSecretKeyFileIsAnErrorThatSaysSo) {
  loom::testing::TempDir dir("curve");
  EXPECT_EQ(ReadSecretKeyFile(dir.path() + "/none.key").status().code(), StatusCode::kNotFound);
  auto a = GenerateKeyPair();
  auto b = GenerateKeyPair();
  // A public key that is not the secret key's.
  const std::string mixed = dir.path() + "/mixed.key";
  ASSERT_TRUE(
      WriteSecretFile(mixed, "public_key=" + b->public_key + "\nsecret_key=" + a->secret_key + "\n", false).ok());
  auto r = ReadSecretKeyFile(mixed);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("damaged"), std::string::npos) << r.status().message();
  // A truncated secret key.
  const std::string cut = dir.path() + "/cut.key";
  ASSERT_TRUE(WriteSecretFile(cut, "secret_key=" + a->secret_key.substr(0, 20) + "\n", false).ok());
  EXPECT_EQ(ReadSecretKeyFile(cut).status().code(), StatusCode::kInvalidArgument);
  // Only the secret key: the public key is derived from it.
  const std::string bare = dir.path() + "/bare.key";
  ASSERT_TRUE(WriteSecretFile(bare, "# comment\nsecret_key = " + a->secret_key + "\n", false).ok());
  EXPECT_EQ(ReadSecretKeyFile(bare)->public_key, a->public_key);
}

TEST(CurveTest, LoadOrCreateMakesTheFileOnceAndThenKeepsIt) {
  loom::testing::TempDir dir("curve");
  const std::string path = dir.path() + "/service.key";
  bool created = false;
  auto first = LoadOrCreateSecretKeyFile(path, &created);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(created);
  EXPECT_EQ(Mode(path), 0600u);
  auto again = LoadOrCreateSecretKeyFile(path, &created);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(again->secret_key, first->secret_key);
  // A file that cannot be read is an error, never silently replaced by a new identity.
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_EQ(LoadOrCreateSecretKeyFile(path).status().code(), StatusCode::kPermissionDenied);
}

TEST(CurveTest, PublicKeyFilesReadInEveryForm) {
  loom::testing::TempDir dir("curve");
  auto keys = GenerateKeyPair();
  const std::string pub = dir.path() + "/ep.pub";
  ASSERT_TRUE(WritePublicKeyFile(pub, keys->public_key).ok());
  EXPECT_EQ(Mode(pub), 0644u);
  EXPECT_EQ(*ReadPublicKeyFile(pub), keys->public_key);
  const std::string sec = dir.path() + "/ep.key";
  ASSERT_TRUE(WriteSecretKeyFile(sec, *keys).ok());
  EXPECT_EQ(*ReadPublicKeyFile(sec), keys->public_key);
  const std::string bare = dir.path() + "/bare.pub";
  std::ofstream(bare) << keys->public_key << "\n";
  EXPECT_EQ(*ReadPublicKeyFile(bare), keys->public_key);
  const std::string junk = dir.path() + "/junk.pub";
  std::ofstream(junk) << "not a key\n";
  EXPECT_EQ(ReadPublicKeyFile(junk).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadPublicKeyFile(dir.path() + "/none.pub").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace loom::curve
