// Who is calling: bearer tokens, checked the same way for gRPC and REST.
//
// A token is "loom_<id>_<secret>" (16 and 64 hex digits). The store keeps the id, the user, and
// a SHA-256 of the secret, never the secret: a leaked Redis dump lets nobody in. A checked token
// is cached for `cache_ttl` so the hot path makes no Redis call; revoking through this service
// drops it from the cache at once, and a token revoked elsewhere (another service process, or
// expired) stops working within `cache_ttl`. While Redis is out of reach, a token checked
// before stays trusted (a Redis restart must not lock every client out); one never seen is
// refused with UNAVAILABLE.
//
//   TokenAuthenticator auth(&token_store, {});
//   auto who = auth.Authenticate("Bearer loom_0123...");   // UNAUTHENTICATED: says why
//
// Thread-safe.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"

namespace loom::service {

// The caller of one request.
struct Principal {
  std::string user;
  bool admin = false;
};

// A token as stored: its public part and the SHA-256 (hex) of its secret.
struct StoredToken {
  v1::TokenInfo info;
  std::string secret_sha256;
};

// Where tokens live. RedisTokenStore (redis_token_store.h) in production, InMemoryTokenStore
// in unit tests.
class TokenStore {
 public:
  virtual ~TokenStore() = default;
  virtual Status PutToken(const StoredToken& t) = 0;
  virtual Result<std::optional<StoredToken>> GetToken(const std::string& id) = 0;
  // Returns false when there was no such token.
  virtual Result<bool> DeleteToken(const std::string& id) = 0;
  virtual Result<std::vector<v1::TokenInfo>> ListTokens() = 0;
};

class InMemoryTokenStore final : public TokenStore {
 public:
  Status PutToken(const StoredToken& t) override;
  Result<std::optional<StoredToken>> GetToken(const std::string& id) override;
  Result<bool> DeleteToken(const std::string& id) override;
  Result<std::vector<v1::TokenInfo>> ListTokens() override;

 private:
  std::mutex mu_;
  std::unordered_map<std::string, StoredToken> tokens_;  // GUARDED_BY(mu_)
};

// Checks "Authorization: Bearer <token>" values.
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // `authorization`: the header's whole value. UNAUTHENTICATED, with a message that says what
  // was wrong (missing, not a bearer token, malformed, unknown or revoked, expired).
  virtual Result<Principal> Authenticate(std::string_view authorization) = 0;
};

struct TokenAuthenticatorOptions {
  std::chrono::milliseconds cache_ttl{2000};
  size_t max_cached = 100000;  // checked tokens kept in memory; the cache is cleared when full
};

class TokenAuthenticator final : public Authenticator {
 public:
  TokenAuthenticator(TokenStore* store, TokenAuthenticatorOptions options);

  Result<Principal> Authenticate(std::string_view authorization) override;

  // Token management (the API checks who may call these).
  // Returns the token (shown once) and its info. ttl 0: never expires.
  Result<v1::CreateTokenResponse> Create(const std::string& user, bool admin, std::chrono::seconds ttl,
                                         const std::string& description);
  // NOT_FOUND when there is no such token.
  Status Revoke(const std::string& id);
  Result<std::optional<v1::TokenInfo>> Get(const std::string& id);
  // user "*": every token.
  Result<std::vector<v1::TokenInfo>> List(const std::string& user);

  // The admin bootstrap: if `path` holds a token this service accepts, keep it; otherwise
  // create an admin token for `user` and write it to `path` (mode 0600, created atomically).
  // Returns the token's user.
  Result<std::string> EnsureBootstrapToken(const std::string& path, const std::string& user);

 private:
  struct Cached {
    StoredToken token;
    std::chrono::steady_clock::time_point fetched;
  };
  TokenStore* store_;
  const TokenAuthenticatorOptions options_;
  std::mutex mu_;
  std::unordered_map<std::string, Cached> cache_;  // GUARDED_BY(mu_); by token id
};

// Token helpers, exposed for tests and the CLI.
namespace token {
inline constexpr std::string_view kPrefix = "loom_";
// Splits "loom_<id>_<secret>"; nullopt when it has not that shape.
std::optional<std::pair<std::string, std::string>> Parse(std::string_view token);
std::string Sha256Hex(std::string_view data);
// `bytes` random bytes from OpenSSL's CSPRNG, as hex.
std::string RandomHex(size_t bytes);
}  // namespace token

}  // namespace loom::service
