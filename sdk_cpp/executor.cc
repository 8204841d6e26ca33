#include "loom/executor.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/task_state.h"
#include "sdk_cpp/internal.h"
#include "sdk_cpp/result_watcher.h"

namespace loom {

using sdk_internal::CqOp;
using sdk_internal::FromGrpc;

namespace {

std::string DescribeTaskError(const std::string& task_id, v1::TaskState state, const std::string& error,
                              StatusCode code) {
  if (code != StatusCode::kOk) {
    if (task_id.empty()) return std::string("could not submit the task: ") + StatusCodeName(code) + ": " + error;
    return "lost track of task " + task_id + ": " + StatusCodeName(code) + ": " + error;
  }
  return "task " + task_id + " " + TaskStateName(state) + ": " + error;
}

std::exception_ptr MakeTaskError(const std::string& task_id, v1::TaskState state, const std::string& error,
                                 StatusCode code, v1::FailureKind failure = v1::FAILURE_KIND_UNSPECIFIED) {
  return std::make_exception_ptr(TaskError(task_id, state, error, code, failure));
}

}  // namespace

TaskError::TaskError(std::string task_id, v1::TaskState state, std::string error, StatusCode code,
                     v1::FailureKind failure)
    : std::runtime_error(DescribeTaskError(task_id, state, error, code)),
      task_id_(std::move(task_id)),
      state_(state),
      error_(std::move(error)),
      code_(code),
      failure_(failure) {}

// Everything gRPC happens on thread_, which drives cq_: SubmitBatch calls, their retry alarms,
// the ResultWatcher and the promises. Submit() only touches the queue under mu_ and wakes
// thread_ with an alarm.
class Executor::Impl {
 public:
  Impl(Client& client, const std::string& endpoint, const std::string& function)
      : client_(client),
        endpoint_(endpoint),
        function_(function),
        budget_(sdk_internal::RequestBudget(client.options().max_message_bytes)),
        watcher_(
            *client.stub_, cq_, WatchOptionsFor(client.options()), [this](v1::TaskRecord& r) { OnRecord(r); },
            [this](std::vector<std::string> ids, const Status& s) { OnWatchFailed(ids, s); }) {
    thread_ = std::thread([this] { Run(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      WakeLocked();
    }
    thread_.join();
  }

  std::future<Value> Submit(std::vector<Value> args, const Kwargs& kwargs, const SubmitOptions& options) {
    Pending p{MakeSubmitRequest(endpoint_, function_, std::move(args), kwargs, options), {}, 0, 0};
    std::future<Value> future = p.promise.get_future();
    p.bytes = sdk_internal::RepeatedFieldBytes(p.request.ByteSizeLong());
    if (p.bytes > budget_) {
      p.promise.set_exception(MakeTaskError("", v1::TASK_STATE_UNSPECIFIED,
                                            "the task's arguments take " + std::to_string(p.bytes) +
                                                " bytes, over the limit of " + std::to_string(budget_) +
                                                " bytes; raise ClientOptions::max_message_bytes",
                                            StatusCode::kInvalidArgument));
      return future;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      p.promise.set_exception(
          MakeTaskError("", v1::TASK_STATE_UNSPECIFIED, "the executor is shutting down", StatusCode::kCancelled));
      return future;
    }
    incoming_.push_back(std::move(p));
    WakeLocked();
    return future;
  }

 private:
  struct Pending {
    v1::SubmitRequest request;
    std::promise<Value> promise;
    size_t bytes;
    int retries;  // how often it was sent again after UNAVAILABLE or DEADLINE_EXCEEDED
  };

  // One SubmitBatch call in flight.
  struct SubmitCall : CqOp {
    explicit SubmitCall(Impl* impl) : impl_(impl) {}
    void OnEvent(bool /*ok*/) override { impl_->OnSubmitted(this); }
    Impl* const impl_;
    std::list<std::unique_ptr<SubmitCall>>::iterator self;
    // tasks[i].request is moved into request.tasks(i) while the call runs: a retry moves it back.
    std::vector<Pending> tasks;
    v1::SubmitBatchRequest request;
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientAsyncResponseReaderInterface<v1::SubmitBatchResponse>> reader;
    v1::SubmitBatchResponse response;
    grpc::Status status;
  };

  // Keyed tasks of a failed SubmitBatch call, waiting out the backoff before they are queued
  // again. The alarm fires with ok=false when cancelled by the destructor.
  struct RetryOp : CqOp {
    explicit RetryOp(Impl* impl) : impl_(impl) {}
    void OnEvent(bool ok) override { impl_->OnRetryDue(this, ok); }
    Impl* const impl_;
    std::list<std::unique_ptr<RetryOp>>::iterator self;
    std::vector<Pending> tasks;
    grpc::Alarm alarm;
  };

  struct WakeOp : CqOp {
    explicit WakeOp(Impl* impl) : impl_(impl) {}
    void OnEvent(bool /*ok*/) override { impl_->OnWake(); }
    Impl* const impl_;
  };

  static sdk_internal::WatchOptions WatchOptionsFor(const ClientOptions& options) {
    sdk_internal::WatchOptions w;
    w.max_ids_per_stream = options.max_batch;
    w.max_request_bytes = sdk_internal::RequestBudget(options.max_message_bytes);
    w.max_streams = kMaxStreams;
    return w;
  }

  // REQUIRES: mu_ held.
  void WakeLocked() {
    if (wake_armed_) return;
    wake_armed_ = true;
    // A fresh alarm each time: the previous one has delivered its event (wake_armed_ was reset
    // while handling it) and may be destroyed.
    wake_alarm_ = std::make_unique<grpc::Alarm>();
    wake_alarm_->Set(&cq_, gpr_now(GPR_CLOCK_MONOTONIC), &wake_op_);
  }

  void Run() {
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
      static_cast<CqOp*>(tag)->OnEvent(ok);
      if (shutting_down_ && !cq_shut_ && watcher_.idle() && submits_.empty() && retries_.empty()) {
        for (auto& [id, promises] : promises_) {
          for (auto& promise : promises) {
            promise.set_exception(MakeTaskError(id, v1::TASK_STATE_UNSPECIFIED,
                                                "the executor was destroyed before the task finished",
                                                StatusCode::kCancelled));
          }
        }
        promises_.clear();
        cq_shut_ = true;
        cq_.Shutdown();
      }
    }
  }

  void OnWake() {
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wake_armed_ = false;
      stopping = stopping_;
      for (auto& p : incoming_) queued_.push_back(std::move(p));
      incoming_.clear();
    }
    if (stopping && !shutting_down_) {
      shutting_down_ = true;
      for (auto& p : queued_) {
        p.promise.set_exception(MakeTaskError("", v1::TASK_STATE_UNSPECIFIED,
                                              "the executor was destroyed before the task was submitted",
                                              StatusCode::kCancelled));
      }
      queued_.clear();
      for (auto& call : submits_) call->ctx.TryCancel();
      for (auto& retry : retries_) retry->alarm.Cancel();
      watcher_.CancelAll();
      return;
    }
    StartSubmits();
  }

