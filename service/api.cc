#include "service/api.h"

#include <absl/container/flat_hash_set.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/curve.h"
#include "common/kernel_api.h"
#include "common/task_state.h"
#include "common/util.h"
#include "common/value.h"
#include "service/routing.h"

namespace loom::service {

LoomApi::LoomApi(TaskStore* store, CompletionHub* hub, DispatchNotifier* notifier, ServiceLimits limits,
                 CreditBook* credit, ServiceMetrics* metrics, ApiSecurity security)
    : store_(store),
      hub_(hub),
      notifier_(notifier),
      limits_(limits),
      credit_(credit),
      metrics_(metrics),
      security_(security) {}

LoomApi::~LoomApi() = default;

namespace {
bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}
const char* kNameRule = "1-128 characters of letters, digits, '-', '_' or '.'";

std::string UnknownTaskMessage(const std::string& id) {
  return "task '" + id + "' is not known (never submitted, deleted, or expired after the result TTL)";
}
std::string UnknownEndpointMessage(const std::string& id) {
  return "endpoint '" + id + "' is not registered; see `loom endpoint list`";
}
std::string UnknownFunctionMessage(const std::string& name) {
  return "function '" + name + "' is not registered; register it with `loom function register`";
}

Status CheckAccessLists(const google::protobuf::RepeatedPtrField<std::string>& users,
                        const google::protobuf::RepeatedPtrField<std::string>& functions) {
  for (const auto& u : users) {
    if (u != "*" && !ValidName(u)) return InvalidArgument("allowed user '" + u + "' is invalid: use " + kNameRule);
  }
  for (const auto& f : functions) {
    const size_t slash = f.find('/');
    const bool ok =
        slash == std::string::npos ? ValidName(f) : ValidName(f.substr(0, slash)) && ValidName(f.substr(slash + 1));
    if (!ok) return InvalidArgument("allowed function '" + f + "' is invalid: use NAME or USER/NAME");
  }
  return Status::Ok();
}

}  // namespace

Status LoomApi::CheckKeyUnused(const std::string& key, const std::string& id) {
  if (key.empty()) return Status::Ok();
  LOOM_ASSIGN_OR_RETURN(auto eps, store_->ListEndpoints());
  for (const auto& e : eps) {
    // One key, one endpoint: the ZAP handler could not tell two apart (it refuses both).
    if (e.id() != id && e.curve_public_key() == key) {
      return AlreadyExists(
          "that CURVE public key belongs to another endpoint; make a new key pair with `loom endpoint "
          "configure`");
    }
  }
  return Status::Ok();
}

Status LoomApi::Admit(const Principal& who) {
  if (security_.quotas == nullptr) return Status::Ok();
  return security_.quotas->AdmitRequest(who.user);
}

Result<v1::RegisterFunctionResponse> LoomApi::RegisterFunction(const v1::RegisterFunctionRequest& req,
                                                               const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  v1::Function fn = req.function();
  if (!ValidName(fn.name())) {
    return InvalidArgument("function name '" + fn.name() + "' is invalid: use " + kNameRule);
  }
  auto [kname, kversion] = SplitKernelRef(fn.kernel());
  if (!ValidName(kname) || kversion.empty()) {
    return InvalidArgument("kernel reference '" + fn.kernel() + "' is invalid: use name@version, e.g. add@1");
  }
  if (fn.max_attempts() < 0 || fn.max_attempts() > limits_.max_attempts_limit) {
    return InvalidArgument("max_attempts " + std::to_string(fn.max_attempts()) + " is out of range: use 1 to " +
                           std::to_string(limits_.max_attempts_limit) + ", or 0 for the service's default");
  }
  if (fn.timeout_ms() < 0) {
    return InvalidArgument("timeout_ms " + std::to_string(fn.timeout_ms()) + " is negative: use 0 for no deadline");
  }
  LOOM_RETURN_IF_ERROR(CheckRequirements(fn.requirements()));
  fn.set_owner(who.user);
  fn.set_created_unix_nanos(NowNanos());
  LOOM_ASSIGN_OR_RETURN(bool created, store_->PutFunction(fn));
  LOOM_ASSIGN_OR_RETURN(auto stored, LookupFunction(FunctionKey(fn)));
  v1::RegisterFunctionResponse resp;
  *resp.mutable_function() = *stored;
  resp.set_created(created);
  return resp;
}

Result<LoomApi::FunctionPtr> LoomApi::LookupFunction(const std::string& key) {
  {
    std::lock_guard lock(cache_mu_);
    auto it = functions_.find(key);
    if (it != functions_.end()) return it->second;
  }
  LOOM_ASSIGN_OR_RETURN(auto fn, store_->GetFunction(key));
  if (!fn) return NotFound(UnknownFunctionMessage(key.substr(key.find('/') + 1)));
  auto ptr = std::make_shared<const v1::Function>(std::move(*fn));
  std::lock_guard lock(cache_mu_);
  functions_[key] = ptr;
  return ptr;
}

