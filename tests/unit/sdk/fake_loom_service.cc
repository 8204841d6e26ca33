#include "tests/unit/sdk/fake_loom_service.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <set>

#include "common/task_state.h"
#include "common/util.h"

namespace loom::sdk_test {

namespace {

void Stamp(v1::TaskRecord& r, v1::TaskState state) {
  v1::Timestamp* t = r.add_timestamps();
  t->set_stage(TaskStateName(state));
  t->set_unix_nanos(NowNanos());
}

}  // namespace

// ---------------------------------------------------------------- FakeLoomState

void FakeLoomState::set_on_submit(std::function<void(v1::TaskRecord&)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  on_submit_ = std::move(hook);
}

void FakeLoomState::set_duplicate_results(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  duplicate_results_ = on;
}

void FakeLoomState::FailNextSubmits(int n, grpc::StatusCode code, bool after_commit) {
  std::lock_guard<std::mutex> lock(mu_);
  failing_submits_ = n;
  submit_failure_ = code;
  fail_after_commit_ = after_commit;
}

void FakeLoomState::AddFunction(const std::string& name, const std::string& kernel) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::Function& f = functions_[name];
  f.set_name(name);
  f.set_kernel(kernel);
}

void FakeLoomState::CompleteLocked(v1::TaskRecord& r, v1::TaskState state) {
  r.set_state(state);
  Stamp(r, state);
  completions_.push_back(r.id());
}

void FakeLoomState::Complete(const std::string& id, const Value& result) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    v1::TaskRecord& r = tasks_.at(id);
    *r.mutable_result() = result;
    CompleteLocked(r, v1::TASK_STATE_SUCCESS);
  }
  NotifyAll();
}

void FakeLoomState::Fail(const std::string& id, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    v1::TaskRecord& r = tasks_.at(id);
    r.set_error(error);
    CompleteLocked(r, v1::TASK_STATE_FAILED);
  }
  NotifyAll();
}

void FakeLoomState::NotifyAll() { cv_.notify_all(); }

bool FakeLoomState::WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, pred);
}

std::vector<std::string> FakeLoomState::task_ids() const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_;
}

v1::TaskRecord FakeLoomState::task(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.at(id);
}

bool FakeLoomState::has_task(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.count(id) != 0;
}

int FakeLoomState::submit_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return submit_calls_;
}

std::vector<size_t> FakeLoomState::submit_batch_sizes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return submit_batch_sizes_;
}

std::vector<std::vector<std::string>> FakeLoomState::wait_requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return wait_requests_;
}

int FakeLoomState::active_waits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_waits_;
}

// ---------------------------------------------------------------- FakeLoomApi

void FakeLoomApi::BeginShutdown() {
  shutting_down_ = true;
  state_.NotifyAll();
}

