// Durable state of the service: functions, endpoints, tasks and per-endpoint queues.
// Implementations: RedisTaskStore (production) and InMemoryTaskStore (unit tests); one contract
// test suite (tests/unit/service/task_store_contract_test.cc) runs against both.
//
// Every method that changes several records does so atomically. Task transitions follow
// common/task_state.h. All implementations are thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"
#include "service/routing.h"

namespace loom::service {

struct NewTask {
  std::string id;
  std::string owner;
  std::string function;
  std::string endpoint;
  v1::TaskSpec spec;            // what the endpoint needs to run it; spec.task_id == id
  int64_t received_ns = 0;      // when the service received the submit
  int max_attempts = 1;         // attempts on system failure (worker or endpoint lost), >= 1
  std::string idempotency_key;  // empty: none
  // Dispatch at once (state dispatched, in flight on the endpoint, no queue) if the endpoint's
  // queue is empty at that moment; the caller holds credit for it from the session with
  // lease epoch `lease_epoch`.
  bool direct = false;
  int64_t lease_epoch = 0;
  // When set (EncodeFailoverRoute: its kernel "name@version", function and device classes;
  // service/routing.h), the task may move to another endpoint of its endpoint's group that
  // admits that route, if its endpoint is lost.
  std::string failover_kernel;
};

struct SubmitOutcome {
  std::vector<bool> dispatched;           // per task: went out at once
  std::vector<std::string> existing_ids;  // per task: the earlier task with its idempotency key, or ""
};

struct StoreOptions {
  // Finished tasks are kept at least this long after finishing (0: forever), and deleted by
  // SweepExpired within ExpiryGranularitySeconds after.
  int64_t result_ttl_seconds = 7 * 24 * 3600;
  int max_worker_deaths = 3;  // a task that killed this many workers fails as poison
};

// Finished tasks expire in buckets of this many seconds: 1 % of the TTL, between 1 s and 60 s.
inline int64_t ExpiryGranularitySeconds(int64_t ttl_seconds) { return std::clamp<int64_t>(ttl_seconds / 100, 1, 60); }

struct SweepOutcome {
  int64_t deleted = 0;  // finished tasks taken off their expiry lists (deleted, unless they were already)
  bool more = false;    // more are due: call again
};

struct CompleteOutcome {
  std::vector<v1::TaskRecord> finished;  // tasks that reached a terminal state (without args)
  int64_t retried = 0;                   // failed attempts put back in the queue to run again
  int64_t rejected = 0;                  // results refused: stale lease, or task not in flight
};

// What happened to the tasks an endpoint session held when it was lost or replaced.
struct LostOutcome {
  int64_t lease_epoch = 0;  // RegisterSession: the new session's epoch
  int64_t requeued = 0;
  std::vector<v1::TaskRecord> finished;  // tasks that used up their attempts (failed)
};

// The access fields of an endpoint record (see TaskStore::PutEndpointAccess), and their overlay.
inline v1::EndpointRecord AccessOf(const v1::EndpointRecord& e) {
  v1::EndpointRecord a;
  a.set_id(e.id());
  a.set_owner(e.owner());
  *a.mutable_allowed_users() = e.allowed_users();
  *a.mutable_allowed_functions() = e.allowed_functions();
  a.set_curve_public_key(e.curve_public_key());
  return a;
}
inline void OverlayAccess(const v1::EndpointRecord& access, v1::EndpointRecord* e) {
  e->set_owner(access.owner());
  *e->mutable_allowed_users() = access.allowed_users();
  *e->mutable_allowed_functions() = access.allowed_functions();
  e->set_curve_public_key(access.curve_public_key());
}

// Where a function is stored: "owner/name" (names cannot hold '/').
inline std::string FunctionKey(const std::string& owner, const std::string& name) { return owner + "/" + name; }
inline std::string FunctionKey(const v1::Function& f) { return FunctionKey(f.owner(), f.name()); }

// A task's own timestamps, e.g. {"worker_started", 1700000000000000000}.
using Stamp = v1::Timestamp;

class TaskStore {
 public:
  virtual ~TaskStore() = default;

