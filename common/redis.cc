#include "common/redis.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>

namespace loom {

namespace {
timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = ms.count() / 1000;
  tv.tv_usec = (ms.count() % 1000) * 1000;
  return tv;
}

std::string Address(const RedisOptions& o) {
  return o.unix_socket.empty() ? o.host + ":" + std::to_string(o.port) : o.unix_socket;
}

// A blocking read that hit SO_RCVTIMEO: hiredis 0.14 reports it as an I/O error with EAGAIN's
// text, hiredis 1.x as REDIS_ERR_TIMEOUT.
bool TimedOut(const redisContext* c) {
#ifdef REDIS_ERR_TIMEOUT
  if (c->err == REDIS_ERR_TIMEOUT) return true;
#endif
  static const std::string kAgain = std::generic_category().message(EAGAIN);
  static const std::string kWouldBlock = std::generic_category().message(EWOULDBLOCK);
  return c->err == REDIS_ERR_IO && (c->errstr == kAgain || c->errstr == kWouldBlock);
}

bool IsLoading(const redisReply* r) {
  return r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).starts_with("LOADING");
}
}  // namespace

Result<std::unique_ptr<RedisConnection>> RedisConnection::Connect(const RedisOptions& o) { return Connect(o, nullptr); }

Result<std::unique_ptr<RedisConnection>> RedisConnection::Connect(const RedisOptions& o, std::string* cause) {
  std::string where = Address(o);
  redisContext* c = o.unix_socket.empty()
                        ? redisConnectWithTimeout(o.host.c_str(), o.port, ToTimeval(o.connect_timeout))
                        : redisConnectUnixWithTimeout(o.unix_socket.c_str(), ToTimeval(o.connect_timeout));
  if (c == nullptr) {
    if (cause != nullptr) *cause = "cannot allocate a connection";
    return Unavailable("redis: cannot allocate a connection to " + where);
  }
  if (c->err) {
    std::string why = c->errstr;
    redisFree(c);
    if (cause != nullptr) *cause = why;
    return Unavailable("redis at " + where + " is unreachable: " + why + "; is redis-server running there?");
  }
  redisSetTimeout(c, ToTimeval(o.command_timeout));
  return std::unique_ptr<RedisConnection>(new RedisConnection(c, std::move(where), o.command_timeout));
}

RedisConnection::~RedisConnection() { redisFree(ctx_); }

bool RedisConnection::broken() const { return ctx_->err != 0 || !broken_reason_.empty(); }

std::string RedisConnection::error() const {
  if (!broken_reason_.empty()) return broken_reason_;
  if (ctx_->err == 0) return "";
  if (TimedOut(ctx_)) return "no reply within " + std::to_string(command_timeout_.count()) + " ms";
  return ctx_->errstr;
}

void RedisConnection::MarkBroken(std::string reason) {
  broken_reason_ = reason.empty() ? "marked broken" : std::move(reason);
}

void FormatRedisCommand(const std::vector<std::string_view>& argv, std::string* out) {
  // "*<argc>\r\n" then "$<len>\r\n<bytes>\r\n" per argument: sized first, written once.
  size_t size = 1 + 20 + 2;
  for (auto a : argv) size += 1 + 20 + 2 + a.size() + 2;
  out->resize(size);
  char* p = out->data();
  auto header = [&](char kind, size_t n) {
    *p++ = kind;
    p = std::to_chars(p, p + 20, n).ptr;
    *p++ = '\r';
    *p++ = '\n';
  };
  header('*', argv.size());
  for (auto a : argv) {
    header('$', a.size());
    if (!a.empty()) std::memcpy(p, a.data(), a.size());
    p += a.size();
    *p++ = '\r';
    *p++ = '\n';
  }
  out->resize(static_cast<size_t>(p - out->data()));
}

void RedisConnection::Append(const std::vector<std::string_view>& argv) {
  // One buffer per command instead of hiredis's per-argument sdscatfmt (5 % of the service's
  // CPU when it pipelines a thousand commands).
  FormatRedisCommand(argv, &scratch_);
  if (redisAppendFormattedCommand(ctx_, scratch_.data(), scratch_.size()) == REDIS_OK) ++pending_;
  // A large command (a batch's script arguments) is not kept for the next one.
  if (scratch_.capacity() > kKeptScratchBytes) std::string().swap(scratch_);
}

Result<RedisReply> RedisConnection::GetReply() {
  void* raw = nullptr;
  if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) {
    if (ctx_->err == 0) return Unavailable("redis at " + address_ + ": no reply");
    if (TimedOut(ctx_)) {
      return Unavailable("redis at " + address_ + " did not answer within " + std::to_string(command_timeout_.count()) +
                         " ms (command_timeout)");
    }
    return Unavailable("redis at " + address_ + ": " + ctx_->errstr);
  }
  if (pending_ > 0) --pending_;
  RedisReply reply(static_cast<redisReply*>(raw));
  if (reply->type == REDIS_REPLY_ERROR) {
    std::string text(reply->str, reply->len);
    if (IsLoading(reply.get())) {
      // Every command gets this answer until loading ends: treat it as an outage.
      MarkBroken(text);
      return Unavailable("redis at " + address_ + " is loading its data (" + text + "); retry shortly");
    }
    return Internal("redis error: " + text);
  }
  return reply;
}

Result<RedisReply> RedisConnection::Command(const std::vector<std::string_view>& argv) {
  Append(argv);
  return GetReply();
}