Result<LoomApi::FunctionPtr> LoomApi::FunctionFor(const std::string& name, const Principal& who) {
  // "name" is the caller's own; "user/name" another user's, which only an admin may read.
  const size_t slash = name.find('/');
  if (slash == std::string::npos) return LookupFunction(FunctionKey(who.user, name));
  if (!who.admin && name.substr(0, slash) != who.user) return NotFound(UnknownFunctionMessage(name));
  return LookupFunction(name);
}

LoomApi::EndpointPtr LoomApi::MakeCachedEndpoint(v1::EndpointRecord e) {
  auto c = std::make_shared<CachedEndpoint>();
  c->record = std::move(e);
  for (const auto& k : c->record.kernels()) c->kernels[k.name() + "@" + k.version()] = &k;
  return c;
}

Result<LoomApi::EndpointPtr> LoomApi::LookupEndpoint(const std::string& id) {
  {
    std::lock_guard lock(cache_mu_);
    auto it = endpoints_.find(id);
    if (it != endpoints_.end()) return it->second;
  }
  LOOM_ASSIGN_OR_RETURN(auto ep, store_->GetEndpoint(id));
  if (!ep) return NotFound(UnknownEndpointMessage(id));
  EndpointPtr ptr = MakeCachedEndpoint(std::move(*ep));
  std::lock_guard lock(cache_mu_);
  endpoints_[id] = ptr;
  return ptr;
}

void LoomApi::EndpointUpdated(const v1::EndpointRecord& e) {
  // The broker's record may carry access fields from before an UpdateEndpoint: the cached ones
  // (set by CreateEndpoint / UpdateEndpoint through CacheEndpoint) stay.
  v1::EndpointRecord merged = e;
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = endpoints_.find(e.id()); it != endpoints_.end()) OverlayAccess(it->second->record, &merged);
  }
  EndpointPtr ptr = MakeCachedEndpoint(std::move(merged));
  std::lock_guard lock(cache_mu_);
  endpoints_[e.id()] = std::move(ptr);
}

void LoomApi::CacheEndpoint(const v1::EndpointRecord& e) {
  EndpointPtr ptr = MakeCachedEndpoint(e);
  std::lock_guard lock(cache_mu_);
  endpoints_[e.id()] = std::move(ptr);
}

Result<v1::Function> LoomApi::GetFunction(const v1::GetFunctionRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  LOOM_ASSIGN_OR_RETURN(auto fn, FunctionFor(req.name(), who));
  return *fn;
}

Result<v1::ListFunctionsResponse> LoomApi::ListFunctions(const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  LOOM_ASSIGN_OR_RETURN(auto fns, store_->ListFunctions());
  v1::ListFunctionsResponse resp;
  for (auto& f : fns) {
    if (who.admin || f.owner() == who.user) *resp.add_functions() = std::move(f);
  }
  return resp;
}

Result<v1::EndpointRecord> LoomApi::CreateEndpoint(const v1::CreateEndpointRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (!ValidName(req.name())) return InvalidArgument("endpoint name '" + req.name() + "' is invalid: use " + kNameRule);
  std::string id = req.id().empty() ? req.name() : req.id();
  if (!ValidName(id)) return InvalidArgument("endpoint id '" + id + "' is invalid: use " + kNameRule);
  LOOM_RETURN_IF_ERROR(CheckAccessLists(req.allowed_users(), req.allowed_functions()));
  if (!req.curve_public_key().empty())
    LOOM_RETURN_IF_ERROR(curve::CheckKey(req.curve_public_key(), "curve_public_key"));
  LOOM_RETURN_IF_ERROR(CheckKeyUnused(req.curve_public_key(), id));
  LOOM_ASSIGN_OR_RETURN(auto existing, store_->GetEndpoint(id));
  if (existing) return AlreadyExists("endpoint '" + id + "' already exists");
  v1::EndpointRecord e;
  e.set_id(id);
  e.set_name(req.name());
  e.set_owner(who.user);
  e.set_curve_public_key(req.curve_public_key());
  *e.mutable_allowed_users() = req.allowed_users();
  *e.mutable_allowed_functions() = req.allowed_functions();
  e.set_status(v1::ENDPOINT_STATUS_NEVER_CONNECTED);
  e.set_created_unix_nanos(NowNanos());
  // Access first: a record visible without it would have no owner.
  LOOM_RETURN_IF_ERROR(store_->PutEndpointAccess(e));
  LOOM_RETURN_IF_ERROR(store_->PutEndpoint(e));
  CacheEndpoint(e);
  notifier_->EndpointChanged(e);
  return e;
}