  // Functions, one namespace per owner: stored under FunctionKey (owner/name). PutFunction
  // returns true if it created the function, false if an identical one (same kernel, config,
  // description) already exists; AlreadyExists if a different one does.
  virtual Result<bool> PutFunction(const v1::Function& f) = 0;
  virtual Result<std::optional<v1::Function>> GetFunction(const std::string& key) = 0;
  virtual Result<std::vector<v1::Function>> ListFunctions() = 0;

  // Endpoints: PutEndpoint creates or replaces the record (what the endpoint reports: status,
  // kernels, devices, ...). Who owns it and may use it (owner, allowed_users,
  // allowed_functions, curve_public_key) is kept apart by PutEndpointAccess, so that the
  // broker's frequent record writes can never undo a change of access: reads overlay the access
  // fields, when set, onto the record.
  virtual Status PutEndpoint(const v1::EndpointRecord& e) = 0;
  virtual Status PutEndpointAccess(const v1::EndpointRecord& access) = 0;
  virtual Result<std::optional<v1::EndpointRecord>> GetEndpoint(const std::string& id) = 0;
  virtual Result<std::vector<v1::EndpointRecord>> ListEndpoints() = 0;

  // Records every task (state waiting-for-endpoint, stamped "received" at its `received_ns` and
  // "waiting-for-endpoint" at `now_ns`) and appends it to its endpoint's queue, all or nothing.
  // A task marked `direct` whose endpoint's queue is empty, and whose `lease_epoch` is that of
  // the endpoint's latest session (RegisterSession), is dispatched instead (also stamped
  // "dispatched"); `dispatched`, when given, says which were (one entry per task).
  // With max_queue_depth > 0, a batch that would take an endpoint's queue past it is refused
  // whole with kResourceExhausted naming the endpoint and the limit.
  // A task whose idempotency key (per owner) is already taken creates nothing: its entry in
  // `outcome->existing_ids` names the earlier task.
  virtual Status SubmitTasks(const std::vector<NewTask>& tasks, int64_t now_ns, SubmitOutcome* outcome = nullptr,
                             int64_t max_queue_depth = 0) = 0;

  // Takes up to `max` waiting tasks from the head of the endpoint's queue, marks them
  // dispatched and leased to the session with `lease_epoch` (one more attempt), and returns
  // their specs in queue order. Tasks cancelled while queued are skipped. Nothing is leased
  // when `lease_epoch` is not the endpoint's latest session's. A lease is not stamped: the
  // "dispatched" stamp of a leased task comes with its result (TaskResult.leased_unix_nanos,
  // which CompleteTasks records ahead of the result's stamps), so the Redis store need not
  // write the task again (`now_ns` is not used).
  virtual Result<std::vector<v1::TaskSpec>> LeaseTasks(const std::string& endpoint, int64_t lease_epoch, int max,
                                                       int64_t now_ns) = 0;

  // Marks dispatched tasks running (a no-op for tasks in any other state).
  virtual Status MarkRunning(const std::vector<v1::TaskStarted>& started) = 0;

  // Commits results from the endpoint session with `lease_epoch`, for tasks leased to that
  // session and dispatched or running: success, or failure with the result's FailureKind.
  // A worker-lost failure is retried (back to the tail of the queue) while the task has
  // attempts left and has killed fewer than max_worker_deaths workers; otherwise it fails
  // (attempts exhausted, or poison). Other failures are final. Every failed attempt is added
  // to the task's attempt history. A result's leased_unix_nanos, when set, is recorded as the
  // "dispatched" stamp ahead of its own stamps. A result for a task not leased to this session (stale
  // lease, already terminal, cancelled, unknown) is rejected and counted.
  virtual Result<CompleteOutcome> CompleteTasks(const std::string& endpoint, int64_t lease_epoch,
                                                const std::vector<v1::TaskResult>& results, int64_t now_ns) = 0;

  // CompleteTasks for the results of several sessions at once, one outcome per batch in order.
  // A store may send them together (RedisTaskStore pipelines them: one round trip instead of
  // one per endpoint, which is what many endpoints with a few results each cost).
  struct CompleteBatch {
    const std::string* endpoint;
    int64_t lease_epoch;
    const std::vector<v1::TaskResult>* results;
  };
  virtual std::vector<Result<CompleteOutcome>> CompleteTasksMany(const std::vector<CompleteBatch>& batches,
                                                                 int64_t now_ns) {
    std::vector<Result<CompleteOutcome>> out;
    out.reserve(batches.size());
    for (const auto& b : batches) out.push_back(CompleteTasks(*b.endpoint, b.lease_epoch, *b.results, now_ns));
    return out;
  }

