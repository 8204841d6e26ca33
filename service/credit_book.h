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

class CreditBook {
 public:
  void Open(const std::string& endpoint, const std::string& session, int64_t credit) {
    std::lock_guard lock(mu_);
    book_[endpoint] = {session, credit};
  }
  void Close(const std::string& endpoint, const std::string& session) {
    std::lock_guard lock(mu_);
    auto it = book_.find(endpoint);
    if (it != book_.end() && it->second.first == session) book_.erase(it);
  }
  void Add(const std::string& endpoint, const std::string& session, int64_t n) {
    std::lock_guard lock(mu_);
    auto it = book_.find(endpoint);
    if (it != book_.end() && it->second.first == session) it->second.second += n;
  }
  // Takes up to `n`; returns the session it belongs to and how much was taken (0: none).
  std::pair<std::string, int64_t> Take(const std::string& endpoint, int64_t n) {
    std::lock_guard lock(mu_);
    auto it = book_.find(endpoint);
    if (it == book_.end() || it->second.second <= 0 || n <= 0) return {"", 0};
    int64_t k = std::min(n, it->second.second);
    it->second.second -= k;
    return {it->second.first, k};
  }
  // Gives back what was taken and not used, if the session is still the endpoint's.
  void Return(const std::string& endpoint, const std::string& session, int64_t n) { Add(endpoint, session, n); }

 private:
  std::mutex mu_;
  std::map<std::string, std::pair<std::string, int64_t>> book_;  // GUARDED_BY(mu_)
};

}  // namespace loom::service
