// loom::Executor: runs one registered function on one endpoint and hands back a std::future per
// call, for programs that keep many tasks in flight.
//
//   loom::Executor add(client, "my-endpoint", "my-add");
//   std::future<loom::Value> f = add.Submit({loom::IntValue(1), loom::IntValue(2)});
//   try { loom::Value v = f.get(); } catch (const loom::TaskError& e) { e.task_id(); e.error(); }
//
// How it works: Submit() queues the request and returns at once. One background thread sends
// the queue as SubmitBatch calls (a few in flight; whatever queued meanwhile rides in the next
// call, so batches grow with load and a lone task goes out at once), then follows the new ids
// on a fresh StreamResults stream of their own (it never waits for older streams to end).
// Streams are capped (kMaxStreams): past the cap the smallest stream is replaced by one that
// follows its ids and the new ones. Streams broken by UNAVAILABLE (a service restart) are
// resubscribed with backoff for the ids still running. A SubmitBatch call that fails with
// UNAVAILABLE or DEADLINE_EXCEEDED is retried for its tasks that carry an idempotency key, as
// Client::Submit does (ClientOptions::submit_retries, the same backoff); its other tasks fail.
//
// Thread-safe: Submit may be called from any thread. Destroying the Executor abandons what is
// still running: it cancels its calls and streams (not the tasks on the service), and every
// future not resolved by then throws TaskError. It never waits for tasks.
#pragma once

#include <cstddef>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/value.h"
#include "loom.pb.h"
#include "loom/client.h"

namespace loom {

// Why a future from Executor::Submit holds no value: the task failed or was cancelled
// (code() == kOk, state() FAILED or CANCELLED, error() is the task's error, which lists the
// attempts that ended in a system failure, and failure() says why a FAILED task failed), or Loom
// could not submit it or follow it to its end (code() says why; state() is UNSPECIFIED).
class TaskError : public std::runtime_error {
 public:
  TaskError(std::string task_id, v1::TaskState state, std::string error, StatusCode code = StatusCode::kOk,
            v1::FailureKind failure = v1::FAILURE_KIND_UNSPECIFIED);

  // Empty when the task was never submitted.
  const std::string& task_id() const noexcept { return task_id_; }
  v1::TaskState state() const noexcept { return state_; }
  const std::string& error() const noexcept { return error_; }
  StatusCode code() const noexcept { return code_; }
  // E.g. FAILURE_KIND_TIMEOUT, FAILURE_KIND_ATTEMPTS_EXHAUSTED; UNSPECIFIED unless FAILED.
  v1::FailureKind failure() const noexcept { return failure_; }

 private:
  std::string task_id_;
  v1::TaskState state_;
  std::string error_;
  StatusCode code_;
  v1::FailureKind failure_;
};

class Executor {
 public:
  // The most StreamResults streams one Executor keeps open.
  static constexpr size_t kMaxStreams = 32;
  // The most SubmitBatch calls one Executor has in flight.
  static constexpr size_t kMaxSubmitsInFlight = 4;

  // REQUIRES: `client` outlives the Executor.
  Executor(Client& client, std::string endpoint, std::string function);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Submits function(args, kwargs) with `options` (see SubmitOptions). The future yields the
  // task's result value, or throws TaskError (see above).
  std::future<Value> Submit(std::vector<Value> args, const Kwargs& kwargs = {}, const SubmitOptions& options = {});

  const std::string& endpoint() const { return endpoint_; }
  const std::string& function() const { return function_; }

 private:
  class Impl;
  std::string endpoint_;
  std::string function_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace loom