Result<v1::ListEndpointsResponse> LoomApi::ListEndpoints(const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  LOOM_ASSIGN_OR_RETURN(auto eps, store_->ListEndpoints());
  v1::ListEndpointsResponse resp;
  for (auto& e : eps) {
    if (!MayUseEndpoint(e, who)) continue;
    LOOM_ASSIGN_OR_RETURN(int64_t depth, store_->QueueDepth(e.id()));
    LOOM_ASSIGN_OR_RETURN(int64_t inflight, store_->InFlightCount(e.id()));
    e.set_queue_depth(depth);
    e.set_in_flight(inflight);
    *resp.add_endpoints() = std::move(e);
  }
  return resp;
}

Result<v1::EndpointRecord> LoomApi::GetEndpoint(const v1::GetEndpointRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  LOOM_ASSIGN_OR_RETURN(auto ep, store_->GetEndpoint(req.id()));
  // Another tenant's endpoint answers exactly like an unknown one.
  if (!ep || !MayUseEndpoint(*ep, who)) return NotFound(UnknownEndpointMessage(req.id()));
  LOOM_ASSIGN_OR_RETURN(int64_t depth, store_->QueueDepth(req.id()));
  LOOM_ASSIGN_OR_RETURN(int64_t inflight, store_->InFlightCount(req.id()));
  ep->set_queue_depth(depth);
  ep->set_in_flight(inflight);
  return *ep;
}

Result<LoomApi::EndpointPtr> LoomApi::PickGroupMember(const std::string& group, const v1::Function& fn,
                                                      const Principal& who, BatchRouting* routing) {
  if (!ValidName(group)) return InvalidArgument("group name '" + group + "' is invalid: use " + kNameRule);
  auto [it, fresh] = routing->groups.try_emplace(group);
  auto& members = it->second;
  if (fresh) {
    // Read once per batch: the members as the broker last wrote them, and their load.
    LOOM_ASSIGN_OR_RETURN(auto eps, store_->ListEndpoints());
    for (auto& e : eps) {
      if (e.group() != group) continue;
      BatchRouting::Member m;
      if (e.status() == v1::ENDPOINT_STATUS_ONLINE) {
        LOOM_ASSIGN_OR_RETURN(int64_t depth, store_->QueueDepth(e.id()));
        LOOM_ASSIGN_OR_RETURN(int64_t inflight, store_->InFlightCount(e.id()));
        m.waiting = depth + inflight;
      }
      m.endpoint = MakeCachedEndpoint(std::move(e));
      members.push_back(std::move(m));
    }
  }
  // Tenancy first: members the caller may not use are not mentioned, as if not there.
  std::vector<GroupMember> live;
  std::vector<BatchRouting::Member*> live_members;
  std::string reasons;
  bool any_visible = false, any_capable = false;
  for (auto& m : members) {
    const v1::EndpointRecord& e = m.endpoint->record;
    if (!MayUseEndpoint(e, who)) continue;
    any_visible = true;
    std::string why;
    if (!EndpointAllowsFunction(e, fn)) {
      why = "does not run function '" + FunctionKey(fn) + "'";
    } else if (std::string missing = MissingCapability(e, fn); !missing.empty()) {
      why = missing.substr(missing.find("' ") + 2);  // drop "endpoint 'ID' "
    } else if (e.kernels_size() == 0) {
      why = "has not reported its kernels (never connected)";
    } else {
      any_capable = true;
      if (e.status() != v1::ENDPOINT_STATUS_ONLINE) {
        why = "is offline";
      } else {
        live.push_back({&e, m.waiting});
        live_members.push_back(&m);
        continue;
      }
    }
    reasons += (reasons.empty() ? "" : "; ") + e.id() + " " + why;
  }
  if (!any_visible) {
    return NotFound("group '" + group + "' has no endpoint you may use; see `loom endpoint list` (GROUP column)");
  }
  GroupMember* pick = PickLeastLoaded(live);
  if (pick == nullptr) {
    const std::string what = "no live endpoint of group '" + group + "' can run function '" + fn.name() + "' (kernel " +
                             fn.kernel() + "): " + reasons;
    // Capable members that are all offline may come back; none capable is the caller's to fix.
    return any_capable ? Unavailable(what) : FailedPrecondition(what);
  }
  BatchRouting::Member* chosen = live_members[pick - live.data()];
  ++chosen->waiting;  // the next task of the batch sees this one
  return chosen->endpoint;
}

