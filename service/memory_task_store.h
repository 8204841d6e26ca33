// InMemoryTaskStore: the TaskStore contract held in process memory, for unit tests of logic
// that needs a store. Thread-safe (one mutex). Nothing survives the process.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "service/task_codec.h"
#include "service/task_store.h"

namespace loom::service {

class InMemoryTaskStore : public TaskStore {
 public:
  explicit InMemoryTaskStore(StoreOptions options = {}) : options_(options) {}
  Result<bool> PutFunction(const v1::Function& f) override;
  Result<std::optional<v1::Function>> GetFunction(const std::string& name) override;
  Result<std::vector<v1::Function>> ListFunctions() override;
  Status PutEndpoint(const v1::EndpointRecord& e) override;
  Status PutEndpointAccess(const v1::EndpointRecord& access) override;
  Result<std::optional<v1::EndpointRecord>> GetEndpoint(const std::string& id) override;
  Result<std::vector<v1::EndpointRecord>> ListEndpoints() override;
  Status SubmitTasks(const std::vector<NewTask>& tasks, int64_t now_ns, SubmitOutcome* outcome = nullptr,
                     int64_t max_queue_depth = 0) override;
  Result<std::vector<v1::TaskSpec>> LeaseTasks(const std::string& endpoint, int64_t lease_epoch, int max,
                                               int64_t now_ns) override;
  Status MarkRunning(const std::vector<v1::TaskStarted>& started) override;
  Result<CompleteOutcome> CompleteTasks(const std::string& endpoint, int64_t lease_epoch,
                                        const std::vector<v1::TaskResult>& results, int64_t now_ns) override;
  Result<std::vector<std::optional<v1::TaskRecord>>> GetTasks(const std::vector<std::string>& ids,
                                                              bool include_args) override;
  Result<std::optional<v1::TaskRecord>> CancelTask(const std::string& id, int64_t now_ns) override;
  Result<int64_t> DeleteTasks(const std::vector<std::string>& ids) override;
  Result<LostOutcome> RegisterSession(const std::string& endpoint, const std::vector<std::string>& held,
                                      const std::string& reason, int64_t now_ns) override;
  Result<LostOutcome> ReleaseSession(const std::string& endpoint, int64_t lease_epoch, const std::string& reason,
                                     int64_t now_ns) override;
  Result<int64_t> RelinquishTasks(const std::string& endpoint, int64_t lease_epoch, const std::vector<std::string>& ids,
                                  int64_t now_ns) override;
  Result<int64_t> FailoverQueued(const std::string& from, const FailoverTarget& to, int limit, int64_t now_ns) override;
  Result<int64_t> QueueDepth(const std::string& endpoint) override;
  Result<int64_t> InFlightCount(const std::string& endpoint) override;

 private:
  using Task = StoredTask;  // spec always set
  v1::TaskRecord Record(const std::string& id, const Task& t, bool include_args) const;
  void RemoveInFlight(const std::string& endpoint, const std::string& id);  // REQUIRES(mu_)
  void Finish(Task& t, int state, int64_t now_ns);                          // REQUIRES(mu_)
  // Requeues (or fails) the in-flight tasks of `endpoint` leased to an epoch <= `max_epoch`,
  // except those in `keep`, which move to `new_epoch`.
  LostOutcome LoseInFlight(const std::string& endpoint, int64_t max_epoch, const std::set<std::string>& keep,
                           int64_t new_epoch, const std::string& reason, int64_t now_ns);  // REQUIRES(mu_)

  const StoreOptions options_;

  std::mutex mu_;
  std::map<std::string, v1::Function> functions_;          // GUARDED_BY(mu_)
  std::map<std::string, v1::EndpointRecord> endpoints_;    // GUARDED_BY(mu_)
  std::map<std::string, v1::EndpointRecord> access_;       // GUARDED_BY(mu_)
  std::unordered_map<std::string, Task> tasks_;            // GUARDED_BY(mu_)
  std::map<std::string, std::deque<std::string>> queues_;  // GUARDED_BY(mu_)
  // endpoint -> dispatch order -> id, like the Redis ZSET scored by a per-endpoint counter.
  std::map<std::string, std::map<int64_t, std::string>> inflight_;  // GUARDED_BY(mu_)
  std::map<std::string, int64_t> seq_;                              // GUARDED_BY(mu_)
  std::map<std::string, int64_t> epochs_;                           // GUARDED_BY(mu_)
  int64_t CurrentEpoch(const std::string& endpoint) const {         // REQUIRES(mu_); 0: never registered
    auto it = epochs_.find(endpoint);
    return it == epochs_.end() ? 0 : it->second;
  }
  std::map<std::string, std::string> idempotency_;  // GUARDED_BY(mu_) owner\nkey -> id
};

}  // namespace loom::service
