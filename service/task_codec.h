// How task fields are encoded inside a store, shared by RedisTaskStore and InMemoryTaskStore
// so both return identical records.
#pragma once

#include <string>
#include <string_view>

#include "loom.pb.h"

namespace loom::service {

// Timestamps are kept as "stage=unix_nanos;" entries in the order written.
std::string EncodeStamp(std::string_view stage, int64_t unix_nanos);
// Parses the entries into `out`, sorted by time (stable), later duplicates of a stage kept.
void DecodeStamps(std::string_view encoded, google::protobuf::RepeatedPtrField<v1::Timestamp>* out);

// The error for a submit that would overfill an endpoint's queue.
std::string QueueFullMessage(const std::string& endpoint, int64_t depth, int64_t adding, int64_t max_queue_depth);

// Builds a record from stored fields. `spec` may be empty (args not wanted).
v1::TaskRecord MakeRecord(const std::string& id, int state, const std::string& owner, const std::string& function,
                          const std::string& endpoint, const std::string& stamps, const std::string& result,
                          const std::string& error, const std::string& spec);

}  // namespace loom::service
