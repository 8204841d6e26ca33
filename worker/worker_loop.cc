#include "worker/worker_loop.h"

#include <google/protobuf/io/coded_stream.h>
#include <spdlog/spdlog.h>

#include <exception>
#include <string>
#include <utility>

namespace loom::worker {
namespace {

using google::protobuf::io::CodedOutputStream;

// Bytes a length-delimited field of `size` bytes adds to its parent: a one-byte tag (field
// numbers below 16) plus the length varint.
int64_t FieldBytes(int64_t size) {
  return 1 + static_cast<int64_t>(CodedOutputStream::VarintSize64(static_cast<uint64_t>(size))) + size;
}

// How many garbage frames are logged at warn level before the rest go to debug.
constexpr int64_t kGarbageWarnings = 10;

}  // namespace

v1::TaskResult RunTask(const KernelRegistry& registry, const v1::TaskSpec& task, const std::function<int64_t()>& now) {
  v1::TaskResult result;
  result.set_task_id(task.task_id());
  const int64_t started = now();
  Result<Value> out = [&]() -> Result<Value> {
    try {
      return registry.Run(task);
    } catch (const std::exception& e) {
      return Internal(std::string("kernel threw: ") + e.what());
    } catch (...) {
      return Internal("kernel threw an exception that is not a std::exception");
    }
  }();
  const int64_t finished = now();
  if (out.ok()) {
    result.set_ok(true);
    *result.mutable_value() = std::move(out).value();
  } else {
    result.set_ok(false);
    result.set_error(out.status().message());
  }
  auto* ts = result.add_timestamps();
  ts->set_stage("worker_started");
  ts->set_unix_nanos(started);
  ts = result.add_timestamps();
  ts->set_stage("kernel_finished");
  ts->set_unix_nanos(finished);
  return result;
}

WorkerLoop::WorkerLoop(const KernelRegistry& registry, WorkerTransport& transport, WorkerLoopOptions options)
    : registry_(registry), transport_(transport), options_(std::move(options)) {
  LOOM_CHECK(options_.now != nullptr);
  LOOM_CHECK(options_.should_stop != nullptr);
  LOOM_CHECK(options_.max_batch_results > 0);
}

Status WorkerLoop::Run(const v1::WorkerHello& hello) {
  v1::WorkerEnvelope envelope;
  *envelope.mutable_hello() = hello;
  Status s = SendWithRetry(envelope);
  if (s.ok()) s = Serve();
  // A send cut short by the stop signal is part of stopping, not a failure.
  if (!s.ok() && !options_.should_stop()) return s;
  stats_.tasks_dropped = static_cast<int64_t>(queue_.size());
  if (!queue_.empty()) spdlog::info("stopping with {} queued task(s) not run", queue_.size());
  // Best effort, one attempt: the loop is stopping.
  s = Flush();
  if (!s.ok())
    spdlog::warn("could not send the last {} result(s): {}", pending_.results().results_size(), s.ToString());
  return Status::Ok();
}

Status WorkerLoop::Serve() {
  last_flush_nanos_ = options_.now();
  while (!options_.should_stop()) {
    if (queue_.empty()) {
      // Every result is out before the worker sits idle (the loop below flushes on an empty queue).
      LOOM_RETURN_IF_ERROR(Flush());
      LOOM_RETURN_IF_ERROR(Receive(options_.idle_wait));
      // Going from idle to busy starts a fresh flush interval: the 1 ms is about reporting
      // progress within a burst of work, not about how long the worker was idle before it.
      if (!queue_.empty()) last_flush_nanos_ = options_.now();
      continue;
    }
    v1::TaskSpec task = std::move(queue_.front());
    queue_.pop_front();
    spdlog::debug("task {} kernel {}", task.task_id(), task.kernel());
    // The slot names the task only while its kernel runs: a death after the kernel returned,
    // with the result still in this process, is not the task's doing (it runs again elsewhere).
    if (options_.running_slot != nullptr) options_.running_slot->Begin(task.task_id());
    v1::TaskResult result = RunTask(registry_, task, options_.now);
    if (options_.running_slot != nullptr) options_.running_slot->End();
    LOOM_RETURN_IF_ERROR(AddResult(std::move(result)));
    ++stats_.tasks_run;
    // Tasks that came meanwhile are taken once these run out (an empty socket costs a system
    // call to find so; the endpoint sends a worker at most its prefetch, so they wait in the
    // socket no longer than they would here).
    if (queue_.empty()) LOOM_RETURN_IF_ERROR(Receive(std::chrono::milliseconds(0)));
    // The clock is the wall clock (its readings are the timestamps); if it steps backwards,
    // flush rather than hold results until it has caught up.
    const int64_t since_flush = options_.now() - last_flush_nanos_;
    if (queue_.empty() || pending_.results().results_size() >= options_.max_batch_results ||
        since_flush >= options_.flush_interval_nanos || since_flush < 0) {
      LOOM_RETURN_IF_ERROR(Flush());
    }
  }
  return Status::Ok();
}

Status WorkerLoop::Receive(std::chrono::milliseconds timeout) {
  while (true) {
    auto got = transport_.Receive(timeout);
    timeout = std::chrono::milliseconds(0);  // only the first message is waited for
    if (!got.ok()) {
      if (got.status().code() != StatusCode::kDataLoss) return got.status();
      ++stats_.garbage_frames;
      if (stats_.garbage_frames <= kGarbageWarnings) {
        spdlog::warn("dropped a frame that is not a WorkerEnvelope ({} so far): {}", stats_.garbage_frames,
                     got.status().message());
      } else {
        spdlog::debug("dropped a garbage frame ({} so far)", stats_.garbage_frames);
      }
      continue;
    }
    if (!got->has_value()) return Status::Ok();
    Accept(std::move(**got));
  }
}

void WorkerLoop::Accept(v1::WorkerEnvelope envelope) {
  if (!envelope.has_tasks()) {
    ++stats_.ignored_messages;
    spdlog::warn("ignored a WorkerEnvelope with body case {}; a worker only accepts tasks",
                 static_cast<int>(envelope.body_case()));
    return;
  }
  auto* tasks = envelope.mutable_tasks()->mutable_tasks();
  for (auto& task : *tasks) queue_.push_back(std::move(task));
}

Status WorkerLoop::AddResult(v1::TaskResult result) {
  // The envelope adds its own field header around the batch; reserve room for the largest one.
  constexpr int64_t kEnvelopeOverhead = 1 + 10;
  const int64_t limit = options_.max_message_bytes - kEnvelopeOverhead;
  int64_t bytes = FieldBytes(static_cast<int64_t>(result.ByteSizeLong()));
  if (bytes > limit) {
    const int64_t value_bytes = static_cast<int64_t>(result.value().ByteSizeLong());
    result.clear_value();
    result.set_ok(false);
    result.set_error("the result is " + std::to_string(value_bytes) + " bytes, more than the " +
                     std::to_string(options_.max_message_bytes) +
                     "-byte message limit between worker and endpoint (loom-worker --max-message-bytes); "
                     "return a smaller value or raise the limit");
    bytes = FieldBytes(static_cast<int64_t>(result.ByteSizeLong()));
  }
  if (pending_bytes_ + bytes > limit) LOOM_RETURN_IF_ERROR(Flush());
  *pending_.mutable_results()->add_results() = std::move(result);
  pending_bytes_ += bytes;
  return Status::Ok();
}

Status WorkerLoop::Flush() {
  last_flush_nanos_ = options_.now();
  const int n = pending_.results().results_size();
  if (n == 0) return Status::Ok();
  // On failure the results stay pending, so the flush on the way out tries them once more.
  LOOM_RETURN_IF_ERROR(SendWithRetry(pending_));
  pending_.Clear();
  pending_bytes_ = 0;
  stats_.results_sent += n;
  ++stats_.batches_sent;
  return Status::Ok();
}

Status WorkerLoop::SendWithRetry(const v1::WorkerEnvelope& envelope) {
  while (true) {
    Status s = transport_.Send(envelope);
    if (s.ok() || s.code() != StatusCode::kUnavailable || options_.should_stop()) return s;
  }
}

}  // namespace loom::worker