  void StartSubmits() {
    while (!shutting_down_ && !queued_.empty() && submits_.size() < kMaxSubmitsInFlight) {
      submits_.push_back(std::make_unique<SubmitCall>(this));
      SubmitCall* call = submits_.back().get();
      call->self = std::prev(submits_.end());
      size_t bytes = 0;
      while (!queued_.empty() && call->tasks.size() < std::max<size_t>(client_.options().max_batch, 1) &&
             (call->tasks.empty() || bytes + queued_.front().bytes <= budget_)) {
        Pending& p = queued_.front();
        bytes += p.bytes;
        *call->request.add_tasks() = std::move(p.request);
        call->tasks.push_back(std::move(p));
        queued_.pop_front();
      }
      call->ctx.set_deadline(std::chrono::system_clock::now() + client_.options().rpc_timeout);
      call->reader = client_.stub_->PrepareAsyncSubmitBatch(&call->ctx, call->request, &cq_);
      call->reader->StartCall();
      call->reader->Finish(&call->response, &call->status, call);
    }
  }

  void OnSubmitted(SubmitCall* call) {
    std::unique_ptr<SubmitCall> owned = std::move(*call->self);
    submits_.erase(call->self);
    Status st = FromGrpc(call->status);
    if (st.ok() && static_cast<size_t>(call->response.task_ids_size()) != call->tasks.size()) {
      st = Internal("the service answered a batch of " + std::to_string(call->tasks.size()) + " tasks with " +
                    std::to_string(call->response.task_ids_size()) + " ids");
    }
    if (!st.ok()) {
      // Only a task with an idempotency key may be sent again: the call may have created the
      // tasks before it failed.
      const bool retryable = !shutting_down_ && sdk_internal::IsRetryableSubmitError(st.code());
      std::vector<Pending> again;
      int retry = 0;
      for (size_t i = 0; i < call->tasks.size(); ++i) {
        Pending& p = call->tasks[i];
        p.request = std::move(*call->request.mutable_tasks(static_cast<int>(i)));
        if (retryable && !p.request.idempotency_key().empty() && p.retries < client_.options().submit_retries) {
          retry = std::max(retry, ++p.retries);
          again.push_back(std::move(p));
        } else {
          p.promise.set_exception(MakeTaskError("", v1::TASK_STATE_UNSPECIFIED, st.message(), st.code()));
        }
      }
      if (!again.empty()) ScheduleRetry(std::move(again), sdk_internal::JitteredSubmitRetryBackoff(retry));
    } else {
      std::vector<std::string> ids(call->response.task_ids().begin(), call->response.task_ids().end());
      for (size_t i = 0; i < ids.size(); ++i) promises_[ids[i]].push_back(std::move(call->tasks[i].promise));
      watcher_.Watch(ids);
    }
    StartSubmits();
  }

