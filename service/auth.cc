#include "service/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/util.h"

namespace loom::service {

namespace token {

namespace {
constexpr size_t kIdHex = 16;
constexpr size_t kSecretHex = 64;

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string Hex(const unsigned char* d, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[d[i] >> 4];
    out[2 * i + 1] = kDigits[d[i] & 15];
  }
  return out;
}
}  // namespace

std::optional<std::pair<std::string, std::string>> Parse(std::string_view t) {
  if (t.size() != kPrefix.size() + kIdHex + 1 + kSecretHex || t.substr(0, kPrefix.size()) != kPrefix) {
    return std::nullopt;
  }
  std::string_view id = t.substr(kPrefix.size(), kIdHex);
  std::string_view secret = t.substr(kPrefix.size() + kIdHex + 1);
  if (t[kPrefix.size() + kIdHex] != '_' || !IsLowerHex(id) || !IsLowerHex(secret)) return std::nullopt;
  return std::make_pair(std::string(id), std::string(secret));
}

std::string Sha256Hex(std::string_view data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  return Hex(d, sizeof d);
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  LOOM_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) == 1);
  return Hex(reinterpret_cast<const unsigned char*>(raw.data()), bytes);
}

}  // namespace token

// ------------------------------------------------------------------ InMemoryTokenStore

Status InMemoryTokenStore::PutToken(const StoredToken& t) {
  std::lock_guard lock(mu_);
  tokens_[t.info.id()] = t;
  return Status::Ok();
}

Result<std::optional<StoredToken>> InMemoryTokenStore::GetToken(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = tokens_.find(id);
  if (it == tokens_.end()) return std::optional<StoredToken>();
  return std::optional<StoredToken>(it->second);
}

Result<bool> InMemoryTokenStore::DeleteToken(const std::string& id) {
  std::lock_guard lock(mu_);
  return tokens_.erase(id) > 0;
}

Result<std::vector<v1::TokenInfo>> InMemoryTokenStore::ListTokens() {
  std::lock_guard lock(mu_);
  std::vector<v1::TokenInfo> out;
  for (const auto& [id, t] : tokens_) out.push_back(t.info);
  return out;
}

// ------------------------------------------------------------------ TokenAuthenticator

TokenAuthenticator::TokenAuthenticator(TokenStore* store, TokenAuthenticatorOptions options)
    : store_(store), options_(options) {}

namespace {
constexpr const char* kHowTo = "send 'authorization: Bearer <token>' (create one with `loom token create`)";

bool Expired(const v1::TokenInfo& info, int64_t now_ns) {
  return info.expires_unix_nanos() != 0 && info.expires_unix_nanos() <= now_ns;
}
}  // namespace

Result<Principal> TokenAuthenticator::Authenticate(std::string_view header) {
  if (header.empty()) return Unauthenticated(std::string("no credentials: ") + kHowTo);
  // The scheme is case-insensitive (RFC 7235); one space, then the token.
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() <= kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), header.begin(),
                  [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
    return Unauthenticated(std::string("the authorization is not a bearer token: ") + kHowTo);
  }
  std::string_view value = header.substr(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\r' || value.back() == '\n')) {
    value.remove_suffix(1);
  }
  auto parsed = token::Parse(value);
  if (!parsed) {
    return Unauthenticated("malformed token: a Loom token is 'loom_' followed by 16 hex digits, '_' and 64 hex digits");
  }
  const auto& [id, secret] = *parsed;
  const auto now = std::chrono::steady_clock::now();
  std::optional<StoredToken> found, stale;
  {
    std::lock_guard lock(mu_);
    auto it = cache_.find(id);
    if (it != cache_.end()) {
      if (now - it->second.fetched < options_.cache_ttl) {
        found = it->second.token;
      } else {
        stale = it->second.token;
      }
    }
  }
  if (!found) {
    auto got = store_->GetToken(id);
    if (!got.ok() && stale) {
      // Redis is out of reach: a token checked before is trusted until it is back (a revocation
      // through this process still takes effect at once: it drops the cache entry).
      spdlog::debug("token {}: using the cached check, Redis is out of reach: {}", id, got.status().message());
      got = std::optional<StoredToken>(*stale);
    }
    if (!got.ok()) {
      return Status(StatusCode::kUnavailable, "cannot check the token now: " + got.status().message());
    }
    if (!got->has_value()) return Unauthenticated("the token is unknown or was revoked");
    found = std::move(**got);
    std::lock_guard lock(mu_);
    if (cache_.size() >= options_.max_cached) cache_.clear();
    cache_[id] = Cached{*found, now};
  }
  const std::string digest = token::Sha256Hex(secret);
  if (digest.size() != found->secret_sha256.size() ||
      CRYPTO_memcmp(digest.data(), found->secret_sha256.data(), digest.size()) != 0) {
    return Unauthenticated("the token is unknown or was revoked");
  }
  if (Expired(found->info, NowNanos())) {
    return Unauthenticated("the token expired at " + FormatUnixNanos(found->info.expires_unix_nanos()));
  }
  return Principal{found->info.user(), found->info.admin()};
}