Status LoomApi::Validate(const v1::SubmitRequest& req, const Principal& who, NewTask* task, int64_t received_ns,
                         BatchRouting* routing) {
  if (req.function().empty()) return InvalidArgument("no function named: set 'function'");
  if (req.endpoint().empty()) return InvalidArgument("no endpoint named: set 'endpoint' (an id, or group:NAME)");
  LOOM_ASSIGN_OR_RETURN(auto fn_ptr, FunctionFor(req.function(), who));
  const v1::Function& fn = *fn_ptr;
  const std::optional<std::string> group = GroupOf(req.endpoint());
  EndpointPtr ep_ptr;
  if (group) {
    LOOM_ASSIGN_OR_RETURN(ep_ptr, PickGroupMember(*group, fn, who, routing));
  } else {
    LOOM_ASSIGN_OR_RETURN(ep_ptr, LookupEndpoint(req.endpoint()));
  }
  const v1::EndpointRecord& ep = ep_ptr->record;
  if (!MayUseEndpoint(ep, who)) {
    return PermissionDenied("endpoint '" + ep.id() + "' does not accept tasks from user '" + who.user +
                            "'; its owner can allow you with `loom endpoint share " + ep.id() + " --user " + who.user +
                            "`");
  }
  if (!EndpointAllowsFunction(ep, fn)) {
    return PermissionDenied("endpoint '" + ep.id() + "' does not run function '" + FunctionKey(fn) +
                            "'; its owner allows: " + [&] {
                              std::string list;
                              for (const auto& f : ep.allowed_functions()) list += (list.empty() ? "" : ", ") + f;
                              return list;
                            }());
  }
  // The kernel, its version and the device classes the function requires: refused here, not
  // found out on the endpoint.
  // (The common case, a kernel offered and no requirement, costs one hash lookup.)
  const bool kernel_offered = ep.kernels_size() == 0 || ep_ptr->kernels.contains(fn.kernel());
  if (!kernel_offered || fn.requirements().device_classes_size() > 0) {
    if (std::string missing = MissingCapability(ep, fn); !missing.empty()) return FailedPrecondition(missing);
  }
  if (ep.kernels_size() > 0) {
    LOOM_RETURN_IF_ERROR(ValidateArgs(*ep_ptr->kernels.at(fn.kernel()), req.args(), req.kwargs()));
  } else {
    // The endpoint has not told us its kernels yet: check what can be checked without them.
    for (const auto& a : req.args()) {
      if (a.has_tensor_value()) LOOM_RETURN_IF_ERROR(ValidateTensor(a.tensor_value()));
    }
  }
  if (req.max_attempts() < 0 || req.max_attempts() > limits_.max_attempts_limit) {
    return InvalidArgument("max_attempts " + std::to_string(req.max_attempts()) + " is out of range: use 1 to " +
                           std::to_string(limits_.max_attempts_limit) + ", or 0 for the function's default");
  }
  if (req.timeout_ms() < 0) {
    return InvalidArgument("timeout_ms " + std::to_string(req.timeout_ms()) + " is negative: use 0 for no deadline");
  }
  if (static_cast<int64_t>(req.idempotency_key().size()) > limits_.max_idempotency_key_bytes) {
    return InvalidArgument("the idempotency key takes " + std::to_string(req.idempotency_key().size()) +
                           " bytes, over the limit of " + std::to_string(limits_.max_idempotency_key_bytes));
  }
  task->id = NewId();
  task->owner = who.user;
  task->idempotency_key = req.idempotency_key();
  // A task submitted to a group always may move to another member; one submitted to an
  // endpoint when it asks to. The route keeps the move within what the submit would allow.
  if (req.failover() || group) {
    FailoverRoute route{fn.kernel(), FunctionKey(fn), {}};
    route.device_classes.assign(fn.requirements().device_classes().begin(), fn.requirements().device_classes().end());
    task->failover_kernel = EncodeFailoverRoute(route);
  }
  task->max_attempts = req.max_attempts() > 0  ? req.max_attempts()
                       : fn.max_attempts() > 0 ? fn.max_attempts()
                                               : limits_.default_max_attempts;
  task->function = fn.name();
  task->endpoint = ep.id();
  task->received_ns = received_ns;
  auto& spec = task->spec;
  spec.set_task_id(task->id);
  spec.set_function(fn.name());
  spec.set_kernel(fn.kernel());
  *spec.mutable_args() = req.args();
  *spec.mutable_kwargs() = req.kwargs();
  *spec.mutable_config() = fn.config();
  spec.set_timeout_ms(req.timeout_ms() > 0 ? req.timeout_ms() : fn.timeout_ms());
  spec.set_owner(who.user);
  spec.set_function_owner(fn.owner());
  spec.set_trace(req.trace());
  const int64_t size = static_cast<int64_t>(spec.ByteSizeLong());
  if (size > limits_.max_message_bytes) {
    return ResourceExhausted("task arguments take " + std::to_string(size) + " bytes, over the limit of " +
                             std::to_string(limits_.max_message_bytes) + " (max_message_bytes)");
  }
  return Status::Ok();
}

Result<v1::SubmitResponse> LoomApi::Submit(const v1::SubmitRequest& req, const Principal& who) {
  v1::SubmitBatchRequest batch;
  *batch.add_tasks() = req;
  LOOM_ASSIGN_OR_RETURN(auto ids, SubmitBatch(batch, who));
  v1::SubmitResponse resp;
  resp.set_task_id(ids.task_ids(0));
  resp.set_endpoint(ids.endpoints(0));
  return resp;
}

