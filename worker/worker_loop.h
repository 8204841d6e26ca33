// The worker's main loop: receive task batches from the endpoint, run them one at a time in
// arrival order, and send their results back in batches. All I/O goes through WorkerTransport
// (ZmqWorkerTransport in production, a fake in unit tests), and time comes from an injected
// clock, so the batching rules can be tested without sockets or sleeps.
//
// Wire behaviour (endpoint <-> worker, one v1::WorkerEnvelope per ZeroMQ message):
//   - first, one WorkerEnvelope{hello}: pid, the kernels it can run, plugin load errors;
//   - the endpoint sends WorkerEnvelope{tasks: TaskBatch}, any number, any size;
//   - the worker answers with WorkerEnvelope{results: ResultBatch}, one TaskResult per task, in
//     the order the tasks arrived. Pending results are flushed when the worker has no task left
//     to run, when 256 are pending, when the next one would push the message past
//     max_message_bytes, or between two tasks once 1 ms has passed since the last flush (or
//     since the worker went from idle to busy), so a long batch reports progressively: a
//     finished result waits at most ~1 ms plus the run time of the task after it.
//   - frames that are not a WorkerEnvelope, and envelopes other than `tasks`, are counted,
//     logged and dropped.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>

#include "common/kernel_api.h"
#include "common/running_slot.h"
#include "common/status.h"
#include "loom.pb.h"

namespace loom::worker {

// 10 MiB of task payload plus 1 MiB for framing and the rest of the envelope.
inline constexpr int64_t kDefaultMaxMessageBytes = (10 + 1) * 1024 * 1024;

// The worker's connection to its endpoint. Implementations: ZmqWorkerTransport (production), the
// fakes in tests/unit/worker. Used from one thread; implementations need not be thread-safe.
class WorkerTransport {
 public:
  virtual ~WorkerTransport() = default;
  // Queues one envelope for sending. kUnavailable: not sent this time (the send timed out or a
  // signal interrupted it); the caller may retry. Other codes: the transport is broken.
  virtual Status Send(const v1::WorkerEnvelope& envelope) = 0;
  // Waits up to `timeout` (zero: does not wait) for one message. nullopt when none arrived in
  // time or a signal interrupted the wait; kDataLoss for a frame that is not a WorkerEnvelope
  // (the caller drops it and goes on); any other code: the transport is broken.
  virtual Result<std::optional<v1::WorkerEnvelope>> Receive(std::chrono::milliseconds timeout) = 0;
};

struct WorkerLoopOptions {
  int64_t flush_interval_nanos = 1'000'000;
  int max_batch_results = 256;
  // Upper bound on one serialized envelope. A single result larger than this is replaced by a
  // failed result saying so, rather than being sent and getting the connection dropped.
  int64_t max_message_bytes = kDefaultMaxMessageBytes;
  // How long an idle worker waits for a message before checking should_stop again. A stop
  // signal interrupts the wait (the transport returns no message on EINTR), so this only bounds
  // how late a stop is seen in the rare case that the signal lands just before the wait. Each
  // wake-up of an idle worker costs CPU: at 10 a second, a thousand idle workers on one host
  // (the scale benchmark) kept two cores busy doing nothing.
  std::chrono::milliseconds idle_wait{1000};
  // Wall-clock nanoseconds: the timestamps go to other processes.
  std::function<int64_t()> now;
  // Polled between tasks and while idle; true ends the loop after flushing pending results.
  std::function<bool()> should_stop;
  // Where the loop records the task whose kernel runs (Begin before, End as soon as it returns);
  // may be null. Borrowed: it must outlive the loop.
  RunningSlot* running_slot = nullptr;
};

struct WorkerLoopStats {
  int64_t tasks_run = 0;
  int64_t results_sent = 0;
  int64_t batches_sent = 0;
  int64_t garbage_frames = 0;    // frames that did not parse as a WorkerEnvelope
  int64_t ignored_messages = 0;  // envelopes that parsed but carried no tasks
  int64_t tasks_dropped = 0;     // still queued, never run, when the loop stopped
};

// Runs one task through `registry`: a TaskResult with ok, value or error (the status message, or
// "kernel threw: <what()>" for an exception), and the "worker_started" / "kernel_finished"
// timestamps taken from `now`. Never throws.
v1::TaskResult RunTask(const KernelRegistry& registry, const v1::TaskSpec& task, const std::function<int64_t()>& now);

// See the file comment. Not thread-safe: Run() owns the calling thread until it returns.
class WorkerLoop {
 public:
  // REQUIRES: options.now and options.should_stop are set. Borrows registry and transport.
  WorkerLoop(const KernelRegistry& registry, WorkerTransport& transport, WorkerLoopOptions options);

  // Sends `hello`, then runs tasks until should_stop() returns true (OK) or the transport fails
  // (its status). On a stop, results of tasks that ran are flushed before returning and tasks
  // still queued are dropped: the endpoint treats them as lost with the worker.
  Status Run(const v1::WorkerHello& hello);

  const WorkerLoopStats& stats() const { return stats_; }

 private:
  // The loop after the hello; returns OK when should_stop() says so.
  Status Serve();
  // Moves what has arrived into queue_, waiting up to `timeout` for the first message. Fails
  // only when the transport is broken; garbage frames are counted and dropped.
  Status Receive(std::chrono::milliseconds timeout);
  void Accept(v1::WorkerEnvelope envelope);
  Status AddResult(v1::TaskResult result);
  Status Flush();
  // Sends, retrying while the transport says kUnavailable, unless the loop is stopping.
  Status SendWithRetry(const v1::WorkerEnvelope& envelope);

  const KernelRegistry& registry_;
  WorkerTransport& transport_;
  const WorkerLoopOptions options_;
  std::deque<v1::TaskSpec> queue_;
  v1::WorkerEnvelope pending_;  // its `results` batch collects results until the next flush
  int64_t pending_bytes_ = 0;
  int64_t last_flush_nanos_ = 0;
  WorkerLoopStats stats_;
};

}  // namespace loom::worker
