// ResultWatcher: follows sets of task ids over StreamResults streams on one CompletionQueue, for
// Client::StreamResults (driven by the caller's thread) and Executor (driven by its thread).
//
// Each id is delivered (on_record, terminal records only) or given up on (on_failed) at most
// once, whichever stream its record arrives on: an id is "owned" by the stream that follows it
// and forgotten once delivered. A stream broken by UNAVAILABLE (or ended by the service before
// all its ids were terminal) is resubscribed, after a backoff, for the ids it still owns. When
// the stream cap is reached, the stream owning the fewest ids is cancelled and its ids move to
// the new stream together with the new ones.
//
// Not thread-safe: every method, and every OnEvent of the ops it puts on the queue, runs on the
// one thread that drives the queue. Callbacks may call Watch and CancelAll.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "loom.grpc.pb.h"
#include "sdk_cpp/internal.h"

namespace loom::sdk_internal {

struct WatchOptions {
  // Every stream ends by then; max(): no deadline.
  std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max();
  size_t max_ids_per_stream = 10000;
  size_t max_request_bytes = size_t{8} << 20;
  size_t max_streams = 0;  // 0: no cap
  // When set, a call that hits the deadline after the previous one failed with UNAVAILABLE
  // reports UNAVAILABLE unless this channel is connected by then (the tasks were just slow).
  grpc::ChannelInterface* channel = nullptr;
};

class ResultWatcher {
 public:
  using RecordFn = std::function<void(v1::TaskRecord& record)>;
  using FailedFn = std::function<void(std::vector<std::string> task_ids, const Status& status)>;

  ResultWatcher(v1::Loom::StubInterface& stub, grpc::CompletionQueue& cq, WatchOptions options, RecordFn on_record,
                FailedFn on_failed);
  // REQUIRES: idle().
  ~ResultWatcher();
  ResultWatcher(const ResultWatcher&) = delete;
  ResultWatcher& operator=(const ResultWatcher&) = delete;

  // Starts following the ids not followed yet. Ignored after CancelAll.
  void Watch(const std::vector<std::string>& task_ids);
  // Cancels every stream and backoff; no callback runs afterwards. The queue's driver keeps
  // draining until idle().
  void CancelAll();
  // True when no stream or backoff has an event pending on the queue.
  bool idle() const { return streams_.empty(); }
  // Ids neither delivered nor given up on.
  size_t watched() const { return owner_.size(); }
  size_t streams() const { return streams_.size(); }

 private:
  class Stream;
  friend class Stream;

  void NewStream(std::vector<std::string> ids);
  void StartCall(Stream* s);
  void OnStreamEvent(Stream* s, bool ok);
  void OnFinished(Stream* s);
  void Deliver(Stream* s);
  std::vector<std::string> OwnedIds(const Stream* s) const;
  void FailOwned(Stream* s, const Status& status);
  void Cancel(Stream* s);
  void Remove(Stream* s);
  bool DeadlinePassed() const;

  v1::Loom::StubInterface& stub_;
  grpc::CompletionQueue& cq_;
  const WatchOptions options_;
  const RecordFn on_record_;
  const FailedFn on_failed_;
  bool cancelled_ = false;
  std::unordered_map<std::string, Stream*> owner_;                // id -> the stream following it
  std::unordered_map<Stream*, std::unique_ptr<Stream>> streams_;  // live and cancelled-but-pending
};

}  // namespace loom::sdk_internal