Result<v1::SubmitBatchResponse> LoomApi::SubmitBatch(const v1::SubmitBatchRequest& req, const Principal& who) {
  const int64_t received = NowNanos();
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (req.tasks_size() == 0) return InvalidArgument("the batch holds no tasks");
  if (req.tasks_size() > limits_.max_batch) {
    return ResourceExhausted("a batch of " + std::to_string(req.tasks_size()) + " tasks exceeds the limit of " +
                             std::to_string(limits_.max_batch) + " (max_batch); split it");
  }
  std::vector<NewTask> tasks(req.tasks_size());
  BatchRouting routing;
  for (int i = 0; i < req.tasks_size(); ++i) {
    Status s = Validate(req.tasks(i), who, &tasks[i], received, &routing);
    if (!s.ok()) {
      if (req.tasks_size() == 1) return s;
      return Status(s.code(), "task " + std::to_string(i) + ": " + s.message());
    }
  }
  // Credit taken per endpoint: (session, amount). The first tasks of each endpoint, up to its
  // credit, may go out at once.
  std::map<std::string, CreditGrant> taken;
  if (credit_ != nullptr) {
    std::map<std::string, int64_t> per_endpoint;
    for (const auto& t : tasks) ++per_endpoint[t.endpoint];
    for (const auto& [ep, n] : per_endpoint) {
      auto got = credit_->Take(ep, n);
      if (got.n > 0) taken[ep] = got;
    }
    std::map<std::string, int64_t> left;
    for (const auto& [ep, got] : taken) left[ep] = got.n;
    for (auto& t : tasks) {
      auto it = left.find(t.endpoint);
      if (it != left.end() && it->second > 0) {
        t.direct = true;
        t.lease_epoch = taken[t.endpoint].lease_epoch;
        --it->second;
      }
    }
  }
  // Reserved before the commit so that concurrent submits cannot pass the quota together.
  const int64_t reserved = static_cast<int64_t>(tasks.size());
  if (security_.quotas != nullptr) {
    Status q = security_.quotas->ReserveTasks(who.user, reserved);
    if (!q.ok()) {
      for (auto& [ep, got] : taken) credit_->Return(ep, got.session, got.n);
      return q;
    }
  }
  // Before the commit: once committed a task may be dispatched, and finish, at any moment.
  std::vector<std::string> new_ids;
  new_ids.reserve(tasks.size());
  for (const auto& t : tasks) new_ids.push_back(t.id);
  hub_->Expect(new_ids, who.user);
  SubmitOutcome outcome;
  Status committed = Commit(&tasks, &outcome);
  const int64_t committed_ns = NowNanos();
  if (!committed.ok()) {
    hub_->Unexpect(new_ids);
  } else {
    std::vector<std::string> not_created;  // retried submits: the earlier tasks stand
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (!outcome.existing_ids[i].empty()) not_created.push_back(new_ids[i]);
    }
    if (!not_created.empty()) hub_->Unexpect(not_created);
  }
  std::map<std::string, std::vector<v1::TaskSpec>> sent;
  std::set<std::string> queued;
  v1::SubmitBatchResponse resp;
  int64_t created = 0;
  for (size_t i = 0; i < tasks.size(); ++i) {
    auto& t = tasks[i];
    if (committed.ok() && !outcome.existing_ids[i].empty()) {
      resp.add_task_ids(outcome.existing_ids[i]);  // a retried submit: the earlier task stands
      resp.add_endpoints("");                      // the earlier task's endpoint is in its record
      continue;
    }
    resp.add_endpoints(t.endpoint);
    ++created;
    if (committed.ok() && outcome.dispatched[i]) {
      sent[t.endpoint].push_back(std::move(t.spec));
    } else {
      queued.insert(t.endpoint);
    }
    resp.add_task_ids(std::move(t.id));
  }
  for (const auto& [ep, got] : taken) {
    const int64_t used = sent.contains(ep) ? static_cast<int64_t>(sent[ep].size()) : 0;
    if (got.n > used) credit_->Return(ep, got.session, got.n - used);
  }
  if (security_.quotas != nullptr) {
    // A failed commit created nothing; a retried submit (idempotency key) nothing new.
    security_.quotas->ReleaseTasks(who.user, committed.ok() ? reserved - created : reserved);
  }
  LOOM_RETURN_IF_ERROR(committed);
  if (metrics_ != nullptr) metrics_->TasksSubmitted(created);
  for (auto& [ep, specs] : sent) {
    notifier_->TasksDispatched(ep, taken[ep].session, taken[ep].lease_epoch, std::move(specs), committed_ns);
  }
  if (!queued.empty()) notifier_->TasksQueued(std::vector<std::string>(queued.begin(), queued.end()));
  return resp;
}