  // One entry per id, nullopt for unknown ids.
  virtual Result<std::vector<std::optional<v1::TaskRecord>>> GetTasks(const std::vector<std::string>& ids,
                                                                      bool include_args) = 0;

  // What checking a wait or a delete needs of each task: its state and owner (nullopt for an
  // unknown id). Cheaper than GetTasks, which also reads stamps, result and history.
  struct TaskBrief {
    v1::TaskState state = v1::TASK_STATE_UNSPECIFIED;
    std::string owner;
  };
  virtual Result<std::vector<std::optional<TaskBrief>>> GetTaskBriefs(const std::vector<std::string>& ids) {
    LOOM_ASSIGN_OR_RETURN(auto recs, GetTasks(ids, false));
    std::vector<std::optional<TaskBrief>> out(recs.size());
    for (size_t i = 0; i < recs.size(); ++i) {
      if (recs[i]) out[i] = TaskBrief{recs[i]->state(), recs[i]->owner()};
    }
    return out;
  }

  // Cancels a task that is not terminal (removing it from its queue or in-flight set) and
  // returns its record; a terminal task is returned unchanged; nullopt for an unknown id.
  virtual Result<std::optional<v1::TaskRecord>> CancelTask(const std::string& id, int64_t now_ns) = 0;

  // Deletes finished tasks and their idempotency keys; unknown ids are skipped. Refuses the
  // whole call (FailedPrecondition, naming the task) if one of them is not finished.
  virtual Result<int64_t> DeleteTasks(const std::vector<std::string>& ids) = 0;

  // A new session of `endpoint` registered: takes the next lease epoch, re-leases to it the
  // in-flight tasks the endpoint still holds (`held`), and treats the others as lost with the
  // previous session (see ReleaseSession). `outcome.lease_epoch` is the new epoch.
  virtual Result<LostOutcome> RegisterSession(const std::string& endpoint, const std::vector<std::string>& held,
                                              const std::string& reason, int64_t now_ns) = 0;

  // The endpoint's session with `lease_epoch` was lost. Each task leased to it (or to an
  // earlier one) goes back to the head of the queue in dispatch order, stamped "requeued": a
  // dispatched task gives its attempt back; a running task's attempt ends as endpoint-lost in
  // its history, and a task with no attempts left fails.
  virtual Result<LostOutcome> ReleaseSession(const std::string& endpoint, int64_t lease_epoch,
                                             const std::string& reason, int64_t now_ns) = 0;

  // Gives back dispatched tasks leased to `lease_epoch` that were never sent (the session
  // changed first): back to the head of the queue, attempt returned. Returns how many.
  virtual Result<int64_t> RelinquishTasks(const std::string& endpoint, int64_t lease_epoch,
                                          const std::vector<std::string>& ids, int64_t now_ns) = 0;

  // Moves the waiting tasks that allow failover and that `to` admits (FailoverAdmits: their
  // kernel, device classes, user and function; service/routing.h), among the first `limit` of
  // `from`'s queue, to the head of `to.endpoint`'s queue (order kept, stamped "failover"), at
  // most `to.max_moved` of them (0: no limit). Returns how many moved.
  virtual Result<int64_t> FailoverQueued(const std::string& from, const FailoverTarget& to, int limit,
                                         int64_t now_ns) = 0;

  // Deletes the finished tasks whose time (StoreOptions::result_ttl_seconds) has come, at most
  // `max` a call; the service calls it on a timer. A store that keeps everything (the in-memory
  // one, for tests) deletes nothing.
  virtual Result<SweepOutcome> SweepExpired(int64_t now_ns, int max) {
    (void)now_ns;
    (void)max;
    return SweepOutcome{};
  }
  virtual Result<int64_t> QueueDepth(const std::string& endpoint) = 0;
  virtual Result<int64_t> InFlightCount(const std::string& endpoint) = 0;
};

}  // namespace loom::service
