// Durable state of the service: functions, endpoints, tasks and per-endpoint queues.
// Implementations: RedisTaskStore (production) and InMemoryTaskStore (unit tests); one contract
// test suite (tests/unit/service/task_store_contract_test.cc) runs against both.
//
// Every method that changes several records does so atomically. Task transitions follow
// common/task_state.h. All implementations are thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"

namespace loom::service {

struct NewTask {
  std::string id;
  std::string owner;
  std::string function;
  std::string endpoint;
  v1::TaskSpec spec;  // what the endpoint needs to run it; spec.task_id == id
  int64_t received_ns = 0;  // when the service received the submit
  // Dispatch at once (state dispatched, in flight on the endpoint, no queue) if the endpoint's
  // queue is empty at that moment; the caller holds credit for it.
  bool direct = false;
};

// A task's own timestamps, e.g. {"worker_started", 1700000000000000000}.
using Stamp = v1::Timestamp;

class TaskStore {
 public:
  virtual ~TaskStore() = default;

  // Functions. PutFunction returns true if it created the function, false if an identical one
  // (same kernel, config, description) already exists; AlreadyExists if a different one does.
  virtual Result<bool> PutFunction(const v1::Function& f) = 0;
  virtual Result<std::optional<v1::Function>> GetFunction(const std::string& name) = 0;
  virtual Result<std::vector<v1::Function>> ListFunctions() = 0;

  // Endpoints: PutEndpoint creates or replaces the record.
  virtual Status PutEndpoint(const v1::EndpointRecord& e) = 0;
  virtual Result<std::optional<v1::EndpointRecord>> GetEndpoint(const std::string& id) = 0;
  virtual Result<std::vector<v1::EndpointRecord>> ListEndpoints() = 0;

  // Records every task (state waiting-for-endpoint, stamped "received" at its `received_ns` and
  // "waiting-for-endpoint" at `now_ns`) and appends it to its endpoint's queue, all or nothing.
  // A task marked `direct` whose endpoint's queue is empty is dispatched instead (also stamped
  // "dispatched"); `dispatched`, when given, says which were (one entry per task).
  // With max_queue_depth > 0, a batch that would take an endpoint's queue past it is refused
  // whole with kResourceExhausted naming the endpoint and the limit.
  virtual Status SubmitTasks(const std::vector<NewTask>& tasks, int64_t now_ns,
                             std::vector<bool>* dispatched = nullptr, int64_t max_queue_depth = 0) = 0;

  // Takes up to `max` waiting tasks from the head of the endpoint's queue, marks them
  // dispatched and in flight on the endpoint, and returns their specs in queue order. Tasks
  // cancelled while queued are skipped.
  virtual Result<std::vector<v1::TaskSpec>> LeaseTasks(const std::string& endpoint, int max, int64_t now_ns) = 0;

  // Marks dispatched tasks running (a no-op for tasks in any other state).
  virtual Status MarkRunning(const std::vector<v1::TaskStarted>& started) = 0;

  // Commits results of tasks dispatched or running on `endpoint`: state success or failed,
  // value or error, the result's own timestamps plus the terminal one at `now_ns`. A result
  // for a task that is not in flight (already terminal, cancelled, unknown) is ignored.
  // Returns the committed records (without args).
  virtual Result<std::vector<v1::TaskRecord>> CompleteTasks(const std::string& endpoint,
                                                            const std::vector<v1::TaskResult>& results,
                                                            int64_t now_ns) = 0;

  // One entry per id, nullopt for unknown ids.
  virtual Result<std::vector<std::optional<v1::TaskRecord>>> GetTasks(const std::vector<std::string>& ids,
                                                                      bool include_args) = 0;

  // Cancels a task that is not terminal (removing it from its queue or in-flight set) and
  // returns its record; a terminal task is returned unchanged; nullopt for an unknown id.
  virtual Result<std::optional<v1::TaskRecord>> CancelTask(const std::string& id, int64_t now_ns) = 0;

  // Puts the endpoint's in-flight tasks, except those in `keep`, back at the head of its
  // queue in their dispatch order (state waiting-for-endpoint, stamped "requeued").
  // Returns how many were requeued.
  virtual Result<int64_t> RequeueInFlight(const std::string& endpoint, const std::vector<std::string>& keep,
                                          int64_t now_ns) = 0;

  virtual Result<int64_t> QueueDepth(const std::string& endpoint) = 0;
  virtual Result<int64_t> InFlightCount(const std::string& endpoint) = 0;
};

}  // namespace loom::service
