// LoomApi: the service's request handlers, independent of transport. The gRPC server maps
// onto it one call to one method, and the REST gateway will map onto the same methods.
//
// A submit whose endpoint has asked for work (credit) and has nothing queued is dispatched in
// the same store write, and handed to the broker to send: no second Redis call on the path.
// Submits are group-committed (as LevelDB groups writes): the caller at the head of the commit
// queue writes its own tasks and those of every caller queued behind it in one store call;
// the others wait for it. A lone submit pays no thread hand-off. Each call returns only after
// its tasks are in the store. Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"
#include "service/auth.h"
#include "service/completion_hub.h"
#include "service/credit_book.h"
#include "service/metrics.h"
#include "service/quota.h"
#include "service/task_store.h"

namespace loom::service {

struct ServiceLimits {
  int64_t max_message_bytes = 10 * 1024 * 1024;  // one request, one task's arguments, one result
  int max_batch = 10000;                         // tasks in one SubmitBatch
  int max_wait_ids = 100000;                     // task ids in one WaitResults / GetTasks
  int64_t max_queue_depth = 1000000;             // tasks waiting for one endpoint; 0: no limit
  int default_max_attempts = 3;                  // when neither the submit nor the function sets it
  int max_attempts_limit = 100;                  // the most attempts a submit may ask for
  int max_idempotency_key_bytes = 256;
};

// Wakes the dispatcher (the broker) when tasks were queued, dispatched by the submit path, or
// cancelled.
class DispatchNotifier {
 public:
  virtual ~DispatchNotifier() = default;
  virtual void TasksQueued(const std::vector<std::string>& endpoints) = 0;
  // Tasks already marked dispatched in the store against credit taken from `session`: send them.
  // `committed_ns`: when the store write that marked them returned (their "service_committed").
  virtual void TasksDispatched(const std::string& endpoint, const std::string& session, int64_t lease_epoch,
                               std::vector<v1::TaskSpec> specs, int64_t committed_ns) = 0;
  virtual void TasksCancelled(const std::string& endpoint, const std::vector<std::string>& task_ids) = 0;
  // An endpoint record was created or changed by the API (its CURVE key or allow-lists).
  virtual void EndpointChanged(const v1::EndpointRecord& /*e*/) {}
};

// The user of a service without authentication (unit tests, in-process fakes), and the owner
// of endpoints that register without a CURVE key.
inline constexpr const char* kLocalUser = "local";
inline Principal LocalPrincipal() { return {kLocalUser, true}; }

// Who may do what. Every pointer may be null: no token management (token calls answer
// UNIMPLEMENTED), no quotas.
struct ApiSecurity {
  TokenAuthenticator* tokens = nullptr;
  Quotas* quotas = nullptr;
};

class LoomApi {
 public:
  // `credit` (may be null) lets submits dispatch at once to endpoints that have asked for work.
  // `metrics` (may be null: none) counts submitted and cancelled tasks.
  LoomApi(TaskStore* store, CompletionHub* hub, DispatchNotifier* notifier, ServiceLimits limits,
          CreditBook* credit = nullptr, ServiceMetrics* metrics = nullptr, ApiSecurity security = {});
  ~LoomApi();
  LoomApi(const LoomApi&) = delete;
  LoomApi& operator=(const LoomApi&) = delete;

  Result<v1::RegisterFunctionResponse> RegisterFunction(const v1::RegisterFunctionRequest& req, const Principal& who);
  Result<v1::Function> GetFunction(const v1::GetFunctionRequest& req, const Principal& who);
  Result<v1::ListFunctionsResponse> ListFunctions(const Principal& who);
  Result<v1::EndpointRecord> CreateEndpoint(const v1::CreateEndpointRequest& req, const Principal& who);
  Result<v1::ListEndpointsResponse> ListEndpoints(const Principal& who);
  Result<v1::EndpointRecord> GetEndpoint(const v1::GetEndpointRequest& req, const Principal& who);
  Result<v1::SubmitResponse> Submit(const v1::SubmitRequest& req, const Principal& who);
  Result<v1::SubmitBatchResponse> SubmitBatch(const v1::SubmitBatchRequest& req, const Principal& who);
  // With wait_ms > 0, a long poll: returns when every task is terminal, wait_ms passed, or
  // `cancelled` turned true (the client went away).
  Result<v1::GetTasksResponse> GetTasks(
      const v1::GetTasksRequest& req, const Principal& who,
      const std::function<bool()>& cancelled = [] { return false; });
  // Calls `write` with the listed tasks' records as they reach a terminal state, in completion
  // order: each call carries the records that became ready together (one or more; each task
  // once). Returns OK when every task was written, DEADLINE_EXCEEDED when timeout_ms passed
  // first, CANCELLED when `cancelled` turned true or `write` returned false (the client went
  // away).
  // The writer owns the records for the call: it may move them out (StreamResults swaps them
  // into its message instead of copying).
  using Burst = std::vector<v1::TaskRecord*>;
  using BurstWriter = std::function<bool(const Burst&)>;
  Status WaitResults(const v1::WaitResultsRequest& req, const Principal& who, const BurstWriter& write,
                     const std::function<bool()>& cancelled);
  Result<v1::CancelResponse> Cancel(const v1::CancelRequest& req, const Principal& who);
  Result<v1::DeleteTasksResponse> DeleteTasks(const v1::DeleteTasksRequest& req, const Principal& who);
  Result<v1::EndpointRecord> UpdateEndpoint(const v1::UpdateEndpointRequest& req, const Principal& who);
  Result<v1::CreateTokenResponse> CreateToken(const v1::CreateTokenRequest& req, const Principal& who);
  Result<v1::RevokeTokenResponse> RevokeToken(const v1::RevokeTokenRequest& req, const Principal& who);
  Result<v1::ListTokensResponse> ListTokens(const v1::ListTokensRequest& req, const Principal& who);
  Result<v1::WhoAmIResponse> WhoAmI(const Principal& who);

