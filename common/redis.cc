#include "common/redis.h"

namespace loom {

namespace {
timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = ms.count() / 1000;
  tv.tv_usec = (ms.count() % 1000) * 1000;
  return tv;
}
}  // namespace

Result<std::unique_ptr<RedisConnection>> RedisConnection::Connect(const RedisOptions& o) {
  redisContext* c = o.unix_socket.empty()
                        ? redisConnectWithTimeout(o.host.c_str(), o.port, ToTimeval(o.connect_timeout))
                        : redisConnectUnixWithTimeout(o.unix_socket.c_str(), ToTimeval(o.connect_timeout));
  if (c == nullptr) return Unavailable("redis: cannot allocate a connection");
  if (c->err) {
    std::string where = o.unix_socket.empty() ? o.host + ":" + std::to_string(o.port) : o.unix_socket;
    std::string msg = "redis at " + where + " is unreachable: " + c->errstr;
    redisFree(c);
    return Unavailable(msg);
  }
  redisSetTimeout(c, ToTimeval(o.command_timeout));
  return std::unique_ptr<RedisConnection>(new RedisConnection(c));
}

RedisConnection::~RedisConnection() { redisFree(ctx_); }

bool RedisConnection::broken() const { return ctx_->err != 0; }

void RedisConnection::Append(const std::vector<std::string_view>& argv) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (auto a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), ptrs.data(), lens.data());
}

Result<RedisReply> RedisConnection::GetReply() {
  void* raw = nullptr;
  if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) {
    return Unavailable(std::string("redis: ") + (ctx_->err ? ctx_->errstr : "no reply"));
  }
  RedisReply reply(static_cast<redisReply*>(raw));
  if (reply->type == REDIS_REPLY_ERROR) return Internal("redis error: " + std::string(reply->str, reply->len));
  return reply;
}

Result<RedisReply> RedisConnection::Command(const std::vector<std::string_view>& argv) {
  Append(argv);
  return GetReply();
}

Result<RedisPool::Lease> RedisPool::Acquire() {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(c));
    }
  }
  LOOM_ASSIGN_OR_RETURN(auto conn, RedisConnection::Connect(options_));
  return Lease(this, std::move(conn));
}

void RedisPool::Return(std::unique_ptr<RedisConnection> c) {
  std::lock_guard lock(mu_);
  if (idle_.size() < 32) idle_.push_back(std::move(c));
}

std::string ReplyString(const redisReply* r) {
  if (r == nullptr) return "";
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) return std::string(r->str, r->len);
  if (r->type == REDIS_REPLY_INTEGER) return std::to_string(r->integer);
  return "";
}

bool ReplyIsNil(const redisReply* r) { return r == nullptr || r->type == REDIS_REPLY_NIL; }

}  // namespace loom
