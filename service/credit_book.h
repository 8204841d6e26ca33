// CreditBook: how many more tasks each connected endpoint session has asked for. The broker
// opens, tops up and closes sessions; the broker and the submit path (which dispatches a task
// straight away when its endpoint has credit and an empty queue) take and return credit.
// Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace loom::service {

// Credit taken from one session: its routing id, its lease epoch, and how many tasks.
struct CreditGrant {
  std::string session;
  int64_t lease_epoch = 0;
  int64_t n = 0;
};

class CreditBook {
 public:
  void Open(const std::string& endpoint, const std::string& session, int64_t lease_epoch, int64_t credit) {
    std::lock_guard lock(mu_);
    book_[endpoint] = {session, lease_epoch, credit};
  }
  void Close(const std::string& endpoint, const std::string& session) {
    std::lock_guard lock(mu_);
    auto it = book_.find(endpoint);
    if (it != book_.end() && it->second.session == session) book_.erase(it);
  }
  void Add(const std::string& endpoint, const std::string& session, int64_t n) {
    std::lock_guard lock(mu_);
    auto it = book_.find(endpoint);
    if (it != book_.end() && it->second.session == session) it->second.n += n;
  }
  // Takes up to `n` (grant.n == 0: none).
  CreditGrant Take(const std::string& endpoint, int64_t n) {
    std::lock_guard lock(mu_);
    auto it = book_.find(endpoint);
    if (it == book_.end() || it->second.n <= 0 || n <= 0) return {};
    int64_t k = std::min(n, it->second.n);
    it->second.n -= k;
    return {it->second.session, it->second.lease_epoch, k};
  }
  // Gives back what was taken and not used, if the session is still the endpoint's.
  void Return(const std::string& endpoint, const std::string& session, int64_t n) { Add(endpoint, session, n); }

 private:
  std::mutex mu_;
  std::map<std::string, CreditGrant> book_;  // GUARDED_BY(mu_); n = credit left
};

}  // namespace loom::service
