#include "service/redis_token_store.h"

#include "service/redis_keys.h"

namespace loom::service {

namespace {
constexpr std::string_view kInfoField = "i";    // v1::TokenInfo (serialized)
constexpr std::string_view kDigestField = "h";  // SHA-256 of the secret, hex
}  // namespace

Status RedisTokenStore::PutToken(const StoredToken& t) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  const std::string key = keys::Token(t.info.id());
  const std::string info = t.info.SerializeAsString();
  const std::string expires_ms = std::to_string(t.info.expires_unix_nanos() / 1000000);
  // One transaction: a token is either wholly there (record, index, expiry) or not at all.
  conn->Append({"MULTI"});
  conn->Append({"HSET", key, kInfoField, info, kDigestField, t.secret_sha256});
  conn->Append({"SADD", keys::kTokens, t.info.id()});
  if (t.info.expires_unix_nanos() > 0) conn->Append({"PEXPIREAT", key, expires_ms});
  conn->Append({"EXEC"});
  const int replies = t.info.expires_unix_nanos() > 0 ? 5 : 4;
  Status first = Status::Ok();
  for (int i = 0; i < replies; ++i) {
    auto r = conn->GetReply();
    if (!r.ok() && first.ok()) first = r.status();
  }
  return first;
}

Result<std::optional<StoredToken>> RedisTokenStore::GetToken(const std::string& id) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  LOOM_ASSIGN_OR_RETURN(auto r, conn->Command({"HMGET", keys::Token(id), kInfoField, kDigestField}));
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return Internal("unexpected reply to HMGET of a token");
  if (ReplyIsNil(r->element[0]) || ReplyIsNil(r->element[1])) return std::optional<StoredToken>();
  StoredToken t;
  if (!t.info.ParseFromString(ReplyString(r->element[0]))) return Internal("stored token '" + id + "' is corrupt");
  t.secret_sha256 = ReplyString(r->element[1]);
  return std::optional<StoredToken>(std::move(t));
}

Result<bool> RedisTokenStore::DeleteToken(const std::string& id) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  LOOM_ASSIGN_OR_RETURN(auto r, conn->Command({"DEL", keys::Token(id)}));
  LOOM_ASSIGN_OR_RETURN(auto ignored, conn->Command({"SREM", keys::kTokens, id}));
  (void)ignored;
  return r->type == REDIS_REPLY_INTEGER && r->integer > 0;
}

Result<std::vector<v1::TokenInfo>> RedisTokenStore::ListTokens() {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  LOOM_ASSIGN_OR_RETURN(auto ids, conn->Command({"SMEMBERS", keys::kTokens}));
  std::vector<std::string> names;
  for (size_t i = 0; i < ids->elements; ++i) names.push_back(ReplyString(ids->element[i]));
  for (const auto& id : names) conn->Append({"HGET", keys::Token(id), kInfoField});
  std::vector<v1::TokenInfo> out;
  std::vector<std::string> gone;
  for (const auto& id : names) {
    LOOM_ASSIGN_OR_RETURN(auto r, conn->GetReply());
    if (ReplyIsNil(r.get())) {
      gone.push_back(id);  // expired: drop it from the index too
      continue;
    }
    v1::TokenInfo info;
    if (info.ParseFromString(ReplyString(r.get()))) out.push_back(std::move(info));
  }
  for (const auto& id : gone) {
    LOOM_ASSIGN_OR_RETURN(auto ignored, conn->Command({"SREM", keys::kTokens, id}));
    (void)ignored;
  }
  return out;
}

}  // namespace loom::service