Status LoomApi::Commit(std::vector<NewTask>* tasks, SubmitOutcome* outcome) {
  PendingCommit mine{tasks, outcome, Status::Ok()};
  std::unique_lock lock(commit_mu_);
  commit_queue_.push_back(&mine);
  commit_cv_.wait(lock, [&] { return mine.done || commit_queue_.front() == &mine; });
  if (mine.done) return mine.status;  // a leader wrote our tasks with its own
  // We lead: write every queued caller's tasks in one store call.
  std::vector<PendingCommit*> group(commit_queue_.begin(), commit_queue_.end());
  lock.unlock();
  Status s;
  if (group.size() == 1) {
    s = store_->SubmitTasks(*tasks, NowNanos(), outcome, limits_.max_queue_depth);
  } else {
    // Move the tasks into one write, and back to their callers afterwards.
    std::vector<NewTask> all;
    for (auto* p : group) std::move(p->tasks->begin(), p->tasks->end(), std::back_inserter(all));
    SubmitOutcome all_outcome;
    s = store_->SubmitTasks(all, NowNanos(), &all_outcome, limits_.max_queue_depth);
    size_t k = 0;
    for (auto* p : group) {
      p->outcome->dispatched.assign(p->tasks->size(), false);
      p->outcome->existing_ids.assign(p->tasks->size(), "");
      for (size_t i = 0; i < p->tasks->size(); ++i, ++k) {
        (*p->tasks)[i] = std::move(all[k]);
        if (s.ok()) {
          p->outcome->dispatched[i] = all_outcome.dispatched[k];
          p->outcome->existing_ids[i] = std::move(all_outcome.existing_ids[k]);
        }
      }
    }
    if (s.code() == StatusCode::kResourceExhausted) {
      // One caller's batch overfilled a queue: that caller alone must hear it.
      for (auto* p : group) {
        p->status = store_->SubmitTasks(*p->tasks, NowNanos(), p->outcome, limits_.max_queue_depth);
      }
      lock.lock();
      for (auto* p : group) {
        p->done = true;
        commit_queue_.pop_front();
      }
      commit_cv_.notify_all();
      return mine.status;
    }
  }
  lock.lock();
  for (auto* p : group) {
    p->status = s;
    p->done = true;
    commit_queue_.pop_front();
  }
  // Wake the followers, and the next leader if more callers queued meanwhile.
  commit_cv_.notify_all();
  return s;
}

Result<v1::GetTasksResponse> LoomApi::GetTasks(const v1::GetTasksRequest& req, const Principal& who,
                                               const std::function<bool()>& cancelled) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (req.task_ids_size() > limits_.max_wait_ids) {
    return ResourceExhausted("asked for " + std::to_string(req.task_ids_size()) + " tasks; the limit is " +
                             std::to_string(limits_.max_wait_ids));
  }
  std::vector<std::string> ids(req.task_ids().begin(), req.task_ids().end());
  // A long poll subscribes before it reads, so a task finishing in between is not missed.
  std::shared_ptr<CompletionHub::Subscription> sub;
  if (req.wait_ms() > 0) sub = hub_->Subscribe(ids);
  struct Unsub {
    CompletionHub* hub;
    std::shared_ptr<CompletionHub::Subscription> sub;
    ~Unsub() {
      if (sub) hub->Unsubscribe(sub);
    }
  } unsub{hub_, sub};
  LOOM_ASSIGN_OR_RETURN(auto recs, store_->GetTasks(ids, req.include_args()));
  for (size_t i = 0; i < recs.size(); ++i) {
    // Another tenant's task answers exactly like an unknown one.
    if (!recs[i] || !Owns(*recs[i], who)) return NotFound(UnknownTaskMessage(ids[i]));
  }
  if (sub) {
    std::map<std::string, size_t> pending;
    for (size_t i = 0; i < recs.size(); ++i) {
      if (!IsTerminal(recs[i]->state())) pending.emplace(ids[i], i);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(req.wait_ms());
    while (!pending.empty() && std::chrono::steady_clock::now() < deadline) {
      if (cancelled()) return Status(StatusCode::kCancelled, "the client went away");
      // Wake up now and then to notice a client that went away.
      for (auto& r : sub->Take(std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)))) {
        auto it = pending.find(r.id());
        if (it == pending.end()) continue;
        v1::TaskRecord& slot = *recs[it->second];
        // Published records carry no arguments: keep the ones read above.
        if (req.include_args()) {
          *r.mutable_args() = slot.args();
          *r.mutable_kwargs() = slot.kwargs();
        }
        slot = std::move(r);
        pending.erase(it);
      }
    }
  }
  v1::GetTasksResponse resp;
  for (auto& r : recs) *resp.add_tasks() = std::move(*r);
  return resp;
}

