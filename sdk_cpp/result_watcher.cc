#include "sdk_cpp/result_watcher.h"

#include <algorithm>
#include <limits>

#include "common/task_state.h"

namespace loom::sdk_internal {

using Clock = std::chrono::system_clock;

class ResultWatcher::Stream : public CqOp {
 public:
  enum class State { kStarting, kReading, kFinishing, kBackoff };

  explicit Stream(ResultWatcher* watcher) : watcher_(watcher) {}
  void OnEvent(bool ok) override { watcher_->OnStreamEvent(this, ok); }

  ResultWatcher* const watcher_;
  State state = State::kStarting;
  std::vector<std::string> ids;  // what the current (or next) call asks for
  size_t owned = 0;              // ids whose owner_ entry is this stream
  bool cancelled = false;        // by us: superseded or CancelAll
  std::chrono::milliseconds backoff = kInitialBackoff;
  Status last_error;  // how the previous call ended, when it is retried
  // The context owns the call that the reader lives in: it must outlive the reader.
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::ClientAsyncReaderInterface<v1::TaskRecords>> reader;
  v1::TaskRecords records;  // one message: the records the service had ready together
  grpc::Status status;
  std::unique_ptr<grpc::Alarm> alarm;
};

ResultWatcher::ResultWatcher(v1::Loom::StubInterface& stub, grpc::CompletionQueue& cq, WatchOptions options,
                             RecordFn on_record, FailedFn on_failed)
    : stub_(stub),
      cq_(cq),
      options_(std::move(options)),
      on_record_(std::move(on_record)),
      on_failed_(std::move(on_failed)) {}

ResultWatcher::~ResultWatcher() { LOOM_CHECK(idle()); }

void ResultWatcher::Watch(const std::vector<std::string>& task_ids) {
  if (cancelled_) return;
  std::vector<std::string> fresh;
  fresh.reserve(task_ids.size());
  for (const auto& id : task_ids) {
    if (owner_.try_emplace(id, nullptr).second) fresh.push_back(id);
  }
  if (fresh.empty()) return;
  std::vector<size_t> sizes;
  sizes.reserve(fresh.size());
  for (const auto& id : fresh) sizes.push_back(RepeatedFieldBytes(id.size()));
  auto ends = ChunkBySize(sizes, options_.max_ids_per_stream, options_.max_request_bytes);
  if (!ends.ok()) {
    for (const auto& id : fresh) owner_.erase(id);
    on_failed_(std::move(fresh), ends.status());
    return;
  }
  size_t begin = 0;
  for (size_t end : *ends) {
    std::vector<std::string> chunk(std::make_move_iterator(fresh.begin() + static_cast<std::ptrdiff_t>(begin)),
                                   std::make_move_iterator(fresh.begin() + static_cast<std::ptrdiff_t>(end)));
    begin = end;
    if (options_.max_streams != 0) {
      Stream* smallest = nullptr;
      size_t live = 0;
      for (const auto& [s, unused] : streams_) {
        if (s->cancelled) continue;
        ++live;
        if (smallest == nullptr || s->owned < smallest->owned) smallest = s;
      }
      if (live >= options_.max_streams && smallest != nullptr &&
          smallest->owned + chunk.size() <= options_.max_ids_per_stream) {
        std::vector<std::string> merged = OwnedIds(smallest);
        size_t bytes = 0;
        for (const auto& id : merged) bytes += RepeatedFieldBytes(id.size());
        for (size_t size : std::span(sizes).subspan(end - chunk.size(), chunk.size())) bytes += size;
        if (bytes <= options_.max_request_bytes) {
          merged.insert(merged.end(), std::make_move_iterator(chunk.begin()), std::make_move_iterator(chunk.end()));
          // Cancel first: the new stream takes over the ids; a record the old stream still
          // delivers before it ends counts, and the new stream's copy is then ignored.
          Cancel(smallest);
          NewStream(std::move(merged));
          continue;
        }
      }
    }
    NewStream(std::move(chunk));
  }
}

void ResultWatcher::NewStream(std::vector<std::string> ids) {
  auto owned = std::make_unique<Stream>(this);
  Stream* s = owned.get();
  streams_.emplace(s, std::move(owned));
  for (const auto& id : ids) {
    Stream*& o = owner_[id];
    if (o != nullptr) --o->owned;
    o = s;
    ++s->owned;
  }
  s->ids = std::move(ids);
  StartCall(s);
}

void ResultWatcher::StartCall(Stream* s) {
  s->reader.reset();
  s->ctx = std::make_unique<grpc::ClientContext>();
  v1::WaitResultsRequest request;
  request.mutable_task_ids()->Reserve(static_cast<int>(s->ids.size()));
  for (const auto& id : s->ids) request.add_task_ids(id);
  if (options_.deadline != Clock::time_point::max()) {
    s->ctx->set_deadline(options_.deadline);
    // The service ends the stream itself at its timeout; 0 would mean "no timeout".
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(options_.deadline - Clock::now());
    request.set_timeout_ms(std::max<int64_t>(1, left.count()));
  }
  s->state = Stream::State::kStarting;
  s->reader = stub_.PrepareAsyncStreamResults(s->ctx.get(), request, &cq_);
  s->reader->StartCall(s);
}

void ResultWatcher::OnStreamEvent(Stream* s, bool ok) {
  switch (s->state) {
    case Stream::State::kStarting:
    case Stream::State::kReading:
      if (!ok) {
        s->state = Stream::State::kFinishing;
        s->reader->Finish(&s->status, s);
        return;
      }
      if (s->state == Stream::State::kReading) Deliver(s);
      s->state = Stream::State::kReading;
      s->reader->Read(&s->records, s);
      return;
    case Stream::State::kFinishing:
      OnFinished(s);
      return;
    case Stream::State::kBackoff:
      if (!ok || s->cancelled || cancelled_) {
        Remove(s);
        return;
      }
      if (DeadlinePassed()) {
        FailOwned(s, s->last_error);
        Remove(s);
        return;
      }
      s->ids = OwnedIds(s);
      if (s->ids.empty()) {
        Remove(s);
        return;
      }
      StartCall(s);
      return;
  }
}

void ResultWatcher::Deliver(Stream* s) {
  for (v1::TaskRecord& record : *s->records.mutable_tasks()) {
    if (!IsTerminal(record.state())) continue;
    auto it = owner_.find(record.id());
    if (it == owner_.end()) continue;  // delivered already (or never asked for)
    if (it->second != nullptr) --it->second->owned;
    owner_.erase(it);
    s->backoff = kInitialBackoff;  // the service is answering again
    s->last_error = Status::Ok();
    if (!cancelled_) on_record_(record);
  }
  s->records.Clear();
}

void ResultWatcher::OnFinished(Stream* s) {
  if (s->cancelled || cancelled_) {
    Remove(s);
    return;
  }
  if (s->owned == 0) {
    Remove(s);
    return;
  }
  const grpc::StatusCode code = s->status.error_code();
  // UNAVAILABLE: the connection broke (e.g. the service restarted). OK with ids left: the
  // service ended the stream early (its timeout, or it is shutting down). Both are resubscribed.
  if (code == grpc::StatusCode::OK || code == grpc::StatusCode::UNAVAILABLE) {
    const size_t left = s->owned;
    s->last_error = code == grpc::StatusCode::UNAVAILABLE
                        ? FromGrpc(s->status)
                        : DeadlineExceeded(std::to_string(left) + " task(s) not finished before the timeout");
    if (DeadlinePassed()) {
      FailOwned(s, s->last_error);
      Remove(s);
      return;
    }
    s->state = Stream::State::kBackoff;
    s->alarm = std::make_unique<grpc::Alarm>();
    s->alarm->Set(&cq_, std::min(Clock::now() + s->backoff, options_.deadline), s);
    s->backoff = std::min(s->backoff * 2, kMaxBackoff);
    return;
  }
  if (code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    const bool still_unreachable = s->last_error.code() == StatusCode::kUnavailable && options_.channel != nullptr &&
                                   options_.channel->GetState(false) != GRPC_CHANNEL_READY;
    FailOwned(s, still_unreachable
                     ? s->last_error
                     : DeadlineExceeded(std::to_string(s->owned) + " task(s) not finished before the timeout"));
  } else {
    FailOwned(s, FromGrpc(s->status));
  }
  Remove(s);
}

std::vector<std::string> ResultWatcher::OwnedIds(const Stream* s) const {
  std::vector<std::string> ids;
  ids.reserve(s->owned);
  for (const auto& id : s->ids) {
    auto it = owner_.find(id);
    if (it != owner_.end() && it->second == s) ids.push_back(id);
  }
  return ids;
}

void ResultWatcher::FailOwned(Stream* s, const Status& status) {
  std::vector<std::string> ids = OwnedIds(s);
  for (const auto& id : ids) owner_.erase(id);
  s->owned = 0;
  if (!cancelled_ && !ids.empty()) on_failed_(std::move(ids), status);
}

void ResultWatcher::Cancel(Stream* s) {
  if (s->cancelled) return;
  s->cancelled = true;
  if (s->state == Stream::State::kBackoff) {
    s->alarm->Cancel();
  } else {
    s->ctx->TryCancel();
  }
}

void ResultWatcher::CancelAll() {
  cancelled_ = true;
  for (const auto& [s, unused] : streams_) Cancel(s);
}

void ResultWatcher::Remove(Stream* s) {
  for (const auto& id : OwnedIds(s)) owner_.erase(id);
  streams_.erase(s);
}

bool ResultWatcher::DeadlinePassed() const {
  return options_.deadline != Clock::time_point::max() && Clock::now() >= options_.deadline;
}

}  // namespace loom::sdk_internal