Status RedisConnection::Ping(std::chrono::milliseconds timeout) {
  redisSetTimeout(ctx_, ToTimeval(timeout));
  const auto saved = command_timeout_;
  command_timeout_ = timeout;  // for the timeout message
  auto r = Command({"PING"});
  if (!r.ok() && broken()) return r.status();  // left as is: the connection is dropped, error() tells why
  // Any other reply, even an error one, shows that Redis is serving.
  command_timeout_ = saved;
  redisSetTimeout(ctx_, ToTimeval(saved));
  return Status::Ok();
}

RedisPool::RedisPool(RedisOptions options)
    : options_(std::move(options)), address_(Address(options_)), rng_(std::random_device{}()) {}

RedisPool::Lease::~Lease() {
  if (conn_) pool_->Release(std::move(conn_), epoch_);
}

void RedisPool::Lease::MarkBroken(std::string reason) {
  if (conn_) conn_->MarkBroken(std::move(reason));
}

Result<RedisPool::Lease> RedisPool::Acquire() {
  bool probe = false;
  uint64_t epoch = 0;
  {
    std::lock_guard lock(mu_);
    if (open_) {
      const auto now = Clock::now();
      if (probing_ || now < retry_at_) {
        std::string when =
            probing_
                ? "a reconnect attempt is in progress"
                : "retrying in " +
                      std::to_string(std::chrono::ceil<std::chrono::milliseconds>(retry_at_ - now).count()) + " ms";
        return Unavailable("redis at " + address_ + " is unavailable (last error: " + last_error_ + "); " + when);
      }
      probing_ = true;  // this caller is the probe; everyone else keeps failing fast
      probe = true;
    } else if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(c), epoch_);
    }
    epoch = epoch_;
  }
  std::string cause;
  auto conn = RedisConnection::Connect(options_, &cause);
  if (!conn.ok()) {
    OnFailure(cause, epoch, probe);
    return conn.status();
  }
  if (probe) {
    Status s = (*conn)->Ping(std::min(options_.connect_timeout, options_.command_timeout));
    if (!s.ok()) {
      OnFailure((*conn)->error(), epoch, probe);
      return s;
    }
    OnProbeSuccess();
  }
  return Lease(this, std::move(conn).value(), epoch);
}

void RedisPool::Release(std::unique_ptr<RedisConnection> c, uint64_t epoch) {
  if (c->broken()) {
    std::string cause = c->error();
    c.reset();
    OnFailure(cause, epoch, /*probe=*/false);
    return;
  }
  // Replies left unread (a caller returned early from a pipeline): the connection is fine but out
  // of step, so drop it; that is no reason to think Redis is failing.
  if (c->pending_replies() != 0) return;
  std::lock_guard lock(mu_);
  if (!open_ && epoch == epoch_ && idle_.size() < kMaxIdle) idle_.push_back(std::move(c));
}

void RedisPool::ScheduleRetryLocked(Clock::time_point now) {
  // initial * 2^(n-1), capped; the shift is bounded so it cannot overflow.
  const int shift = std::clamp(consecutive_failures_ - 1, 0, 20);
  const auto base =
      std::min(options_.reconnect_backoff_initial * (int64_t{1} << shift), options_.reconnect_backoff_max);
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  retry_at_ = now + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double, std::milli>(static_cast<double>(base.count()) * jitter(rng_)));
}

void RedisPool::OnFailure(const std::string& cause, uint64_t epoch, bool probe) {
  std::vector<std::unique_ptr<RedisConnection>> dropped;  // closed after the lock is released
  bool opened = false;
  int64_t delay_ms = 0;
  {
    std::lock_guard lock(mu_);
    ++failures_;
    const auto now = Clock::now();
    if (probe) {
      probing_ = false;
      last_error_ = cause;
      ++consecutive_failures_;
      ScheduleRetryLocked(now);
      delay_ms = std::chrono::ceil<std::chrono::milliseconds>(retry_at_ - now).count();
    } else if (!open_ && epoch == epoch_) {
      opened = true;
      open_ = true;
      ++epoch_;
      opened_at_ = now;
      last_error_ = cause;
      consecutive_failures_ = 1;
      ScheduleRetryLocked(now);
      delay_ms = std::chrono::ceil<std::chrono::milliseconds>(retry_at_ - now).count();
      // Idle connections to a failing Redis are most likely dead too.
      dropped.swap(idle_);
    } else {
      return;  // the circuit is already open for this outage
    }
  }
  if (opened) {
    spdlog::warn("redis at {} is unavailable ({}); failing fast, next reconnect attempt in {} ms", address_, cause,
                 delay_ms);
  } else {
    spdlog::debug("redis at {}: reconnect attempt failed ({}); next in {} ms", address_, cause, delay_ms);
  }
}

void RedisPool::OnProbeSuccess() {
  int64_t down_ms = 0;
  int attempts = 0;
  {
    std::lock_guard lock(mu_);
    down_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - opened_at_).count();
    attempts = consecutive_failures_;
    open_ = false;
    probing_ = false;
    consecutive_failures_ = 0;
    ++reconnects_;
  }
  spdlog::info("redis at {} is available again after {} ms down ({} consecutive failures)", address_, down_ms,
               attempts);
}

bool RedisPool::available() const {
  std::lock_guard lock(mu_);
  return !open_;
}

uint64_t RedisPool::failures() const {
  std::lock_guard lock(mu_);
  return failures_;
}

uint64_t RedisPool::reconnects() const {
  std::lock_guard lock(mu_);
  return reconnects_;
}

std::string ReplyString(const redisReply* r) {
  if (r == nullptr) return "";
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return "";
}

bool ReplyIsNil(const redisReply* r) { return r == nullptr || r->type == REDIS_REPLY_NIL; }

}  // namespace loom
