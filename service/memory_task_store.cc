#include "service/memory_task_store.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <set>

#include "common/task_state.h"
#include "service/task_codec.h"

namespace loom::service {

namespace {
bool SameFunction(const v1::Function& a, const v1::Function& b) {
  v1::Function x = a, y = b;
  x.clear_created_unix_nanos();
  y.clear_created_unix_nanos();
  return google::protobuf::util::MessageDifferencer::Equals(x, y);
}
}  // namespace

Result<bool> InMemoryTaskStore::PutFunction(const v1::Function& f) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(FunctionKey(f));
  if (it != functions_.end()) {
    if (SameFunction(it->second, f)) return false;
    return AlreadyExists("function '" + f.name() + "' is already registered with kernel '" + it->second.kernel() +
                         "'; choose another name");
  }
  functions_[FunctionKey(f)] = f;
  return true;
}

Result<std::optional<v1::Function>> InMemoryTaskStore::GetFunction(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(key);
  if (it == functions_.end()) return std::optional<v1::Function>();
  return std::optional<v1::Function>(it->second);
}

Result<std::vector<v1::Function>> InMemoryTaskStore::ListFunctions() {
  std::lock_guard lock(mu_);
  std::vector<v1::Function> out;
  for (const auto& [name, f] : functions_) out.push_back(f);
  return out;
}

Status InMemoryTaskStore::PutEndpoint(const v1::EndpointRecord& e) {
  std::lock_guard lock(mu_);
  endpoints_[e.id()] = e;
  return Status::Ok();
}

Status InMemoryTaskStore::PutEndpointAccess(const v1::EndpointRecord& access) {
  std::lock_guard lock(mu_);
  access_[access.id()] = AccessOf(access);
  return Status::Ok();
}

Result<std::optional<v1::EndpointRecord>> InMemoryTaskStore::GetEndpoint(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return std::optional<v1::EndpointRecord>();
  v1::EndpointRecord e = it->second;
  if (auto a = access_.find(id); a != access_.end()) OverlayAccess(a->second, &e);
  return std::optional<v1::EndpointRecord>(std::move(e));
}

Result<std::vector<v1::EndpointRecord>> InMemoryTaskStore::ListEndpoints() {
  std::lock_guard lock(mu_);
  std::vector<v1::EndpointRecord> out;
  for (const auto& [id, e] : endpoints_) {
    out.push_back(e);
    if (auto a = access_.find(id); a != access_.end()) OverlayAccess(a->second, &out.back());
  }
  return out;
}

Status InMemoryTaskStore::SubmitTasks(const std::vector<NewTask>& tasks, int64_t now_ns, SubmitOutcome* outcome,
                                      int64_t max_queue_depth) {
  std::lock_guard lock(mu_);
  if (max_queue_depth > 0) {
    std::map<std::string, int64_t> adding;
    for (const auto& t : tasks) ++adding[t.endpoint];
    for (const auto& [ep, n] : adding) {
      const int64_t depth = static_cast<int64_t>(queues_[ep].size());
      if (depth + n > max_queue_depth) return ResourceExhausted(QueueFullMessage(ep, depth, n, max_queue_depth));
    }
  }
  if (outcome) {
    outcome->dispatched.assign(tasks.size(), false);
    outcome->existing_ids.assign(tasks.size(), "");
  }
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& t = tasks[i];
    if (!t.idempotency_key.empty()) {
      auto [it, fresh] = idempotency_.emplace(t.owner + "\n" + t.idempotency_key, t.id);
      if (!fresh) {
        if (outcome) outcome->existing_ids[i] = it->second;
        continue;
      }
    }
    Task rec;
    rec.state = v1::TASK_STATE_WAITING_FOR_ENDPOINT;
    rec.owner = t.owner;
    rec.function = t.function;
    rec.endpoint = t.endpoint;
    rec.spec = t.spec.SerializeAsString();
    rec.max_attempts = t.max_attempts;
    rec.timeout_ms = t.spec.timeout_ms();
    rec.idempotency_key = t.idempotency_key;
    rec.failover_kernel = t.failover_kernel;
    rec.stamps = EncodeStamp(TaskStateName(v1::TASK_STATE_RECEIVED), t.received_ns) +
                 EncodeStamp(TaskStateName(v1::TASK_STATE_WAITING_FOR_ENDPOINT), now_ns);
    auto& q = queues_[t.endpoint];
    if (t.direct && q.empty() && CurrentEpoch(t.endpoint) == t.lease_epoch) {
      rec.state = v1::TASK_STATE_DISPATCHED;
      rec.stamps += EncodeStamp(TaskStateName(v1::TASK_STATE_DISPATCHED), now_ns);
      rec.attempts = 1;
      rec.lease_epoch = t.lease_epoch;
      inflight_[t.endpoint][++seq_[t.endpoint]] = t.id;
      if (outcome) outcome->dispatched[i] = true;
    } else {
      q.push_back(t.id);
    }
    tasks_[t.id] = std::move(rec);
  }
  return Status::Ok();
}

