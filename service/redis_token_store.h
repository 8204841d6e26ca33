// Tokens in Redis (see redis_keys.h: loom:token:<id>, loom:tokens). A token with an expiry also
// expires in Redis, so a dump holds no dead tokens for long. Thread-safe.
#pragma once

#include "common/redis.h"
#include "service/auth.h"

namespace loom::service {

class RedisTokenStore final : public TokenStore {
 public:
  explicit RedisTokenStore(RedisOptions options) : pool_(std::move(options)) {}

  Status PutToken(const StoredToken& t) override;
  Result<std::optional<StoredToken>> GetToken(const std::string& id) override;
  Result<bool> DeleteToken(const std::string& id) override;
  Result<std::vector<v1::TokenInfo>> ListTokens() override;

 private:
  RedisPool pool_;
};

}  // namespace loom::service