Status LoomApi::WaitResults(const v1::WaitResultsRequest& req, const Principal& who, const BurstWriter& write,
                            const std::function<bool()>& cancelled) {
  using Clock = std::chrono::steady_clock;
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (req.task_ids_size() > limits_.max_wait_ids) {
    return ResourceExhausted("asked to wait for " + std::to_string(req.task_ids_size()) + " tasks; the limit is " +
                             std::to_string(limits_.max_wait_ids));
  }
  // The ids not yet written back, each once (views of the request's strings, which outlive this
  // call): a flat set, since a wait may name up to max_wait_ids and each record erases one.
  absl::flat_hash_set<std::string_view> pending;
  pending.reserve(static_cast<size_t>(req.task_ids_size()));
  std::vector<std::string> ids;
  ids.reserve(static_cast<size_t>(req.task_ids_size()));
  for (const auto& id : req.task_ids()) {
    if (pending.insert(id).second) ids.push_back(id);
  }
  const auto deadline =
      req.timeout_ms() > 0 ? Clock::now() + std::chrono::milliseconds(req.timeout_ms()) : Clock::time_point::max();
  auto sub = hub_->Subscribe(ids);
  struct Unsub {
    CompletionHub* hub;
    std::shared_ptr<CompletionHub::Subscription> sub;
    ~Unsub() { hub->Unsubscribe(sub); }
  } unsub{hub_, sub};
  // Subscribed first, then read: a task finishing in between is seen at least once. The hub
  // knows the owners of the unfinished tasks submitted here, and holds the records of tasks that
  // finished while nobody watched. Of the other tasks only the state and owner are read from
  // the store; whole records only for those already finished.
  auto known = hub_->Claim(ids);
  // The records that are ready together go to `write` as one burst.
  Burst burst;
  std::vector<std::string> unknown;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (known[i].owner) {
      if (!Owns(*known[i].owner, who)) return NotFound(UnknownTaskMessage(ids[i]));
    } else if (!known[i].record) {
      unknown.push_back(ids[i]);
    } else if (!Owns(*known[i].record, who)) {
      return NotFound(UnknownTaskMessage(ids[i]));
    } else if (pending.erase(ids[i])) {
      burst.push_back(&*known[i].record);
    }
  }
  std::vector<std::optional<v1::TaskRecord>> recs;
  if (!unknown.empty()) {
    LOOM_ASSIGN_OR_RETURN(auto briefs, store_->GetTaskBriefs(unknown));
    std::vector<std::string> finished;
    for (size_t i = 0; i < briefs.size(); ++i) {
      if (!briefs[i] || !Owns(briefs[i]->owner, who)) return NotFound(UnknownTaskMessage(unknown[i]));
      if (IsTerminal(briefs[i]->state)) finished.push_back(unknown[i]);
    }
    if (!finished.empty()) {
      LOOM_ASSIGN_OR_RETURN(recs, store_->GetTasks(finished, false));
      for (size_t i = 0; i < recs.size(); ++i) {
        // Deleted (or expired) since: it will not be published either.
        if (!recs[i]) return NotFound(UnknownTaskMessage(finished[i]));
        if (pending.erase(recs[i]->id())) burst.push_back(&*recs[i]);
      }
    }
  }
  if (!burst.empty() && !write(burst)) return Status(StatusCode::kCancelled, "the client went away");
  while (!pending.empty()) {
    if (cancelled()) return Status(StatusCode::kCancelled, "the client cancelled the wait");
    const auto now = Clock::now();
    if (now >= deadline) {
      return DeadlineExceeded(std::to_string(pending.size()) + " task(s) did not finish within " +
                              std::to_string(req.timeout_ms()) + " ms");
    }
    // Wake up now and then to notice a client that went away.
    auto batch = sub->Take(std::min(deadline, now + std::chrono::milliseconds(200)));
    burst.clear();
    for (auto& r : batch) {
      if (pending.erase(r.id())) burst.push_back(&r);
    }
    if (!burst.empty() && !write(burst)) return Status(StatusCode::kCancelled, "the client went away");
  }
  return Status::Ok();
}

Result<v1::CancelResponse> LoomApi::Cancel(const v1::CancelRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  {
    LOOM_ASSIGN_OR_RETURN(auto found, store_->GetTasks({req.task_id()}, false));
    if (found.empty() || !found[0] || !Owns(*found[0], who)) return NotFound(UnknownTaskMessage(req.task_id()));
  }
  const int64_t now = NowNanos();
  LOOM_ASSIGN_OR_RETURN(auto rec, store_->CancelTask(req.task_id(), now));
  if (!rec) return NotFound(UnknownTaskMessage(req.task_id()));
  // Published and counted once: by the call that cancelled it (stamped with this call's time),
  // not by a repeat that finds it already cancelled.
  if (rec->state() == v1::TASK_STATE_CANCELLED && rec->timestamps_size() > 0 &&
      rec->timestamps(rec->timestamps_size() - 1).unix_nanos() == now) {
    if (metrics_ != nullptr) metrics_->TasksFinished({*rec});
    hub_->Publish({*rec});
    notifier_->TasksCancelled(rec->endpoint(), {rec->id()});
  }
  v1::CancelResponse resp;
  *resp.mutable_task() = std::move(*rec);
  return resp;
}