  // The broker reports endpoint registrations here, so submits check against current kernels.
  void EndpointUpdated(const v1::EndpointRecord& e);
  const ServiceLimits& limits() const { return limits_; }

 private:
  // An endpoint as last registered, with its kernels indexed by "name@version". Shared and
  // never modified: a submit holds it without copying (a record with its kernels' documentation
  // is kilobytes, and was copied per task).
  struct CachedEndpoint {
    v1::EndpointRecord record;
    std::unordered_map<std::string, const v1::KernelInfo*> kernels;  // points into record
  };
  using FunctionPtr = std::shared_ptr<const v1::Function>;
  using EndpointPtr = std::shared_ptr<const CachedEndpoint>;
  // By FunctionKey (owner/name).
  Result<FunctionPtr> LookupFunction(const std::string& key);
  // `name` as the caller wrote it: their own function, or (an admin) "user/name".
  Result<FunctionPtr> FunctionFor(const std::string& name, const Principal& who);
  // ALREADY_EXISTS when another endpoint than `id` has this CURVE key.
  Status CheckKeyUnused(const std::string& key, const std::string& id);
  // Counts the request against the caller's rate quota.
  Status Admit(const Principal& who);
  static bool Owns(const std::string& owner, const Principal& who) { return who.admin || owner == who.user; }
  static bool Owns(const v1::TaskRecord& t, const Principal& who) { return Owns(t.owner(), who); }
  Result<EndpointPtr> LookupEndpoint(const std::string& id);
  static EndpointPtr MakeCachedEndpoint(v1::EndpointRecord e);
  // Replaces the cached record, access fields included.
  void CacheEndpoint(const v1::EndpointRecord& e);
  // Endpoint groups read once per batch (members, their load), and the tasks the batch gave each.
  struct BatchRouting {
    struct Member {
      EndpointPtr endpoint;
      int64_t waiting = 0;  // queued + in flight when read, plus this batch's tasks
    };
    std::map<std::string, std::vector<Member>> groups;
  };
  // The live member of `group` that the caller may use, that offers fn's kernel and devices,
  // with the fewest tasks per worker. NOT_FOUND: no member the caller may use;
  // FAILED_PRECONDITION: none can run it; UNAVAILABLE: those that can are offline.
  Result<EndpointPtr> PickGroupMember(const std::string& group, const v1::Function& fn, const Principal& who,
                                      BatchRouting* routing);
  Status Validate(const v1::SubmitRequest& req, const Principal& who, NewTask* task, int64_t received_ns,
                  BatchRouting* routing);
  // Blocks until `tasks` are committed (or the commit failed); `dispatched` says which went out
  // at once.
  Status Commit(std::vector<NewTask>* tasks, SubmitOutcome* outcome);

  TaskStore* store_;
  CompletionHub* hub_;
  DispatchNotifier* notifier_;
  const ServiceLimits limits_;
  CreditBook* credit_;
  ServiceMetrics* metrics_;
  const ApiSecurity security_;

  std::mutex cache_mu_;
  std::unordered_map<std::string, FunctionPtr> functions_;  // GUARDED_BY(cache_mu_); functions never change
  std::unordered_map<std::string, EndpointPtr> endpoints_;  // GUARDED_BY(cache_mu_)

  struct PendingCommit {
    std::vector<NewTask>* tasks;
    SubmitOutcome* outcome;
    Status status;
    bool done = false;
  };
  std::mutex commit_mu_;
  std::condition_variable commit_cv_;
  std::deque<PendingCommit*> commit_queue_;  // GUARDED_BY(commit_mu_); the head is writing
};

}  // namespace loom::service