Result<v1::CreateTokenResponse> TokenAuthenticator::Create(const std::string& user, bool admin,
                                                           std::chrono::seconds ttl, const std::string& description) {
  StoredToken t;
  const std::string id = token::RandomHex(8);
  const std::string secret = token::RandomHex(32);
  t.info.set_id(id);
  t.info.set_user(user);
  t.info.set_admin(admin);
  t.info.set_created_unix_nanos(NowNanos());
  if (ttl.count() > 0) {
    t.info.set_expires_unix_nanos(t.info.created_unix_nanos() +
                                  std::chrono::duration_cast<std::chrono::nanoseconds>(ttl).count());
  }
  t.info.set_description(description);
  t.secret_sha256 = token::Sha256Hex(secret);
  LOOM_RETURN_IF_ERROR(store_->PutToken(t));
  v1::CreateTokenResponse resp;
  resp.set_token(std::string(token::kPrefix) + id + "_" + secret);
  *resp.mutable_info() = t.info;
  return resp;
}

Status TokenAuthenticator::Revoke(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    cache_.erase(id);
  }
  LOOM_ASSIGN_OR_RETURN(bool deleted, store_->DeleteToken(id));
  if (!deleted) return NotFound("token '" + id + "' is not known (never created, or already revoked)");
  return Status::Ok();
}

Result<std::optional<v1::TokenInfo>> TokenAuthenticator::Get(const std::string& id) {
  LOOM_ASSIGN_OR_RETURN(auto t, store_->GetToken(id));
  if (!t) return std::optional<v1::TokenInfo>();
  return std::optional<v1::TokenInfo>(t->info);
}

Result<std::vector<v1::TokenInfo>> TokenAuthenticator::List(const std::string& user) {
  LOOM_ASSIGN_OR_RETURN(auto all, store_->ListTokens());
  std::vector<v1::TokenInfo> out;
  const int64_t now = NowNanos();
  for (auto& t : all) {
    if ((user == "*" || t.user() == user) && !Expired(t, now)) out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.created_unix_nanos() < b.created_unix_nanos(); });
  return out;
}

Result<std::string> TokenAuthenticator::EnsureBootstrapToken(const std::string& path, const std::string& user) {
  {
    std::ifstream in(path);
    std::string existing;
    if (in && std::getline(in, existing)) {
      auto who = Authenticate("Bearer " + existing);
      if (who.ok() && who->admin) {
        spdlog::info("bootstrap token in {} is valid (user {})", path, who->user);
        return who->user;
      }
      if (who.ok() || who.status().code() == StatusCode::kUnauthenticated) {
        spdlog::warn("bootstrap token in {} is not a valid admin token ({}); writing a new one", path,
                     who.ok() ? "not an admin" : who.status().message());
      } else {
        return who.status();  // Redis is down: do not replace a token that may be fine
      }
    }
  }
  LOOM_ASSIGN_OR_RETURN(auto created, Create(user, true, std::chrono::seconds(0), "bootstrap admin token"));
  // Written to a private temporary file and renamed: the token is never readable by others,
  // and a reader never sees half of it.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Internal("cannot write the bootstrap token to '" + tmp + "': " + std::strerror(errno));
  const std::string line = created.token() + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!written || std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Internal("cannot write the bootstrap token to '" + path + "': " + std::strerror(errno));
  }
  spdlog::info("wrote a new admin token for user {} to {}", user, path);
  return user;
}

}  // namespace loom::service
