// Every Redis key and hash field Loom uses is built here, and nowhere else.
//
//   loom:fns                 SET     owner/name of registered functions
//   loom:fn:<owner>/<name>   STRING  v1::Function (serialized)
//   loom:eps                 SET     ids of known endpoints
//   loom:ep:<id>             STRING  v1::EndpointRecord (serialized)
//   loom:epacl:<id>          STRING  its access fields (owner, allow-lists, CURVE key), see TaskStore
//   loom:task:<id>           HASH    one task (fields below)
//   loom:q:<endpoint>        LIST    ids of tasks waiting for the endpoint, oldest first
//   loom:inflight:<endpoint> ZSET    ids of tasks dispatched to the endpoint's latest session, scored by dispatch order
//   loom:seq:<endpoint>      STRING  counter giving that order
//   loom:epoch:<endpoint>    STRING  lease epoch of the endpoint's latest session (INCR on register)
//   loom:idem:<owner>:<key>  STRING  task id submitted with that idempotency key
//   loom:expiry              ZSET    expiry buckets that hold finished tasks, scored by their time
//   loom:expiry:<seconds>    LIST    ids of finished tasks to delete at that unix time
//   loom:tokens              SET     ids of bearer tokens
//   loom:token:<id>          HASH    one token: i = v1::TokenInfo, h = SHA-256 of its secret
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace loom::service::keys {

inline constexpr std::string_view kFunctions = "loom:fns";
inline constexpr std::string_view kFunctionPrefix = "loom:fn:";
inline constexpr std::string_view kEndpoints = "loom:eps";
inline constexpr std::string_view kEndpointPrefix = "loom:ep:";
inline constexpr std::string_view kEndpointAccessPrefix = "loom:epacl:";
inline constexpr std::string_view kTaskPrefix = "loom:task:";
inline constexpr std::string_view kQueuePrefix = "loom:q:";
inline constexpr std::string_view kInFlightPrefix = "loom:inflight:";
inline constexpr std::string_view kSeqPrefix = "loom:seq:";
inline constexpr std::string_view kEpochPrefix = "loom:epoch:";
inline constexpr std::string_view kIdempotencyPrefix = "loom:idem:";
inline constexpr std::string_view kExpiry = "loom:expiry";
inline constexpr std::string_view kExpiryPrefix = "loom:expiry:";
inline constexpr std::string_view kTokens = "loom:tokens";
inline constexpr std::string_view kTokenPrefix = "loom:token:";

inline std::string Function(std::string_view name) { return std::string(kFunctionPrefix).append(name); }
inline std::string Endpoint(std::string_view id) { return std::string(kEndpointPrefix).append(id); }
inline std::string EndpointAccess(std::string_view id) { return std::string(kEndpointAccessPrefix).append(id); }
inline std::string Task(std::string_view id) { return std::string(kTaskPrefix).append(id); }
inline std::string Queue(std::string_view endpoint) { return std::string(kQueuePrefix).append(endpoint); }
inline std::string InFlight(std::string_view endpoint) { return std::string(kInFlightPrefix).append(endpoint); }
inline std::string Seq(std::string_view endpoint) { return std::string(kSeqPrefix).append(endpoint); }
inline std::string Token(std::string_view id) { return std::string(kTokenPrefix).append(id); }
inline std::string Epoch(std::string_view endpoint) { return std::string(kEpochPrefix).append(endpoint); }
inline std::string ExpiryBucket(int64_t unix_seconds) {
  return std::string(kExpiryPrefix).append(std::to_string(unix_seconds));
}

// Fields of a task hash. Short names: there is one hash per task, so bytes per field add up.
namespace field {
inline constexpr std::string_view kState = "s";  // TaskState as a decimal number
inline constexpr std::string_view kOwner = "o";
inline constexpr std::string_view kFunction = "f";
inline constexpr std::string_view kEndpoint = "e";
inline constexpr std::string_view kSpec = "a";    // v1::TaskSpec: kernel, args, kwargs, config
inline constexpr std::string_view kResult = "r";  // v1::Value
inline constexpr std::string_view kError = "x";
inline constexpr std::string_view kTimestamps = "t";  // "stage=unix_nanos;" repeated, in the order written
inline constexpr std::string_view kAttempts = "n";    // attempts counted; one more while in flight, not running
inline constexpr std::string_view kMaxAttempts = "m";
inline constexpr std::string_view kHistory = "h";  // failed attempts (task_codec.h EncodeAttempt)
inline constexpr std::string_view kWorkerDeaths = "d";
inline constexpr std::string_view kFailure = "u";   // v1::FailureKind of a failed task
inline constexpr std::string_view kTimeout = "w";   // timeout_ms, when set
inline constexpr std::string_view kIdemKey = "k";   // the loom:idem: key, when set
inline constexpr std::string_view kFailover = "g";  // failover route (service/routing.h), when it may move
}  // namespace field

}  // namespace loom::service::keys
