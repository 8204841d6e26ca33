// DeliveryChecker: what a client saw during a fault test, checked against Loom's delivery
// promise: every acknowledged submit ends in exactly one terminal outcome (never lost, never
// committed twice), within the attempt budget, with the right result.
//
//   DeliveryChecker checker;
//   checker.Acknowledged(task_id, expected);   // a submit returned task_id
//   checker.Observed(record);                  // every record the client read, re-reads included
//   DeliveryChecker::Report report = checker.Check(/*max_attempts=*/3);
//   EXPECT_TRUE(report.ok()) << report.Summary();
//
// Thread-safe: clients on many threads may record into one checker.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "loom.pb.h"

namespace loom::testing {

class DeliveryChecker {
 public:
  struct Report {
    // Every acknowledged task lands in exactly one of succeeded, failed, cancelled and lost, by
    // the first terminal record seen for it.
    int64_t acknowledged = 0;
    int64_t succeeded = 0;
    // Failed tasks by reason: the FailureKind name, ": ", and the first 60 characters of the
    // error, e.g. "FAILURE_KIND_KERNEL_ERROR: division by zero".
    std::map<std::string, int64_t> failed;
    int64_t cancelled = 0;
    // Problems. Counted per task; one task may count in several.
    int64_t lost = 0;           // acknowledged, no terminal record seen
    int64_t duplicated = 0;     // terminal records that differ in state, result, error or failure kind
    int64_t unknown = 0;        // terminal record seen, never acknowledged
    int64_t over_attempts = 0;  // attempts or attempt_history beyond max_attempts
    int64_t wrong_values = 0;   // succeeded with a result other than the expected one
    // "<problem> <task id>: <detail>" for the first few tasks of each problem.
    std::vector<std::string> examples;

    int64_t failed_total() const;
    bool ok() const { return lost == 0 && duplicated == 0 && unknown == 0 && over_attempts == 0 && wrong_values == 0; }
    // One line of counts, then one line per failure reason and per example.
    std::string Summary() const;
  };

  DeliveryChecker() = default;
  DeliveryChecker(const DeliveryChecker&) = delete;
  DeliveryChecker& operator=(const DeliveryChecker&) = delete;

  // A submit returned `task_id`; on success its result must equal `expected`. Acknowledging a
  // task twice (an idempotent retry) counts it once; the first expectation given stands.
  void Acknowledged(const std::string& task_id, v1::Value expected);
  // As above, with no expectation on the result.
  void Acknowledged(const std::string& task_id);
  // A record the client read. Only terminal records (SUCCESS, FAILED, CANCELLED) are outcomes;
  // every record's attempts are checked against the budget, so callers may pass every record
  // they read. Re-reads of the same terminal record are fine; compared are state, result, error
  // and failure kind (not timestamps, attempts or args, which differ between read paths).
  void Observed(const v1::TaskRecord& record);

  Report Check(int max_attempts) const;

 private:
  struct Task {
    bool acknowledged = false;
    std::optional<v1::Value> expected;
    std::optional<v1::TaskRecord> first;  // first terminal record seen
    bool duplicated = false;
    std::string duplicate_detail;
    int max_attempts_seen = 0;  // max over observations of attempts and attempt_history size
  };

  mutable std::mutex mu_;
  std::map<std::string, Task> tasks_;  // GUARDED_BY(mu_), by task id
};

}  // namespace loom::testing