  void ScheduleRetry(std::vector<Pending> tasks, std::chrono::milliseconds backoff) {
    retries_.push_back(std::make_unique<RetryOp>(this));
    RetryOp* op = retries_.back().get();
    op->self = std::prev(retries_.end());
    op->tasks = std::move(tasks);
    op->alarm.Set(&cq_, std::chrono::system_clock::now() + backoff, op);
  }

  void OnRetryDue(RetryOp* op, bool ok) {
    std::unique_ptr<RetryOp> owned = std::move(*op->self);
    retries_.erase(op->self);
    if (!ok || shutting_down_) {
      for (auto& p : op->tasks) {
        p.promise.set_exception(MakeTaskError("", v1::TASK_STATE_UNSPECIFIED,
                                              "the executor was destroyed before the task was submitted",
                                              StatusCode::kCancelled));
      }
      return;
    }
    // Ahead of what queued meanwhile: these were submitted first.
    queued_.insert(queued_.begin(), std::make_move_iterator(op->tasks.begin()),
                   std::make_move_iterator(op->tasks.end()));
    StartSubmits();
  }

  void OnRecord(v1::TaskRecord& record) {
    auto it = promises_.find(record.id());
    if (it == promises_.end()) return;
    std::vector<std::promise<Value>>& promises = it->second;
    for (size_t i = 0; i < promises.size(); ++i) {
      std::promise<Value>& promise = promises[i];
      if (record.state() != v1::TASK_STATE_SUCCESS) {
        promise.set_exception(
            MakeTaskError(record.id(), record.state(), record.error(), StatusCode::kOk, record.failure()));
      } else if (i + 1 == promises.size()) {
        promise.set_value(std::move(*record.mutable_result()));
      } else {
        promise.set_value(record.result());  // several submits share the task (one idempotency key)
      }
    }
    promises_.erase(it);
  }

  void OnWatchFailed(const std::vector<std::string>& ids, const Status& status) {
    for (const auto& id : ids) {
      auto it = promises_.find(id);
      if (it == promises_.end()) continue;
      for (auto& promise : it->second) {
        promise.set_exception(MakeTaskError(id, v1::TASK_STATE_UNSPECIFIED, status.message(), status.code()));
      }
      promises_.erase(it);
    }
  }

  Client& client_;
  const std::string endpoint_;
  const std::string function_;
  const size_t budget_;  // bytes of tasks per SubmitBatch call
  grpc::CompletionQueue cq_;

  std::mutex mu_;
  std::vector<Pending> incoming_;            // GUARDED_BY(mu_)
  bool stopping_ = false;                    // GUARDED_BY(mu_)
  bool wake_armed_ = false;                  // GUARDED_BY(mu_)
  std::unique_ptr<grpc::Alarm> wake_alarm_;  // GUARDED_BY(mu_)
  WakeOp wake_op_{this};

  // Only thread_ touches these.
  std::deque<Pending> queued_;
  std::list<std::unique_ptr<SubmitCall>> submits_;
  std::list<std::unique_ptr<RetryOp>> retries_;
  // Usually one promise per id; more when submits with the same idempotency key got the same id.
  std::unordered_map<std::string, std::vector<std::promise<Value>>> promises_;
  sdk_internal::ResultWatcher watcher_;
  bool shutting_down_ = false;
  bool cq_shut_ = false;

  std::thread thread_;
};

Executor::Executor(Client& client, std::string endpoint, std::string function)
    : endpoint_(std::move(endpoint)),
      function_(std::move(function)),
      impl_(std::make_unique<Impl>(client, endpoint_, function_)) {}

Executor::~Executor() = default;

std::future<Value> Executor::Submit(std::vector<Value> args, const Kwargs& kwargs, const SubmitOptions& options) {
  return impl_->Submit(std::move(args), kwargs, options);
}

}  // namespace loom
