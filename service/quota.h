// Per-user quotas: requests per second (a token bucket) and tasks in flight (submitted and not
// yet finished). Over either, the call fails with RESOURCE_EXHAUSTED and a retry-after hint
// (gRPC trailer "retry-after-ms", HTTP 429 with Retry-After).
//
// In-flight counts live in this process: submits add, finished tasks (every terminal record
// the service publishes) subtract. After a restart of the service they start from zero, so a
// user may briefly hold up to their quota on top of what they had in flight before.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"

namespace loom::service {

struct Quota {
  double requests_per_second = 0;  // 0: no limit
  double burst = 0;                // bucket size; 0: one second's worth (at least 1)
  int64_t max_in_flight = 0;       // 0: no limit
};

struct QuotaOptions {
  Quota defaults;                      // for every user not listed
  std::map<std::string, Quota> users;  // per-user overrides
};

class Quotas {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Quotas(QuotaOptions options);

  // Counts one request; RESOURCE_EXHAUSTED (with retry_after) when over the rate.
  Status AdmitRequest(const std::string& user, Clock::time_point now = Clock::now());
  // Reserves `n` tasks in flight; RESOURCE_EXHAUSTED when that would pass the limit.
  Status ReserveTasks(const std::string& user, int64_t n);
  // Gives back `n` reserved tasks (a submit that failed, or created fewer tasks).
  void ReleaseTasks(const std::string& user, int64_t n);
  // Tasks that reached a terminal state.
  void TasksFinished(const std::vector<v1::TaskRecord>& records);
  int64_t InFlight(const std::string& user);

 private:
  const Quota& QuotaFor(const std::string& user) const;
  struct Bucket {
    double tokens = 0;
    Clock::time_point last;
    bool primed = false;
  };
  const QuotaOptions options_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;     // GUARDED_BY(mu_)
  std::unordered_map<std::string, int64_t> in_flight_;  // GUARDED_BY(mu_)
};

}  // namespace loom::service