Result<std::vector<v1::TaskSpec>> InMemoryTaskStore::LeaseTasks(const std::string& endpoint, int64_t lease_epoch,
                                                                int max, int64_t /*now_ns*/) {
  std::lock_guard lock(mu_);
  std::vector<v1::TaskSpec> out;
  if (CurrentEpoch(endpoint) != lease_epoch) return out;  // not the endpoint's latest session
  auto& q = queues_[endpoint];
  while (static_cast<int>(out.size()) < max && !q.empty()) {
    std::string id = std::move(q.front());
    q.pop_front();
    auto it = tasks_.find(id);
    if (it == tasks_.end() || it->second.state != v1::TASK_STATE_WAITING_FOR_ENDPOINT) continue;
    Task& t = it->second;
    // As in Redis, the lease stamps nothing: the "dispatched" stamp comes with the result.
    t.state = v1::TASK_STATE_DISPATCHED;
    t.attempts += 1;
    t.lease_epoch = lease_epoch;
    inflight_[endpoint][++seq_[endpoint]] = id;
    v1::TaskSpec spec;
    spec.ParseFromString(t.spec);
    out.push_back(std::move(spec));
  }
  return out;
}

Status InMemoryTaskStore::MarkRunning(const std::vector<v1::TaskStarted>& started) {
  std::lock_guard lock(mu_);
  for (const auto& s : started) {
    auto it = tasks_.find(s.task_id());
    if (it == tasks_.end() ||
        !IsLegalTransition(static_cast<v1::TaskState>(it->second.state), v1::TASK_STATE_RUNNING)) {
      continue;
    }
    it->second.state = v1::TASK_STATE_RUNNING;
    it->second.stamps += EncodeStamp(TaskStateName(v1::TASK_STATE_RUNNING), s.unix_nanos());
  }
  return Status::Ok();
}

void InMemoryTaskStore::RemoveInFlight(const std::string& endpoint, const std::string& id) {
  auto& inflight = inflight_[endpoint];
  for (auto f = inflight.begin(); f != inflight.end(); ++f) {
    if (f->second == id) {
      inflight.erase(f);
      return;
    }
  }
}

void InMemoryTaskStore::Finish(Task& t, int state, int64_t now_ns) {
  t.state = state;
  t.stamps += EncodeStamp(TaskStateName(static_cast<v1::TaskState>(state)), now_ns);
}

