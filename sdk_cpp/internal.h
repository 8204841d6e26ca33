// Pieces shared by the SDK's sources and its tests; not part of the public API
// (include/loom/ is).
#pragma once

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <span>
#include <vector>

#include "common/status.h"

namespace loom::sdk_internal {

// gRPC's codes are numbered as StatusCode's, so the mapping is one to one; the message is kept.
inline Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return Status::Ok();
  return Status(static_cast<StatusCode>(s.error_code()), s.error_message());
}

// Anything waiting on a grpc::CompletionQueue: the tag handed to gRPC is the CqOp, and whoever
// drives the queue calls OnEvent(ok) for it.
class CqOp {
 public:
  virtual ~CqOp() = default;
  virtual void OnEvent(bool ok) = 0;
};

// Bytes one element of a repeated message or string field takes on the wire, given its payload
// size: the tag, the length prefix and the payload.
size_t RepeatedFieldBytes(size_t payload_bytes);

// The bytes a request may use of a max_message_bytes budget; the rest is headroom for the
// enclosing message.
size_t RequestBudget(int64_t max_message_bytes);

// Splits items of the given wire sizes into consecutive chunks of at most `max_items` items
// whose sizes add up to at most `max_bytes`. Returns the end offset of each chunk.
// INVALID_ARGUMENT when one item alone is over max_bytes.
Result<std::vector<size_t>> ChunkBySize(std::span<const size_t> sizes, size_t max_items, size_t max_bytes);

// Reconnection backoff after UNAVAILABLE: the first wait, the cap, and the channel's own
// reconnect backoff (gRPC's defaults grow to two minutes, far too slow to ride out a restart).
inline constexpr std::chrono::milliseconds kInitialBackoff{50};
inline constexpr std::chrono::milliseconds kMaxBackoff{1000};
inline constexpr int kChannelMinReconnectMs = 100;
inline constexpr int kChannelMaxReconnectMs = 1000;

// Retrying submits that carry an idempotency key (Client::Submit documents the rule).
inline constexpr std::chrono::milliseconds kSubmitRetryInitialBackoff{100};
inline constexpr std::chrono::milliseconds kSubmitRetryMaxBackoff{2000};

// The codes after which a submit may or may not have created its tasks; only a keyed submit
// may be sent again.
inline bool IsRetryableSubmitError(StatusCode code) {
  return code == StatusCode::kUnavailable || code == StatusCode::kDeadlineExceeded;
}

// The wait before retry number `retry` (1-based): kSubmitRetryInitialBackoff doubling up to
// kSubmitRetryMaxBackoff, scaled by 1 + 0.2 * jitter. REQUIRES: -1 <= jitter <= 1.
std::chrono::milliseconds SubmitRetryBackoff(int retry, double jitter);
// The same with a random jitter (a per-thread generator), so clients that lost the service
// together do not come back in lockstep.
std::chrono::milliseconds JitteredSubmitRetryBackoff(int retry);

}  // namespace loom::sdk_internal
