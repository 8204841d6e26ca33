// How task fields are encoded inside a store, shared by RedisTaskStore and InMemoryTaskStore
// so both return identical records.
#pragma once

#include <string>
#include <string_view>

#include "loom.pb.h"

namespace loom::service {

// Timestamps are kept as binary entries in the order written (a task's Redis hash rewrites them
// at each transition, so their size is paid in Redis memory, AOF bytes and Lua work):
//   a known stage: its code (1..31, kStageCodes in task_codec.cc), then unix nanos (8 bytes LE);
//   another stage: 0, its length (1 byte), its name (up to 255 bytes), then unix nanos.
// A task's 8 usual stamps take 72 bytes instead of about 270 as "stage=unix_nanos;" text.
std::string EncodeStamp(std::string_view stage, int64_t unix_nanos);
// What a result adds to its task's stamps, in order: its lease's "dispatched" stamp
// (TaskResult.leased_unix_nanos, when set), then its own.
std::string EncodeResultStamps(const v1::TaskResult& r);
// Parses the entries into `out`, sorted by time (stable), later duplicates of a stage kept.
// Text entries of the earlier format ("stage=unix_nanos;") are read too. A truncated entry
// ends the parse.
void DecodeStamps(std::string_view encoded, google::protobuf::RepeatedPtrField<v1::Timestamp>* out);

// The error for a submit that would overfill an endpoint's queue.
std::string QueueFullMessage(const std::string& endpoint, int64_t depth, int64_t adding, int64_t max_queue_depth);

// The fields of one stored task, as both stores keep them.
struct StoredTask {
  int state = 0;
  std::string owner, function, endpoint;
  std::string spec;     // v1::TaskSpec; empty when args are not wanted
  std::string result;   // v1::Value
  std::string error;    // the final error, without the attempt history
  std::string stamps;   // EncodeStamp entries
  std::string history;  // EncodeAttempt entries
  int attempts = 0;     // attempts started (dispatches not given back)
  int max_attempts = 1;
  int worker_deaths = 0;
  int failure = 0;  // v1::FailureKind once failed
  int64_t lease_epoch = 0;
  int64_t timeout_ms = 0;
  std::string idempotency_key;
  std::string failover_kernel;  // failover route (service/routing.h) when the task may fail over
};

// The attempt history is kept as records separated by '\x1e', fields by '\x1f':
// number, endpoint, lease epoch, failure kind, unix nanos, error. Lua scripts write the same.
inline constexpr char kAttemptSep = '\x1e';
inline constexpr char kFieldSep = '\x1f';
std::string EncodeAttempt(int number, std::string_view endpoint, int64_t lease_epoch, int failure, int64_t unix_nanos,
                          std::string_view error);
// Replaces the separators in text that goes into a history record.
std::string SanitizeForHistory(std::string_view text);
void DecodeAttempts(std::string_view encoded, google::protobuf::RepeatedPtrField<v1::Attempt>* out);
// "worker lost", "endpoint lost", "timed out", ...
const char* FailureKindText(int failure);
// The error a failed task shows: the final error, then every failed attempt.
std::string ErrorWithHistory(const std::string& error, const google::protobuf::RepeatedPtrField<v1::Attempt>& h);

// The error for deleting a task that has not finished.
std::string DeleteUnfinishedMessage(const std::string& id);

// The final errors the stores write (the Lua scripts build the same text).
std::string PoisonError(int deaths, int max_worker_deaths);
std::string ExhaustedError(int attempts, int max_attempts);

// The fields every record has, as stored (views, so that a caller holding a store's reply
// copies nothing on the way in).
struct RecordHead {
  std::string_view id, owner, function, endpoint;
  std::string_view stamps;   // EncodeStamp entries
  std::string_view history;  // EncodeAttempt entries
  int state = 0;
  int attempts = 0;
  int max_attempts = 1;
};
// Sets those fields of `r` (the stamps and the attempt history decoded).
void FillRecordHead(const RecordHead& h, v1::TaskRecord* r);
// The whole record: the head, then the result, error, failure and the rest.
v1::TaskRecord MakeRecord(const std::string& id, const StoredTask& t);

}  // namespace loom::service