Result<v1::DeleteTasksResponse> LoomApi::DeleteTasks(const v1::DeleteTasksRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (req.task_ids_size() > limits_.max_wait_ids) {
    return ResourceExhausted("asked to delete " + std::to_string(req.task_ids_size()) + " tasks; the limit is " +
                             std::to_string(limits_.max_wait_ids));
  }
  std::vector<std::string> ids(req.task_ids().begin(), req.task_ids().end());
  LOOM_ASSIGN_OR_RETURN(auto briefs, store_->GetTaskBriefs(ids));
  std::vector<std::string> mine;  // unknown ids, and other tenants' tasks, are skipped alike
  for (size_t i = 0; i < briefs.size(); ++i) {
    if (briefs[i] && Owns(briefs[i]->owner, who)) mine.push_back(ids[i]);
  }
  LOOM_ASSIGN_OR_RETURN(int64_t n, store_->DeleteTasks(mine));
  hub_->Forget(mine);
  v1::DeleteTasksResponse resp;
  resp.set_deleted(static_cast<int32_t>(n));
  return resp;
}

Result<v1::EndpointRecord> LoomApi::UpdateEndpoint(const v1::UpdateEndpointRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  LOOM_ASSIGN_OR_RETURN(auto ep, store_->GetEndpoint(req.id()));
  if (!ep || !MayUseEndpoint(*ep, who)) return NotFound(UnknownEndpointMessage(req.id()));
  if (!who.admin && ep->owner() != who.user) {
    return PermissionDenied("only the owner of endpoint '" + req.id() + "' (" + ep->owner() + ") may change it");
  }
  LOOM_RETURN_IF_ERROR(CheckAccessLists(req.allowed_users().items(), req.allowed_functions().items()));
  if (!req.curve_public_key().empty())
    LOOM_RETURN_IF_ERROR(curve::CheckKey(req.curve_public_key(), "curve_public_key"));
  LOOM_RETURN_IF_ERROR(CheckKeyUnused(req.curve_public_key(), req.id()));
  if (req.has_allowed_users()) *ep->mutable_allowed_users() = req.allowed_users().items();
  if (req.has_allowed_functions()) *ep->mutable_allowed_functions() = req.allowed_functions().items();
  if (!req.curve_public_key().empty()) ep->set_curve_public_key(req.curve_public_key());
  LOOM_RETURN_IF_ERROR(store_->PutEndpointAccess(*ep));
  CacheEndpoint(*ep);
  notifier_->EndpointChanged(*ep);
  return *ep;
}

Result<v1::CreateTokenResponse> LoomApi::CreateToken(const v1::CreateTokenRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (security_.tokens == nullptr) return Status(StatusCode::kUnimplemented, "this service does not use tokens");
  const std::string user = req.user().empty() ? who.user : req.user();
  if (!ValidName(user)) return InvalidArgument("user name '" + user + "' is invalid: use " + kNameRule);
  if ((user != who.user || req.admin()) && !who.admin) {
    return PermissionDenied("only an admin may create tokens for another user or admin tokens");
  }
  if (req.ttl_seconds() < 0) return InvalidArgument("ttl_seconds is negative: use 0 for a token that never expires");
  if (req.description().size() > 1024) return InvalidArgument("the description is over 1024 bytes");
  return security_.tokens->Create(user, req.admin(), std::chrono::seconds(req.ttl_seconds()), req.description());
}

Result<v1::RevokeTokenResponse> LoomApi::RevokeToken(const v1::RevokeTokenRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (security_.tokens == nullptr) return Status(StatusCode::kUnimplemented, "this service does not use tokens");
  LOOM_ASSIGN_OR_RETURN(auto info, security_.tokens->Get(req.id()));
  // Another user's token answers like an unknown one.
  if (!info || (!who.admin && info->user() != who.user)) {
    return NotFound("token '" + req.id() + "' is not known (never created, or already revoked)");
  }
  LOOM_RETURN_IF_ERROR(security_.tokens->Revoke(req.id()));
  return v1::RevokeTokenResponse();
}

Result<v1::ListTokensResponse> LoomApi::ListTokens(const v1::ListTokensRequest& req, const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  if (security_.tokens == nullptr) return Status(StatusCode::kUnimplemented, "this service does not use tokens");
  const std::string user = req.user().empty() ? who.user : req.user();
  if (user != who.user && !who.admin) return PermissionDenied("only an admin may list another user's tokens");
  LOOM_ASSIGN_OR_RETURN(auto tokens, security_.tokens->List(user));
  v1::ListTokensResponse resp;
  for (auto& t : tokens) *resp.add_tokens() = std::move(t);
  return resp;
}

Result<v1::WhoAmIResponse> LoomApi::WhoAmI(const Principal& who) {
  LOOM_RETURN_IF_ERROR(Admit(who));
  v1::WhoAmIResponse resp;
  resp.set_user(who.user);
  resp.set_admin(who.admin);
  return resp;
}

}  // namespace loom::service