grpc::Status FakeLoomApi::RegisterFunction(grpc::ServerContext*, const v1::RegisterFunctionRequest* request,
                                           v1::RegisterFunctionResponse* response) {
  std::lock_guard<std::mutex> lock(state_.mu_);
  const v1::Function& f = request->function();
  auto it = state_.functions_.find(f.name());
  if (it != state_.functions_.end()) {
    if (it->second.kernel() != f.kernel()) {
      return {grpc::StatusCode::ALREADY_EXISTS,
              "function '" + f.name() + "' is already registered with kernel " + it->second.kernel()};
    }
    *response->mutable_function() = it->second;
    response->set_created(false);
    return grpc::Status::OK;
  }
  v1::Function& stored = state_.functions_[f.name()];
  stored = f;
  stored.set_created_unix_nanos(NowNanos());
  *response->mutable_function() = stored;
  response->set_created(true);
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::GetFunction(grpc::ServerContext*, const v1::GetFunctionRequest* request,
                                      v1::Function* response) {
  std::lock_guard<std::mutex> lock(state_.mu_);
  auto it = state_.functions_.find(request->name());
  if (it == state_.functions_.end()) {
    std::string known;
    for (const auto& [name, unused] : state_.functions_) known += (known.empty() ? "" : ", ") + name;
    return {grpc::StatusCode::NOT_FOUND, "function '" + request->name() + "' is not registered; registered: " + known};
  }
  *response = it->second;
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::ListFunctions(grpc::ServerContext*, const v1::ListFunctionsRequest*,
                                        v1::ListFunctionsResponse* response) {
  std::lock_guard<std::mutex> lock(state_.mu_);
  for (const auto& [name, f] : state_.functions_) *response->add_functions() = f;
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::CreateEndpoint(grpc::ServerContext*, const v1::CreateEndpointRequest* request,
                                         v1::EndpointRecord* response) {
  std::lock_guard<std::mutex> lock(state_.mu_);
  const std::string id = request->id().empty() ? NewId() : request->id();
  if (state_.endpoints_.count(id) != 0) {
    return {grpc::StatusCode::ALREADY_EXISTS, "endpoint '" + id + "' exists"};
  }
  v1::EndpointRecord& e = state_.endpoints_[id];
  e.set_id(id);
  e.set_name(request->name());
  e.set_status(v1::ENDPOINT_STATUS_NEVER_CONNECTED);
  *response = e;
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::ListEndpoints(grpc::ServerContext*, const v1::ListEndpointsRequest*,
                                        v1::ListEndpointsResponse* response) {
  std::lock_guard<std::mutex> lock(state_.mu_);
  for (const auto& [id, e] : state_.endpoints_) *response->add_endpoints() = e;
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::GetEndpoint(grpc::ServerContext*, const v1::GetEndpointRequest* request,
                                      v1::EndpointRecord* response) {
  std::lock_guard<std::mutex> lock(state_.mu_);
  auto it = state_.endpoints_.find(request->id());
  if (it == state_.endpoints_.end()) {
    return {grpc::StatusCode::NOT_FOUND, "endpoint '" + request->id() + "' does not exist"};
  }
  *response = it->second;
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::AddTaskLocked(const v1::SubmitRequest& request, std::string* id) {
  auto fn = state_.functions_.find(request.function());
  if (fn == state_.functions_.end()) {
    return {grpc::StatusCode::NOT_FOUND, "function '" + request.function() + "' is not registered"};
  }
  if (!request.idempotency_key().empty()) {
    auto seen = state_.keys_.find(request.idempotency_key());
    if (seen != state_.keys_.end()) {
      *id = seen->second;  // a repeated submit: the earlier task stands
      return grpc::Status::OK;
    }
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "task-%04d", state_.next_id_++);
  *id = buf;
  if (!request.idempotency_key().empty()) state_.keys_[request.idempotency_key()] = *id;
  v1::TaskRecord& r = state_.tasks_[*id];
  r.set_id(*id);
  r.set_function(request.function());
  r.set_endpoint(request.endpoint());
  r.set_state(v1::TASK_STATE_RECEIVED);
  *r.mutable_args() = request.args();
  *r.mutable_kwargs() = request.kwargs();
  r.set_idempotency_key(request.idempotency_key());
  r.set_max_attempts(request.max_attempts() > 0      ? request.max_attempts()
                     : fn->second.max_attempts() > 0 ? fn->second.max_attempts()
                                                     : FakeLoomState::kDefaultMaxAttempts);
  r.set_timeout_ms(request.timeout_ms() > 0 ? request.timeout_ms() : fn->second.timeout_ms());
  Stamp(r, v1::TASK_STATE_RECEIVED);
  state_.order_.push_back(*id);
  if (state_.on_submit_) {
    state_.on_submit_(r);
    if (IsTerminal(r.state())) {
      Stamp(r, r.state());
      state_.completions_.push_back(*id);
    }
  }
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::AddTasks(const std::vector<const v1::SubmitRequest*>& tasks, std::vector<std::string>* ids,
                                   bool batch) {
  grpc::Status st;
  {
    std::lock_guard<std::mutex> lock(state_.mu_);
    ++state_.submit_calls_;
    if (batch) state_.submit_batch_sizes_.push_back(tasks.size());
    const bool fail = state_.failing_submits_ > 0;
    if (fail) --state_.failing_submits_;
    const grpc::Status injected(state_.submit_failure_, "fake service: submit failed on purpose (FailNextSubmits)");
    if (!fail || state_.fail_after_commit_) {
      for (const v1::SubmitRequest* t : tasks) {
        ids->emplace_back();
        st = AddTaskLocked(*t, &ids->back());
        if (!st.ok()) break;
      }
    }
    if (fail) st = injected;
  }
  state_.NotifyAll();
  return st;
}

grpc::Status FakeLoomApi::Submit(grpc::ServerContext*, const v1::SubmitRequest* request, v1::SubmitResponse* response) {
  std::vector<std::string> ids;
  grpc::Status st = AddTasks({request}, &ids, /*batch=*/false);
  if (st.ok()) response->set_task_id(ids.front());
  return st;
}

grpc::Status FakeLoomApi::SubmitBatch(grpc::ServerContext*, const v1::SubmitBatchRequest* request,
                                      v1::SubmitBatchResponse* response) {
  std::vector<const v1::SubmitRequest*> tasks;
  for (const auto& t : request->tasks()) tasks.push_back(&t);
  std::vector<std::string> ids;
  grpc::Status st = AddTasks(tasks, &ids, /*batch=*/true);
  if (st.ok()) {
    for (auto& id : ids) response->add_task_ids(std::move(id));
  }
  return st;
}

grpc::Status FakeLoomApi::GetTasks(grpc::ServerContext* ctx, const v1::GetTasksRequest* request,
                                   v1::GetTasksResponse* response) {
  std::unique_lock<std::mutex> lock(state_.mu_);
  for (const auto& id : request->task_ids()) {
    if (state_.tasks_.count(id) == 0) return {grpc::StatusCode::NOT_FOUND, "task '" + id + "' does not exist"};
  }
  if (request->wait_ms() > 0) {
    // Long poll, as the service does: until every task is terminal or wait_ms passed.
    state_.wait_requests_.emplace_back(request->task_ids().begin(), request->task_ids().end());
    ++state_.active_waits_;
    state_.NotifyAll();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(request->wait_ms());
    auto all_done = [&] {
      for (const auto& id : request->task_ids()) {
        auto it = state_.tasks_.find(id);
        if (it != state_.tasks_.end() && !IsTerminal(it->second.state())) return false;
      }
      return true;
    };
    while (!all_done() && !shutting_down_ && !ctx->IsCancelled() && std::chrono::steady_clock::now() < deadline) {
      state_.cv_.wait_for(lock, std::chrono::milliseconds(5));
    }
    --state_.active_waits_;
    if (shutting_down_) return {grpc::StatusCode::UNAVAILABLE, "fake service is shutting down"};
  }
  for (const auto& id : request->task_ids()) {
    auto it = state_.tasks_.find(id);  // deleted during the wait
    if (it == state_.tasks_.end()) return {grpc::StatusCode::NOT_FOUND, "task '" + id + "' does not exist"};
    v1::TaskRecord* r = response->add_tasks();
    *r = it->second;
    if (!request->include_args()) {
      r->clear_args();
      r->clear_kwargs();
    }
  }
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::WaitResults(grpc::ServerContext* ctx, const v1::WaitResultsRequest* request,
                                      grpc::ServerWriter<v1::TaskRecord>* writer) {
  return Follow(ctx, request, [&](const std::vector<v1::TaskRecord>& records) {
    for (const auto& r : records) {
      if (!writer->Write(r)) return false;
    }
    return true;
  });
}

grpc::Status FakeLoomApi::StreamResults(grpc::ServerContext* ctx, const v1::WaitResultsRequest* request,
                                        grpc::ServerWriter<v1::TaskRecords>* writer) {
  return Follow(ctx, request, [&](const std::vector<v1::TaskRecord>& records) {
    v1::TaskRecords message;
    for (const auto& r : records) *message.add_tasks() = r;
    return writer->Write(message);
  });
}

grpc::Status FakeLoomApi::Follow(grpc::ServerContext* ctx, const v1::WaitResultsRequest* request,
                                 const std::function<bool(const std::vector<v1::TaskRecord>&)>& write) {
  std::unique_lock<std::mutex> lock(state_.mu_);
  std::set<std::string> want(request->task_ids().begin(), request->task_ids().end());
  for (const auto& id : want) {
    if (state_.tasks_.count(id) == 0) return {grpc::StatusCode::NOT_FOUND, "task '" + id + "' does not exist"};
  }
  state_.wait_requests_.emplace_back(request->task_ids().begin(), request->task_ids().end());
  ++state_.active_waits_;
  state_.NotifyAll();
  const auto deadline = request->timeout_ms() > 0
                            ? std::chrono::steady_clock::now() + std::chrono::milliseconds(request->timeout_ms())
                            : std::chrono::steady_clock::time_point::max();
  grpc::Status result = grpc::Status::OK;
  size_t cursor = 0;  // into the completion log: already-finished tasks come first, in order
  while (!want.empty()) {
    // Everything finished since the last round goes out as one burst.
    std::vector<v1::TaskRecord> ready;
    while (cursor < state_.completions_.size()) {
      const std::string& id = state_.completions_[cursor++];
      if (want.erase(id) == 0) continue;
      auto it = state_.tasks_.find(id);
      if (it == state_.tasks_.end()) continue;  // deleted since it finished
      const int copies = state_.duplicate_results_ ? 2 : 1;
      for (int i = 0; i < copies; ++i) ready.push_back(it->second);
    }
    bool write_failed = false;
    if (!ready.empty()) {
      lock.unlock();
      write_failed = !write(ready);
      lock.lock();
    }
    if (write_failed) {
      result = {grpc::StatusCode::CANCELLED, "the client went away"};
      break;
    }
    if (want.empty()) break;
    if (shutting_down_) {
      result = {grpc::StatusCode::UNAVAILABLE, "fake service is shutting down"};
      break;
    }
    if (ctx->IsCancelled()) {
      result = {grpc::StatusCode::CANCELLED, "cancelled"};
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;  // OK with tasks left: the timeout passed
    // The sync API has no cancellation callback, so cancellation is polled.
    state_.cv_.wait_for(lock, std::chrono::milliseconds(5));
  }
  --state_.active_waits_;
  lock.unlock();
  state_.NotifyAll();
  return result;
}

grpc::Status FakeLoomApi::Cancel(grpc::ServerContext*, const v1::CancelRequest* request, v1::CancelResponse* response) {
  {
    std::lock_guard<std::mutex> lock(state_.mu_);
    auto it = state_.tasks_.find(request->task_id());
    if (it == state_.tasks_.end()) {
      return {grpc::StatusCode::NOT_FOUND, "task '" + request->task_id() + "' does not exist"};
    }
    if (!IsTerminal(it->second.state())) {
      it->second.set_error("cancelled by the user");
      state_.CompleteLocked(it->second, v1::TASK_STATE_CANCELLED);
    }
    *response->mutable_task() = it->second;
  }
  state_.NotifyAll();
  return grpc::Status::OK;
}

grpc::Status FakeLoomApi::DeleteTasks(grpc::ServerContext*, const v1::DeleteTasksRequest* request,
                                      v1::DeleteTasksResponse* response) {
  std::lock_guard<std::mutex> lock(state_.mu_);
  for (const auto& id : request->task_ids()) {
    auto it = state_.tasks_.find(id);
    if (it != state_.tasks_.end() && !IsTerminal(it->second.state())) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              "task '" + id + "' has not finished; cancel it before deleting it"};
    }
  }
  int deleted = 0;
  for (const auto& id : request->task_ids()) {
    auto it = state_.tasks_.find(id);
    if (it == state_.tasks_.end()) continue;  // unknown, or listed twice
    if (!it->second.idempotency_key().empty()) state_.keys_.erase(it->second.idempotency_key());
    state_.tasks_.erase(it);
    state_.order_.erase(std::remove(state_.order_.begin(), state_.order_.end(), id), state_.order_.end());
    ++deleted;
  }
  response->set_deleted(deleted);
  return grpc::Status::OK;
}

// ---------------------------------------------------------------- FakeLoomServer

int FakeLoomServer::Start(int port) {
  api_ = std::make_unique<FakeLoomApi>(state_);
  grpc::ServerBuilder builder;
  int selected = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(), &selected);
  builder.RegisterService(api_.get());
  server_ = builder.BuildAndStart();
  port_ = server_ ? selected : 0;
  return port_;
}

void FakeLoomServer::Stop(bool graceful) {
  if (!server_) return;
  if (graceful) api_->BeginShutdown();
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
  server_.reset();
  api_.reset();
}

void AutoComplete(v1::TaskRecord& r) {
  if (r.function() == "add") {
    r.mutable_result()->set_int_value(r.args(0).int_value() + r.args(1).int_value());
    r.set_state(v1::TASK_STATE_SUCCESS);
  } else if (r.function() == "fail") {
    r.set_error("boom");
    r.set_state(v1::TASK_STATE_FAILED);
  }
}

}  // namespace loom::sdk_test
