// A move-only RAII connection to Redis through hiredis, with connect and command timeouts so a
// Redis outage turns into kUnavailable quickly instead of a hang. Not thread-safe: one thread
// uses a connection at a time (RedisPool hands them out).
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace loom {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, ReplyDeleter>;

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_socket;  // when set, used instead of host and port (cheaper on one host)
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds command_timeout{5000};
};

class RedisConnection {
 public:
  static Result<std::unique_ptr<RedisConnection>> Connect(const RedisOptions& options);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // One command; a Redis error reply becomes a non-OK Status.
  Result<RedisReply> Command(const std::vector<std::string_view>& argv);
  // Pipelining: Append many commands, then GetReply once per command, in order.
  void Append(const std::vector<std::string_view>& argv);
  Result<RedisReply> GetReply();
  // True once an I/O error happened: the connection must be dropped.
  bool broken() const;

 private:
  explicit RedisConnection(redisContext* c) : ctx_(c) {}
  redisContext* ctx_;
};

// A small pool of connections shared by threads. Thread-safe.
class RedisPool {
 public:
  explicit RedisPool(RedisOptions options) : options_(std::move(options)) {}

  class Lease {
   public:
    Lease(RedisPool* pool, std::unique_ptr<RedisConnection> c) : pool_(pool), conn_(std::move(c)) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (conn_ && !conn_->broken()) pool_->Return(std::move(conn_));
    }
    RedisConnection* operator->() { return conn_.get(); }
    RedisConnection& operator*() { return *conn_; }

   private:
    RedisPool* pool_;
    std::unique_ptr<RedisConnection> conn_;
  };

  Result<Lease> Acquire();
  const RedisOptions& options() const { return options_; }

 private:
  void Return(std::unique_ptr<RedisConnection> c);
  RedisOptions options_;
  std::mutex mu_;
  std::vector<std::unique_ptr<RedisConnection>> idle_;  // GUARDED_BY(mu_)
};

// Reply helpers.
std::string ReplyString(const redisReply* r);
bool ReplyIsNil(const redisReply* r);

}  // namespace loom
