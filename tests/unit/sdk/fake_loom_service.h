// A fake Loom service for the SDK's tests: the gRPC API over in-memory maps, served on
// 127.0.0.1 by FakeLoomServer. Tasks stay where they are until the test completes, fails or
// cancels them (or an on_submit hook does), and the state survives a server restart, so tests
// can cut streams and check that the client resumes. Like the service, it answers a submit
// whose idempotency key it has seen with the earlier task's id, deletes only finished tasks,
// and fills a record's max_attempts and timeout_ms from the submit, else the function, else
// (max_attempts only) kDefaultMaxAttempts. It does not run attempts: tests set attempts,
// failure and attempt_history from an on_submit hook.
//
// Thread-safe: the test thread and the server's handler threads share FakeLoomState.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/value.h"
#include "loom.grpc.pb.h"

namespace loom::sdk_test {

class FakeLoomState {
 public:
  static constexpr int kDefaultMaxAttempts = 3;

  // Called with the state's lock held for every new task; may set a terminal state, a result
  // or an error (the task then counts as completed at once).
  void set_on_submit(std::function<void(v1::TaskRecord&)> hook);
  // Makes WaitResults and StreamResults send every record twice, to check that clients deliver each id once.
  void set_duplicate_results(bool on);
  // Makes the next `n` Submit or SubmitBatch calls fail with `code`. With after_commit, each
  // creates its tasks first and then fails, as when the reply is lost after the service
  // committed: only an idempotency key keeps a retry from creating them again.
  void FailNextSubmits(int n, grpc::StatusCode code = grpc::StatusCode::UNAVAILABLE, bool after_commit = false);

  void AddFunction(const std::string& name, const std::string& kernel);
  // Terminal transitions; each appends the id to the completion log that WaitResults follows.
  void Complete(const std::string& id, const Value& result);
  void Fail(const std::string& id, const std::string& error);

  // Waits up to `timeout` for pred() (called with the lock held) to hold.
  bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Inspection, each under the lock.
  std::vector<std::string> task_ids() const;  // in submission order, deleted ones left out
  v1::TaskRecord task(const std::string& id) const;
  bool has_task(const std::string& id) const;
  int submit_calls() const;  // Submit and SubmitBatch calls received, failed ones included
  std::vector<size_t> submit_batch_sizes() const;
  std::vector<std::vector<std::string>> wait_requests() const;  // ids of each WaitResults or StreamResults call
  int active_waits() const;

  // For predicates passed to WaitFor (lock already held).
  size_t task_count_locked() const { return order_.size(); }
  std::string task_ids_locked_back() const { return order_.empty() ? "" : order_.back(); }
  size_t wait_calls_locked() const { return wait_requests_.size(); }
  int active_waits_locked() const { return active_waits_; }
  int submit_calls_locked() const { return submit_calls_; }
  const std::vector<std::vector<std::string>>& wait_requests_locked() const { return wait_requests_; }

 private:
  friend class FakeLoomApi;
  void CompleteLocked(v1::TaskRecord& r, v1::TaskState state);
  void NotifyAll();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, v1::Function> functions_;
  std::map<std::string, v1::EndpointRecord> endpoints_;
  std::map<std::string, v1::TaskRecord> tasks_;
  std::map<std::string, std::string> keys_;  // idempotency key -> task id
  std::vector<std::string> order_;           // task ids in submission order
  std::vector<std::string> completions_;     // task ids in completion order
  std::vector<size_t> submit_batch_sizes_;
  std::vector<std::vector<std::string>> wait_requests_;
  int active_waits_ = 0;
  int next_id_ = 1;
  int submit_calls_ = 0;
  int failing_submits_ = 0;
  grpc::StatusCode submit_failure_ = grpc::StatusCode::UNAVAILABLE;
  bool fail_after_commit_ = false;
  bool duplicate_results_ = false;
  std::function<void(v1::TaskRecord&)> on_submit_;
};

// The gRPC service over a FakeLoomState.
class FakeLoomApi final : public v1::Loom::Service {
 public:
  explicit FakeLoomApi(FakeLoomState& state) : state_(state) {}
  // Makes open WaitResults and StreamResults calls end with UNAVAILABLE, as a service that shuts down cleanly does.
  void BeginShutdown();

  grpc::Status RegisterFunction(grpc::ServerContext*, const v1::RegisterFunctionRequest*,
                                v1::RegisterFunctionResponse*) override;
  grpc::Status GetFunction(grpc::ServerContext*, const v1::GetFunctionRequest*, v1::Function*) override;
  grpc::Status ListFunctions(grpc::ServerContext*, const v1::ListFunctionsRequest*,
                             v1::ListFunctionsResponse*) override;
  grpc::Status CreateEndpoint(grpc::ServerContext*, const v1::CreateEndpointRequest*, v1::EndpointRecord*) override;
  grpc::Status ListEndpoints(grpc::ServerContext*, const v1::ListEndpointsRequest*,
                             v1::ListEndpointsResponse*) override;
  grpc::Status GetEndpoint(grpc::ServerContext*, const v1::GetEndpointRequest*, v1::EndpointRecord*) override;
  grpc::Status Submit(grpc::ServerContext*, const v1::SubmitRequest*, v1::SubmitResponse*) override;
  grpc::Status SubmitBatch(grpc::ServerContext*, const v1::SubmitBatchRequest*, v1::SubmitBatchResponse*) override;
  grpc::Status GetTasks(grpc::ServerContext*, const v1::GetTasksRequest*, v1::GetTasksResponse*) override;
  grpc::Status WaitResults(grpc::ServerContext*, const v1::WaitResultsRequest*,
                           grpc::ServerWriter<v1::TaskRecord>*) override;
  grpc::Status StreamResults(grpc::ServerContext*, const v1::WaitResultsRequest*,
                             grpc::ServerWriter<v1::TaskRecords>*) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest*, v1::CancelResponse*) override;
  grpc::Status DeleteTasks(grpc::ServerContext*, const v1::DeleteTasksRequest*, v1::DeleteTasksResponse*) override;

 private:
  // Submit and SubmitBatch: adds the tasks in order (stopping at the first error), or fails as
  // FailNextSubmits asked.
  grpc::Status AddTasks(const std::vector<const v1::SubmitRequest*>& tasks, std::vector<std::string>* ids, bool batch);
  // WaitResults and StreamResults: follows the completion log, handing `write` what finished
  // since its last call.
  grpc::Status Follow(grpc::ServerContext* ctx, const v1::WaitResultsRequest* request,
                      const std::function<bool(const std::vector<v1::TaskRecord>&)>& write);
  // REQUIRES: state_.mu_ held.
  grpc::Status AddTaskLocked(const v1::SubmitRequest& request, std::string* id);

  FakeLoomState& state_;
  std::atomic<bool> shutting_down_{false};
};

// A FakeLoomApi served on 127.0.0.1; Start(0) picks a free port, Start(port) reuses one.
class FakeLoomServer {
 public:
  explicit FakeLoomServer(FakeLoomState& state) : state_(state) {}
  ~FakeLoomServer() { Stop(); }

  // Returns the port, or 0 if it could not listen.
  int Start(int port = 0);
  // graceful: open streams end with UNAVAILABLE first; otherwise gRPC cuts them.
  void Stop(bool graceful = true);
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  FakeLoomState& state_;
  std::unique_ptr<FakeLoomApi> api_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// An on_submit hook for tests: "add" computes a + b at once, "fail" fails with "boom", every
// other function stays pending.
void AutoComplete(v1::TaskRecord& r);

}  // namespace loom::sdk_test
