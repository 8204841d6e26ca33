#include "service/task_codec.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include "common/task_state.h"

namespace loom::service {

namespace {

// Index = code. Append only: codes are stored.
constexpr std::string_view kStageCodes[] = {
    "",          // 0: a named stage follows
    "received",  // 1
    "waiting-for-endpoint",
    "dispatched",
    "running",
    "success",
    "failed",
    "cancelled",
    "retry",
    "requeued",
    "failover",  // 10
    "endpoint_received",
    "worker_started",
    "kernel_finished",
    "endpoint_result",
    "service_sent",  // 15
    "service_committed",
};
constexpr size_t kStageCodeCount = sizeof(kStageCodes) / sizeof(kStageCodes[0]);
static_assert(kStageCodeCount <= 32, "codes must stay below ' ', the first byte of a text entry");

uint8_t StageCode(std::string_view stage) {
  for (size_t i = 1; i < kStageCodeCount; ++i) {
    if (kStageCodes[i] == stage) return static_cast<uint8_t>(i);
  }
  return 0;
}

}  // namespace

std::string EncodeStamp(std::string_view stage, int64_t unix_nanos) {
  std::string s;
  const uint8_t code = StageCode(stage);
  if (code != 0) {
    s.push_back(static_cast<char>(code));
  } else {
    stage = stage.substr(0, 255);
    s.push_back('\0');
    s.push_back(static_cast<char>(stage.size()));
    s.append(stage);
  }
  auto v = static_cast<uint64_t>(unix_nanos);
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

std::string EncodeResultStamps(const v1::TaskResult& r) {
  std::string out;
  if (r.leased_unix_nanos() > 0) out = EncodeStamp(TaskStateName(v1::TASK_STATE_DISPATCHED), r.leased_unix_nanos());
  for (const auto& t : r.timestamps()) out += EncodeStamp(t.stage(), t.unix_nanos());
  return out;
}

void DecodeStamps(std::string_view encoded, google::protobuf::RepeatedPtrField<v1::Timestamp>* out) {
  const int first = out->size();
  while (!encoded.empty()) {
    const auto lead = static_cast<uint8_t>(encoded[0]);
    if (lead >= kStageCodeCount && lead >= 0x20) {  // a text entry: "stage=unix_nanos;"
      auto semi = encoded.find(';');
      std::string_view entry = encoded.substr(0, semi);
      encoded = semi == std::string_view::npos ? std::string_view() : encoded.substr(semi + 1);
      auto eq = entry.find('=');
      if (eq == std::string_view::npos) continue;
      int64_t ns = 0;
      std::from_chars(entry.data() + eq + 1, entry.data() + entry.size(), ns);
      auto* t = out->Add();
      t->set_stage(std::string(entry.substr(0, eq)));
      t->set_unix_nanos(ns);
      continue;
    }
    if (lead >= kStageCodeCount) break;  // not ours
    std::string_view stage = kStageCodes[lead];
    size_t at = 1;
    if (lead == 0) {
      if (encoded.size() < 2) break;
      const size_t n = static_cast<uint8_t>(encoded[1]);
      if (encoded.size() < 2 + n) break;
      stage = encoded.substr(2, n);
      at = 2 + n;
    }
    if (encoded.size() < at + 8) break;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(encoded[at + i])) << (8 * i);
    auto* t = out->Add();
    t->set_stage(std::string(stage));
    t->set_unix_nanos(static_cast<int64_t>(v));
    encoded = encoded.substr(at + 8);
  }
  const auto earlier = [](const v1::Timestamp& a, const v1::Timestamp& b) { return a.unix_nanos() < b.unix_nanos(); };
  // Usually written in time order already (see Endpoint::AddResult).
  if (!std::is_sorted(out->begin() + first, out->end(), earlier))
    std::stable_sort(out->begin() + first, out->end(), earlier);
}

std::string QueueFullMessage(const std::string& endpoint, int64_t depth, int64_t adding, int64_t max_queue_depth) {
  return "endpoint '" + endpoint + "' has " + std::to_string(depth) + " task(s) queued; " + std::to_string(adding) +
         " more would pass the limit of " + std::to_string(max_queue_depth) +
         " (max_queue_depth): wait for it to drain or start the endpoint";
}

std::string EncodeAttempt(int number, std::string_view endpoint, int64_t lease_epoch, int failure, int64_t unix_nanos,
                          std::string_view error) {
  std::string s = std::to_string(number);
  s.append(1, kFieldSep).append(SanitizeForHistory(endpoint)).append(1, kFieldSep);
  s.append(std::to_string(lease_epoch)).append(1, kFieldSep).append(std::to_string(failure));
  s.append(1, kFieldSep).append(std::to_string(unix_nanos)).append(1, kFieldSep);
  s.append(SanitizeForHistory(error)).append(1, kAttemptSep);
  return s;
}

std::string SanitizeForHistory(std::string_view text) {
  std::string s(text);
  for (char& c : s) {
    if (c == kAttemptSep || c == kFieldSep) c = ' ';
  }
  return s;
}

void DecodeAttempts(std::string_view encoded, google::protobuf::RepeatedPtrField<v1::Attempt>* out) {
  while (!encoded.empty()) {
    auto end = encoded.find(kAttemptSep);
    std::string_view rec = encoded.substr(0, end);
    encoded = end == std::string_view::npos ? std::string_view() : encoded.substr(end + 1);
    std::vector<std::string_view> f;
    while (f.size() < 5) {
      auto sep = rec.find(kFieldSep);
      if (sep == std::string_view::npos) break;
      f.push_back(rec.substr(0, sep));
      rec = rec.substr(sep + 1);
    }
    if (f.size() < 5) continue;
    auto num = [](std::string_view v) {
      int64_t n = 0;
      std::from_chars(v.data(), v.data() + v.size(), n);
      return n;
    };
    auto* a = out->Add();
    a->set_number(static_cast<int32_t>(num(f[0])));
    a->set_endpoint(std::string(f[1]));
    a->set_lease_epoch(num(f[2]));
    a->set_failure(static_cast<v1::FailureKind>(num(f[3])));
    a->set_ended_unix_nanos(num(f[4]));
    a->set_error(std::string(rec));
  }
}

const char* FailureKindText(int failure) {
  switch (failure) {
    case v1::FAILURE_KIND_KERNEL_ERROR:
      return "kernel error";
    case v1::FAILURE_KIND_WORKER_LOST:
      return "worker lost";
    case v1::FAILURE_KIND_ENDPOINT_LOST:
      return "endpoint lost";
    case v1::FAILURE_KIND_TIMEOUT:
      return "timed out";
    case v1::FAILURE_KIND_POISON:
      return "poison";
    case v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED:
      return "attempts exhausted";
    case v1::FAILURE_KIND_REJECTED:
      return "rejected";
    default:
      return "failed";
  }
}

std::string ErrorWithHistory(const std::string& error, const google::protobuf::RepeatedPtrField<v1::Attempt>& h) {
  // One failed attempt whose error is the task's error says nothing more.
  if (h.empty() || (h.size() == 1 && h[0].error() == error)) return error;
  std::string s = error + " [attempt history:";
  for (const auto& a : h) {
    s += " #" + std::to_string(a.number()) + " on " + a.endpoint() + ": " + FailureKindText(a.failure());
    if (!a.error().empty()) s += " (" + a.error() + ")";
    s += ";";
  }
  s.back() = ']';
  return s;
}

std::string DeleteUnfinishedMessage(const std::string& id) {
  return "task '" + id + "' has not finished; cancel it before deleting it";
}

std::string PoisonError(int deaths, int max_worker_deaths) {
  return "poison: this task killed " + std::to_string(deaths) + " worker(s) (max_worker_deaths " +
         std::to_string(max_worker_deaths) + "); it is not tried again";
}

std::string ExhaustedError(int attempts, int max_attempts) {
  return "gave up after " + std::to_string(attempts) + " attempt(s) lost to system failures (max_attempts " +
         std::to_string(max_attempts) + ")";
}

void FillRecordHead(const RecordHead& h, v1::TaskRecord* r) {
  r->set_id(h.id.data(), h.id.size());
  r->set_state(static_cast<v1::TaskState>(h.state));
  r->set_owner(h.owner.data(), h.owner.size());
  r->set_function(h.function.data(), h.function.size());
  r->set_endpoint(h.endpoint.data(), h.endpoint.size());
  DecodeStamps(h.stamps, r->mutable_timestamps());
  DecodeAttempts(h.history, r->mutable_attempt_history());
  r->set_attempts(h.attempts);
  r->set_max_attempts(h.max_attempts);
}

v1::TaskRecord MakeRecord(const std::string& id, const StoredTask& t) {
  v1::TaskRecord r;
  FillRecordHead({id, t.owner, t.function, t.endpoint, t.stamps, t.history, t.state, t.attempts, t.max_attempts}, &r);
  if (!t.result.empty()) r.mutable_result()->ParseFromString(t.result);
  r.set_error(t.state == v1::TASK_STATE_FAILED ? ErrorWithHistory(t.error, r.attempt_history()) : t.error);
  if (t.state == v1::TASK_STATE_FAILED) {
    r.set_failure(static_cast<v1::FailureKind>(t.failure == 0 ? v1::FAILURE_KIND_KERNEL_ERROR : t.failure));
  }
  r.set_timeout_ms(t.timeout_ms);
  r.set_idempotency_key(t.idempotency_key);
  if (!t.spec.empty()) {
    v1::TaskSpec s;
    if (s.ParseFromString(t.spec)) {
      *r.mutable_args() = s.args();
      *r.mutable_kwargs() = s.kwargs();
    }
  }
  return r;
}

}  // namespace loom::service