Result<CompleteOutcome> InMemoryTaskStore::CompleteTasks(const std::string& endpoint, int64_t lease_epoch,
                                                         const std::vector<v1::TaskResult>& results, int64_t now_ns) {
  std::lock_guard lock(mu_);
  CompleteOutcome out;
  for (const auto& r : results) {
    auto it = tasks_.find(r.task_id());
    const bool leased = it != tasks_.end() && it->second.endpoint == endpoint &&
                        it->second.lease_epoch == lease_epoch &&
                        (it->second.state == v1::TASK_STATE_DISPATCHED || it->second.state == v1::TASK_STATE_RUNNING);
    if (!leased) {
      ++out.rejected;
      continue;
    }
    Task& t = it->second;
    t.stamps += EncodeResultStamps(r);
    RemoveInFlight(endpoint, r.task_id());
    if (r.ok()) {
      t.result = r.value().SerializeAsString();
      Finish(t, v1::TASK_STATE_SUCCESS, now_ns);
      out.finished.push_back(Record(r.task_id(), t, false));
      continue;
    }
    const int kind = r.failure() == v1::FAILURE_KIND_UNSPECIFIED ? v1::FAILURE_KIND_KERNEL_ERROR : r.failure();
    t.history += EncodeAttempt(t.attempts, endpoint, lease_epoch, kind, now_ns, r.error());
    if (kind == v1::FAILURE_KIND_WORKER_LOST) {
      ++t.worker_deaths;
      if (t.worker_deaths >= options_.max_worker_deaths) {
        t.failure = v1::FAILURE_KIND_POISON;
        t.error = PoisonError(t.worker_deaths, options_.max_worker_deaths);
      } else if (t.attempts >= t.max_attempts) {
        t.failure = v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED;
        t.error = ExhaustedError(t.attempts, t.max_attempts);
      } else {
        t.state = v1::TASK_STATE_WAITING_FOR_ENDPOINT;
        t.stamps += EncodeStamp("retry", now_ns);
        queues_[endpoint].push_back(r.task_id());
        ++out.retried;
        continue;
      }
    } else {
      t.failure = kind;
      t.error = r.error();
    }
    Finish(t, v1::TASK_STATE_FAILED, now_ns);
    out.finished.push_back(Record(r.task_id(), t, false));
  }
  return out;
}

v1::TaskRecord InMemoryTaskStore::Record(const std::string& id, const Task& t, bool include_args) const {
  if (include_args) return MakeRecord(id, t);
  Task copy = t;
  copy.spec.clear();
  return MakeRecord(id, copy);
}

Result<std::vector<std::optional<v1::TaskRecord>>> InMemoryTaskStore::GetTasks(const std::vector<std::string>& ids,
                                                                               bool include_args) {
  std::lock_guard lock(mu_);
  std::vector<std::optional<v1::TaskRecord>> out;
  out.reserve(ids.size());
  for (const auto& id : ids) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
      out.emplace_back();
    } else {
      out.emplace_back(Record(id, it->second, include_args));
    }
  }
  return out;
}

Result<std::optional<v1::TaskRecord>> InMemoryTaskStore::CancelTask(const std::string& id, int64_t now_ns) {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return std::optional<v1::TaskRecord>();
  Task& t = it->second;
  if (!IsTerminal(static_cast<v1::TaskState>(t.state))) {
    Finish(t, v1::TASK_STATE_CANCELLED, now_ns);
    auto& q = queues_[t.endpoint];
    q.erase(std::remove(q.begin(), q.end(), id), q.end());
    RemoveInFlight(t.endpoint, id);
  }
  return std::optional<v1::TaskRecord>(Record(id, t, false));
}

Result<int64_t> InMemoryTaskStore::DeleteTasks(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  for (const auto& id : ids) {
    auto it = tasks_.find(id);
    if (it != tasks_.end() && !IsTerminal(static_cast<v1::TaskState>(it->second.state))) {
      return FailedPrecondition(DeleteUnfinishedMessage(id));
    }
  }
  int64_t n = 0;
  for (const auto& id : ids) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;
    if (!it->second.idempotency_key.empty()) idempotency_.erase(it->second.owner + "\n" + it->second.idempotency_key);
    tasks_.erase(it);
    ++n;
  }
  return n;
}

LostOutcome InMemoryTaskStore::LoseInFlight(const std::string& endpoint, int64_t max_epoch,
                                            const std::set<std::string>& keep, int64_t new_epoch,
                                            const std::string& reason, int64_t now_ns) {
  LostOutcome out;
  auto& inflight = inflight_[endpoint];
  std::vector<std::string> back;
  for (auto f = inflight.begin(); f != inflight.end();) {
    auto it = tasks_.find(f->second);
    if (it == tasks_.end() || IsTerminal(static_cast<v1::TaskState>(it->second.state))) {
      f = inflight.erase(f);
      continue;
    }
    Task& t = it->second;
    if (keep.contains(f->second)) {
      t.lease_epoch = new_epoch;
      ++f;
      continue;
    }
    if (t.lease_epoch > max_epoch) {
      ++f;
      continue;
    }
    if (t.state == v1::TASK_STATE_RUNNING) {
      t.history += EncodeAttempt(t.attempts, endpoint, t.lease_epoch, v1::FAILURE_KIND_ENDPOINT_LOST, now_ns, reason);
      if (t.attempts >= t.max_attempts) {
        t.failure = v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED;
        t.error = ExhaustedError(t.attempts, t.max_attempts);
        Finish(t, v1::TASK_STATE_FAILED, now_ns);
        out.finished.push_back(Record(f->second, t, false));
        f = inflight.erase(f);
        continue;
      }
    } else {
      t.attempts -= 1;  // it never ran: the attempt is given back
    }
    t.state = v1::TASK_STATE_WAITING_FOR_ENDPOINT;
    t.stamps += EncodeStamp("requeued", now_ns);
    back.push_back(f->second);
    f = inflight.erase(f);
  }
  auto& q = queues_[endpoint];
  q.insert(q.begin(), back.begin(), back.end());
  out.requeued = static_cast<int64_t>(back.size());
  return out;
}

