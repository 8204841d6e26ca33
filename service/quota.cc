#include "service/quota.h"

#include <algorithm>
#include <cmath>

namespace loom::service {

Quotas::Quotas(QuotaOptions options) : options_(std::move(options)) {}

const Quota& Quotas::QuotaFor(const std::string& user) const {
  auto it = options_.users.find(user);
  return it == options_.users.end() ? options_.defaults : it->second;
}

Status Quotas::AdmitRequest(const std::string& user, Clock::time_point now) {
  const Quota& q = QuotaFor(user);
  if (q.requests_per_second <= 0) return Status::Ok();
  const double burst = q.burst > 0 ? q.burst : std::max(1.0, q.requests_per_second);
  std::lock_guard lock(mu_);
  Bucket& b = buckets_[user];
  if (!b.primed) {
    b.tokens = burst;
    b.last = now;
    b.primed = true;
  }
  const double elapsed = std::chrono::duration<double>(now - b.last).count();
  if (elapsed > 0) {
    b.tokens = std::min(burst, b.tokens + elapsed * q.requests_per_second);
    b.last = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return Status::Ok();
  }
  const auto wait_ms = static_cast<int64_t>(std::ceil((1 - b.tokens) / q.requests_per_second * 1000));
  return ResourceExhausted("user '" + user + "' is over the request quota of " +
                           std::to_string(static_cast<int64_t>(q.requests_per_second)) +
                           " requests per second; retry after " + std::to_string(wait_ms) + " ms")
      .WithRetryAfter(std::max<int64_t>(wait_ms, 1));
}

Status Quotas::ReserveTasks(const std::string& user, int64_t n) {
  const Quota& q = QuotaFor(user);
  std::lock_guard lock(mu_);
  int64_t& held = in_flight_[user];
  if (q.max_in_flight > 0 && held + n > q.max_in_flight) {
    return ResourceExhausted("user '" + user + "' has " + std::to_string(held) + " tasks in flight; " +
                             std::to_string(n) + " more would pass the quota of " + std::to_string(q.max_in_flight) +
                             "; retry when some have finished")
        .WithRetryAfter(1000);
  }
  held += n;
  return Status::Ok();
}

void Quotas::ReleaseTasks(const std::string& user, int64_t n) {
  std::lock_guard lock(mu_);
  auto it = in_flight_.find(user);
  if (it == in_flight_.end()) return;
  it->second = std::max<int64_t>(0, it->second - n);
  if (it->second == 0) in_flight_.erase(it);
}

void Quotas::TasksFinished(const std::vector<v1::TaskRecord>& records) {
  std::lock_guard lock(mu_);
  for (const auto& r : records) {
    auto it = in_flight_.find(r.owner());
    if (it == in_flight_.end()) continue;  // submitted before this process started
    if (--it->second <= 0) in_flight_.erase(it);
  }
}

int64_t Quotas::InFlight(const std::string& user) {
  std::lock_guard lock(mu_);
  auto it = in_flight_.find(user);
  return it == in_flight_.end() ? 0 : it->second;
}

}  // namespace loom::service
