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
  auto it = functions_.find(f.name());
  if (it != functions_.end()) {
    if (SameFunction(it->second, f)) return false;
    return AlreadyExists("function '" + f.name() + "' is already registered with kernel '" + it->second.kernel() +
                         "'; choose another name");
  }
  functions_[f.name()] = f;
  return true;
}

Result<std::optional<v1::Function>> InMemoryTaskStore::GetFunction(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = functions_.find(name);
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

Result<std::optional<v1::EndpointRecord>> InMemoryTaskStore::GetEndpoint(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return std::optional<v1::EndpointRecord>();
  return std::optional<v1::EndpointRecord>(it->second);
}

Result<std::vector<v1::EndpointRecord>> InMemoryTaskStore::ListEndpoints() {
  std::lock_guard lock(mu_);
  std::vector<v1::EndpointRecord> out;
  for (const auto& [id, e] : endpoints_) out.push_back(e);
  return out;
}

Status InMemoryTaskStore::SubmitTasks(const std::vector<NewTask>& tasks, int64_t now_ns,
                                      std::vector<bool>* dispatched, int64_t max_queue_depth) {
  std::lock_guard lock(mu_);
  if (max_queue_depth > 0) {
    std::map<std::string, int64_t> adding;
    for (const auto& t : tasks) ++adding[t.endpoint];
    for (const auto& [ep, n] : adding) {
      const int64_t depth = static_cast<int64_t>(queues_[ep].size());
      if (depth + n > max_queue_depth) return ResourceExhausted(QueueFullMessage(ep, depth, n, max_queue_depth));
    }
  }
  if (dispatched) dispatched->assign(tasks.size(), false);
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& t = tasks[i];
    Task rec;
    rec.state = v1::TASK_STATE_WAITING_FOR_ENDPOINT;
    rec.owner = t.owner;
    rec.function = t.function;
    rec.endpoint = t.endpoint;
    rec.spec = t.spec.SerializeAsString();
    rec.stamps = EncodeStamp(TaskStateName(v1::TASK_STATE_RECEIVED), t.received_ns) +
                 EncodeStamp(TaskStateName(v1::TASK_STATE_WAITING_FOR_ENDPOINT), now_ns);
    auto& q = queues_[t.endpoint];
    if (t.direct && q.empty()) {
      rec.state = v1::TASK_STATE_DISPATCHED;
      rec.stamps += EncodeStamp(TaskStateName(v1::TASK_STATE_DISPATCHED), now_ns);
      inflight_[t.endpoint][++seq_[t.endpoint]] = t.id;
      if (dispatched) (*dispatched)[i] = true;
    } else {
      q.push_back(t.id);
    }
    tasks_[t.id] = std::move(rec);
  }
  return Status::Ok();
}

Result<std::vector<v1::TaskSpec>> InMemoryTaskStore::LeaseTasks(const std::string& endpoint, int max,
                                                                int64_t now_ns) {
  std::lock_guard lock(mu_);
  std::vector<v1::TaskSpec> out;
  auto& q = queues_[endpoint];
  while (static_cast<int>(out.size()) < max && !q.empty()) {
    std::string id = std::move(q.front());
    q.pop_front();
    auto it = tasks_.find(id);
    if (it == tasks_.end() || it->second.state != v1::TASK_STATE_WAITING_FOR_ENDPOINT) continue;
    it->second.state = v1::TASK_STATE_DISPATCHED;
    it->second.stamps += EncodeStamp(TaskStateName(v1::TASK_STATE_DISPATCHED), now_ns);
    inflight_[endpoint][++seq_[endpoint]] = id;
    v1::TaskSpec spec;
    spec.ParseFromString(it->second.spec);
    out.push_back(std::move(spec));
  }
  return out;
}

Status InMemoryTaskStore::MarkRunning(const std::vector<v1::TaskStarted>& started) {
  std::lock_guard lock(mu_);
  for (const auto& s : started) {
    auto it = tasks_.find(s.task_id());
    if (it == tasks_.end() || !IsLegalTransition(static_cast<v1::TaskState>(it->second.state), v1::TASK_STATE_RUNNING)) {
      continue;
    }
    it->second.state = v1::TASK_STATE_RUNNING;
    it->second.stamps += EncodeStamp(TaskStateName(v1::TASK_STATE_RUNNING), s.unix_nanos());
  }
  return Status::Ok();
}

Result<std::vector<v1::TaskRecord>> InMemoryTaskStore::CompleteTasks(const std::string& endpoint,
                                                                     const std::vector<v1::TaskResult>& results,
                                                                     int64_t now_ns) {
  std::lock_guard lock(mu_);
  std::vector<v1::TaskRecord> out;
  auto& inflight = inflight_[endpoint];
  for (const auto& r : results) {
    auto it = tasks_.find(r.task_id());
    if (it == tasks_.end()) continue;
    Task& t = it->second;
    const auto to = r.ok() ? v1::TASK_STATE_SUCCESS : v1::TASK_STATE_FAILED;
    if (t.endpoint != endpoint || !IsLegalTransition(static_cast<v1::TaskState>(t.state), to)) continue;
    t.state = to;
    if (r.ok()) {
      t.result = r.value().SerializeAsString();
    } else {
      t.error = r.error();
    }
    for (const auto& s : r.timestamps()) t.stamps += EncodeStamp(s.stage(), s.unix_nanos());
    t.stamps += EncodeStamp(TaskStateName(to), now_ns);
    for (auto f = inflight.begin(); f != inflight.end(); ++f) {
      if (f->second == r.task_id()) {
        inflight.erase(f);
        break;
      }
    }
    out.push_back(Record(r.task_id(), t, false));
  }
  return out;
}

v1::TaskRecord InMemoryTaskStore::Record(const std::string& id, const Task& t, bool include_args) const {
  return MakeRecord(id, t.state, t.owner, t.function, t.endpoint, t.stamps, t.result, t.error,
                    include_args ? t.spec : std::string());
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
    t.state = v1::TASK_STATE_CANCELLED;
    t.stamps += EncodeStamp(TaskStateName(v1::TASK_STATE_CANCELLED), now_ns);
    auto& q = queues_[t.endpoint];
    q.erase(std::remove(q.begin(), q.end(), id), q.end());
    auto& inflight = inflight_[t.endpoint];
    for (auto f = inflight.begin(); f != inflight.end(); ++f) {
      if (f->second == id) {
        inflight.erase(f);
        break;
      }
    }
  }
  return std::optional<v1::TaskRecord>(Record(id, t, false));
}

Result<int64_t> InMemoryTaskStore::RequeueInFlight(const std::string& endpoint, const std::vector<std::string>& keep,
                                                   int64_t now_ns) {
  std::lock_guard lock(mu_);
  std::set<std::string> kept(keep.begin(), keep.end());
  auto& inflight = inflight_[endpoint];
  std::vector<std::string> back;
  for (auto f = inflight.begin(); f != inflight.end();) {
    if (kept.contains(f->second)) {
      ++f;
      continue;
    }
    auto it = tasks_.find(f->second);
    if (it != tasks_.end() &&
        IsLegalTransition(static_cast<v1::TaskState>(it->second.state), v1::TASK_STATE_WAITING_FOR_ENDPOINT)) {
      it->second.state = v1::TASK_STATE_WAITING_FOR_ENDPOINT;
      it->second.stamps += EncodeStamp("requeued", now_ns);
      back.push_back(f->second);
    }
    f = inflight.erase(f);
  }
  auto& q = queues_[endpoint];
  q.insert(q.begin(), back.begin(), back.end());
  return static_cast<int64_t>(back.size());
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
