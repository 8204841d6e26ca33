// RedisTaskStore: the production TaskStore. Each multi-key transition is one Lua script, so it
// is atomic; a batch of tasks is one script call, so a batch costs one round trip. Key names
// come from redis_keys.h; the legal transitions are passed to the scripts from
// common/task_state.h. Thread-safe: each call borrows a connection from a pool.
#pragma once

#include <memory>

#include "common/redis.h"
#include "service/task_store.h"

namespace loom::service {

class RedisTaskStore final : public TaskStore {
 public:
  explicit RedisTaskStore(RedisOptions options, StoreOptions store_options = {});

  // Checks that Redis answers (PING).
  Status Ping();
  // Redis's hash-max-listpack-value (an error where CONFIG is disabled, as on some managed
  // Redis services).
  Result<int64_t> HashMaxListpackValue();
  // The connection pool, for its failure counters and circuit state (metrics).
  const RedisPool& pool() const { return pool_; }

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
  std::vector<Result<CompleteOutcome>> CompleteTasksMany(const std::vector<CompleteBatch>& batches,
                                                         int64_t now_ns) override;
  Result<CompleteOutcome> CompleteTasks(const std::string& endpoint, int64_t lease_epoch,
                                        const std::vector<v1::TaskResult>& results, int64_t now_ns) override;
  Result<std::vector<std::optional<v1::TaskRecord>>> GetTasks(const std::vector<std::string>& ids,
                                                              bool include_args) override;
  Result<std::vector<std::optional<TaskBrief>>> GetTaskBriefs(const std::vector<std::string>& ids) override;
  Result<std::optional<v1::TaskRecord>> CancelTask(const std::string& id, int64_t now_ns) override;
  Result<int64_t> DeleteTasks(const std::vector<std::string>& ids) override;
  Result<LostOutcome> RegisterSession(const std::string& endpoint, const std::vector<std::string>& held,
                                      const std::string& reason, int64_t now_ns) override;
  Result<LostOutcome> ReleaseSession(const std::string& endpoint, int64_t lease_epoch, const std::string& reason,
                                     int64_t now_ns) override;
  Result<int64_t> RelinquishTasks(const std::string& endpoint, int64_t lease_epoch, const std::vector<std::string>& ids,
                                  int64_t now_ns) override;
  Result<int64_t> FailoverQueued(const std::string& from, const FailoverTarget& to, int limit, int64_t now_ns) override;
  Result<SweepOutcome> SweepExpired(int64_t now_ns, int max) override;
  Result<int64_t> QueueDepth(const std::string& endpoint) override;
  Result<int64_t> InFlightCount(const std::string& endpoint) override;

 private:
  struct Script {
    std::string source;
    std::string sha;  // SHA1 of source, for EVALSHA
  };
  // EVALSHA, falling back to EVAL when Redis lost its script cache (e.g. it restarted).
  Result<RedisReply> Eval(const Script& script, const std::vector<std::string_view>& args);
  Result<RedisReply> Command(const std::vector<std::string_view>& argv);

  Result<LostOutcome> Lose(const std::string& endpoint, const std::string& mode, const std::string& epoch,
                           const std::vector<std::string>& held, const std::string& reason, int64_t now_ns);

  RedisPool pool_;
  const StoreOptions options_;
  Script submit_, lease_, read_, running_, complete_, cancel_, delete_, lose_, relinquish_, failover_, put_function_,
      sweep_;
};

}  // namespace loom::service