Result<LostOutcome> InMemoryTaskStore::RegisterSession(const std::string& endpoint,
                                                       const std::vector<std::string>& held, const std::string& reason,
                                                       int64_t now_ns) {
  std::lock_guard lock(mu_);
  const int64_t epoch = ++epochs_[endpoint];
  LostOutcome out =
      LoseInFlight(endpoint, epoch, std::set<std::string>(held.begin(), held.end()), epoch, reason, now_ns);
  out.lease_epoch = epoch;
  return out;
}

Result<LostOutcome> InMemoryTaskStore::ReleaseSession(const std::string& endpoint, int64_t lease_epoch,
                                                      const std::string& reason, int64_t now_ns) {
  std::lock_guard lock(mu_);
  return LoseInFlight(endpoint, lease_epoch, {}, 0, reason, now_ns);
}

Result<int64_t> InMemoryTaskStore::RelinquishTasks(const std::string& endpoint, int64_t lease_epoch,
                                                   const std::vector<std::string>& ids, int64_t now_ns) {
  std::lock_guard lock(mu_);
  std::vector<std::string> back;
  for (const auto& id : ids) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;
    Task& t = it->second;
    if (t.endpoint != endpoint || t.lease_epoch != lease_epoch || t.state != v1::TASK_STATE_DISPATCHED) continue;
    t.state = v1::TASK_STATE_WAITING_FOR_ENDPOINT;
    t.attempts -= 1;
    t.stamps += EncodeStamp("requeued", now_ns);
    RemoveInFlight(endpoint, id);
    back.push_back(id);
  }
  auto& q = queues_[endpoint];
  q.insert(q.begin(), back.begin(), back.end());
  return static_cast<int64_t>(back.size());
}

Result<int64_t> InMemoryTaskStore::FailoverQueued(const std::string& from, const FailoverTarget& to, int limit,
                                                  int64_t now_ns) {
  std::lock_guard lock(mu_);
  auto& q = queues_[from];
  std::deque<std::string> keep;
  std::vector<std::string> moved;
  for (int scanned = 0; !q.empty() && scanned < limit; ++scanned) {
    std::string id = std::move(q.front());
    q.pop_front();
    auto it = tasks_.find(id);
    const bool room = to.max_moved <= 0 || static_cast<int64_t>(moved.size()) < to.max_moved;
    if (room && it != tasks_.end() && it->second.state == v1::TASK_STATE_WAITING_FOR_ENDPOINT &&
        !it->second.failover_kernel.empty() &&
        FailoverAdmits(to, DecodeFailoverRoute(it->second.failover_kernel), it->second.owner)) {
      it->second.endpoint = to.endpoint;
      it->second.stamps += EncodeStamp("failover", now_ns);
      moved.push_back(std::move(id));
    } else {
      keep.push_back(std::move(id));
    }
  }
  q.insert(q.begin(), keep.begin(), keep.end());
  auto& target = queues_[to.endpoint];
  target.insert(target.begin(), moved.begin(), moved.end());
  return static_cast<int64_t>(moved.size());
}

Result<int64_t> InMemoryTaskStore::QueueDepth(const std::string& endpoint) {
  std::lock_guard lock(mu_);
  auto it = queues_.find(endpoint);
  return it == queues_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

Result<int64_t> InMemoryTaskStore::InFlightCount(const std::string& endpoint) {
  std::lock_guard lock(mu_);
  auto it = inflight_.find(endpoint);
  return it == inflight_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

}  // namespace loom::service
