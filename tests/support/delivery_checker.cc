#include "tests/support/delivery_checker.h"

#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <sstream>
#include <utility>

#include "common/task_state.h"

namespace loom::testing {
namespace {

constexpr size_t kReasonErrorChars = 60;
constexpr int64_t kExamplesPerProblem = 5;
constexpr size_t kShownValueChars = 80;

bool SameValue(const v1::Value& a, const v1::Value& b) {
  // A kernel that returns NaN returns it every time; NaN != NaN must not read as a wrong value.
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  return differencer.Compare(a, b);
}

std::string Shown(const v1::Value& v) {
  std::string text = v.ShortDebugString();
  if (text.empty()) text = "null";
  if (text.size() > kShownValueChars) text = text.substr(0, kShownValueChars) + "...";
  return text;
}

std::string FailureReason(const v1::TaskRecord& r) {
  std::string reason = v1::FailureKind_Name(r.failure());
  if (!r.error().empty()) reason += ": " + r.error().substr(0, kReasonErrorChars);
  return reason;
}

// How two terminal records of one task differ; empty when they carry the same outcome.
std::string TerminalDifference(const v1::TaskRecord& a, const v1::TaskRecord& b) {
  if (a.state() != b.state()) {
    return std::string("state ") + TaskStateName(a.state()) + " then " + TaskStateName(b.state());
  }
  if (!SameValue(a.result(), b.result())) return "result " + Shown(a.result()) + " then " + Shown(b.result());
  if (a.error() != b.error()) return "error '" + a.error() + "' then '" + b.error() + "'";
  if (a.failure() != b.failure()) {
    return "failure " + v1::FailureKind_Name(a.failure()) + " then " + v1::FailureKind_Name(b.failure());
  }
  return "";
}

}  // namespace

int64_t DeliveryChecker::Report::failed_total() const {
  int64_t total = 0;
  for (const auto& [reason, count] : failed) total += count;
  return total;
}

std::string DeliveryChecker::Report::Summary() const {
  std::ostringstream out;
  out << "acknowledged=" << acknowledged << " succeeded=" << succeeded << " failed=" << failed_total()
      << " cancelled=" << cancelled << " lost=" << lost << " duplicated=" << duplicated << " unknown=" << unknown
      << " over_attempts=" << over_attempts << " wrong_values=" << wrong_values << (ok() ? " OK" : " VIOLATED");
  for (const auto& [reason, count] : failed) out << "\n  failed " << count << "x " << reason;
  for (const std::string& e : examples) out << "\n  " << e;
  return out.str();
}

void DeliveryChecker::Acknowledged(const std::string& task_id, v1::Value expected) {
  std::lock_guard<std::mutex> lock(mu_);
  Task& t = tasks_[task_id];
  t.acknowledged = true;
  if (!t.expected) t.expected = std::move(expected);
}

void DeliveryChecker::Acknowledged(const std::string& task_id) {
  std::lock_guard<std::mutex> lock(mu_);
  tasks_[task_id].acknowledged = true;
}

void DeliveryChecker::Observed(const v1::TaskRecord& record) {
  const int attempts = std::max(record.attempts(), record.attempt_history_size());
  const bool terminal = IsTerminal(record.state());
  std::lock_guard<std::mutex> lock(mu_);
  if (!terminal && tasks_.find(record.id()) == tasks_.end() && attempts == 0) return;
  Task& t = tasks_[record.id()];
  t.max_attempts_seen = std::max(t.max_attempts_seen, attempts);
  if (!terminal) return;
  if (!t.first) {
    v1::TaskRecord kept = record;
    // Only the outcome is compared later; do not hold every task's inputs.
    kept.clear_args();
    kept.clear_kwargs();
    t.first = std::move(kept);
    return;
  }
  if (t.duplicated) return;
  if (std::string diff = TerminalDifference(*t.first, record); !diff.empty()) {
    t.duplicated = true;
    t.duplicate_detail = std::move(diff);
  }
}

DeliveryChecker::Report DeliveryChecker::Check(int max_attempts) const {
  std::lock_guard<std::mutex> lock(mu_);
  Report r;
  auto problem = [&r](int64_t& counter, const char* name, const std::string& id, const std::string& detail) {
    if (++counter <= kExamplesPerProblem) r.examples.push_back(std::string(name) + " " + id + ": " + detail);
  };
  for (const auto& [id, t] : tasks_) {
    if (t.acknowledged) {
      ++r.acknowledged;
      if (!t.first) {
        problem(r.lost, "lost", id, "acknowledged, no terminal record seen");
      } else if (t.first->state() == v1::TASK_STATE_SUCCESS) {
        ++r.succeeded;
      } else if (t.first->state() == v1::TASK_STATE_FAILED) {
        ++r.failed[FailureReason(*t.first)];
      } else {
        ++r.cancelled;
      }
    } else if (t.first) {
      problem(r.unknown, "unknown", id, std::string("never acknowledged, seen ") + TaskStateName(t.first->state()));
    }
    if (t.duplicated) problem(r.duplicated, "duplicated", id, t.duplicate_detail);
    if (t.max_attempts_seen > max_attempts) {
      problem(r.over_attempts, "over_attempts", id,
              std::to_string(t.max_attempts_seen) + " attempts, budget " + std::to_string(max_attempts));
    }
    if (t.first && t.expected && t.first->state() == v1::TASK_STATE_SUCCESS &&
        !SameValue(*t.expected, t.first->result())) {
      problem(r.wrong_values, "wrong_value", id,
              "expected " + Shown(*t.expected) + ", got " + Shown(t.first->result()));
    }
  }
  return r;
}

}  // namespace loom::testing
