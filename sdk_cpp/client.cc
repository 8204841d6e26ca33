#include "loom/client.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/client_interceptor.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "common/task_state.h"
#include "sdk_cpp/internal.h"
#include "sdk_cpp/result_watcher.h"

namespace loom {

using sdk_internal::FromGrpc;
using Clock = std::chrono::system_clock;

namespace {

// One unary call with a deadline of rpc_timeout from now.
template <typename Fn>
Status Unary(const ClientOptions& options, Fn&& fn) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Clock::now() + options.rpc_timeout);
  return FromGrpc(fn(&ctx));
}

// Runs a submit call (fn: one unary call with a fresh context), sending it again after
// UNAVAILABLE or DEADLINE_EXCEEDED only when `keyed`: every task it carries has an idempotency
// key, so a repeat cannot create a second task.
template <typename Fn>
Status SubmitWithRetries(const ClientOptions& options, bool keyed, Fn&& fn) {
  Status st = Unary(options, fn);
  for (int retry = 1; keyed && retry <= options.submit_retries && sdk_internal::IsRetryableSubmitError(st.code());
       ++retry) {
    std::this_thread::sleep_for(sdk_internal::JitteredSubmitRetryBackoff(retry));
    st = Unary(options, fn);
  }
  return st;
}

// now + timeout, saturating instead of overflowing for huge timeouts.
Clock::time_point DeadlineAfter(std::chrono::milliseconds timeout) {
  const auto now = Clock::now();
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now);
  if (timeout >= room) return Clock::time_point::max();
  return now + std::max(timeout, std::chrono::milliseconds(0));
}

// Adds "authorization: Bearer <token>" to every call on the channel, whatever made its context
// (Client, Executor, ResultWatcher). An interceptor rather than call credentials: gRPC sends call
// credentials only over TLS, and a loopback fabric runs in plaintext.
class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class BearerInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(std::string token) : header_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(&header_);
  }

 private:
  const std::string header_;  // lives as long as the channel, which owns the factory
};

}  // namespace

std::string TokenFromEnvironment() {
  if (const char* t = std::getenv("LOOM_TOKEN"); t != nullptr && *t != '\0') return t;
  if (const char* f = std::getenv("LOOM_TOKEN_FILE"); f != nullptr && *f != '\0') {
    std::ifstream in(f);
    std::string line;
    if (in && std::getline(in, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      return line;
    }
  }
  return "";
}

v1::SubmitRequest MakeSubmitRequest(const std::string& endpoint, const std::string& function, std::vector<Value> args,
                                    const Kwargs& kwargs, const SubmitOptions& options) {
  v1::SubmitRequest request;
  request.set_endpoint(endpoint);
  request.set_function(function);
  request.mutable_args()->Reserve(static_cast<int>(args.size()));
  for (auto& a : args) *request.add_args() = std::move(a);
  for (const auto& [k, v] : kwargs) (*request.mutable_kwargs())[k] = v;
  request.set_idempotency_key(options.idempotency_key);
  request.set_max_attempts(options.max_attempts);
  request.set_timeout_ms(options.timeout_ms);
  request.set_failover(options.failover);
  request.set_trace(options.trace);
  return request;
}

std::vector<StageTiming> Timeline(const v1::TaskRecord& record) {
  std::vector<StageTiming> out;
  out.reserve(static_cast<size_t>(record.timestamps_size()));
  for (const auto& t : record.timestamps()) out.push_back({t.stage(), t.unix_nanos(), 0, 0});
  std::stable_sort(out.begin(), out.end(),
                   [](const StageTiming& a, const StageTiming& b) { return a.unix_nanos < b.unix_nanos; });
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].since_first_us = static_cast<double>(out[i].unix_nanos - out.front().unix_nanos) / 1e3;
    out[i].since_previous_us = i == 0 ? 0 : static_cast<double>(out[i].unix_nanos - out[i - 1].unix_nanos) / 1e3;
  }
  return out;
}

Result<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.max_message_bytes <= 0 || options.max_message_bytes > std::numeric_limits<int>::max()) {
    return InvalidArgument("max_message_bytes must be in 1.." + std::to_string(std::numeric_limits<int>::max()) +
                           ", got " + std::to_string(options.max_message_bytes));
  }
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  args.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(2 * options.max_message_bytes + (int64_t{1} << 20), std::numeric_limits<int>::max())));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, sdk_internal::kChannelMinReconnectMs);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, sdk_internal::kChannelMinReconnectMs);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, sdk_internal::kChannelMaxReconnectMs);
  // BDP probing sends an HTTP/2 PING with reads to size flow-control windows; for Loom's small,
  // latency-bound messages it only adds packets and wake-ups.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  if (options.token.empty()) options.token = TokenFromEnvironment();
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (options.tls || !options.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      std::ifstream in(options.tls_ca_file);
      std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (pem.empty()) return InvalidArgument("cannot read the TLS CA file '" + options.tls_ca_file + "'");
      ssl.pem_root_certs = std::move(pem);
    }
    creds = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.token.empty()) interceptors.push_back(std::make_unique<BearerInterceptorFactory>(options.token));
  auto channel =
      grpc::experimental::CreateCustomChannelWithInterceptors(options.address, creds, args, std::move(interceptors));
  if (!channel->WaitForConnected(DeadlineAfter(options.rpc_timeout))) {
    return Unavailable("cannot connect to the Loom service at " + options.address + " within " +
                       std::to_string(options.rpc_timeout.count()) +
                       " ms; check that loom-service runs there (set the address with --service or LOOM_SERVICE)");
  }
  return std::unique_ptr<Client>(new Client(std::move(options), std::move(channel)));
}

Client::Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)), channel_(std::move(channel)), stub_(v1::Loom::NewStub(channel_)) {}

Client::~Client() = default;

Result<v1::Function> Client::RegisterFunction(const std::string& name, const std::string& kernel_ref,
                                              const std::string& description, const Kwargs& config, bool* created) {
  FunctionOptions options;
  options.description = description;
  options.config = config;
  return RegisterFunction(name, kernel_ref, options, created);
}

Result<v1::Function> Client::RegisterFunction(const std::string& name, const std::string& kernel_ref,
                                              const FunctionOptions& options, bool* created) {
  v1::RegisterFunctionRequest request;
  v1::Function* f = request.mutable_function();
  f->set_name(name);
  f->set_kernel(kernel_ref);
  f->set_description(options.description);
  for (const auto& [k, v] : options.config) (*f->mutable_config())[k] = v;
  f->set_max_attempts(options.max_attempts);
  for (const auto& c : options.required_device_classes) f->mutable_requirements()->add_device_classes(c);
  f->set_timeout_ms(options.timeout_ms);
  v1::RegisterFunctionResponse response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->RegisterFunction(c, request, &response); }));
  if (created != nullptr) *created = response.created();
  return std::move(*response.mutable_function());
}

Result<v1::Function> Client::GetFunction(const std::string& name) {
  v1::GetFunctionRequest request;
  request.set_name(name);
  v1::Function response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->GetFunction(c, request, &response); }));
  return response;
}

Result<std::vector<v1::Function>> Client::ListFunctions() {
  v1::ListFunctionsResponse response;
  LOOM_RETURN_IF_ERROR(Unary(options_, [&](grpc::ClientContext* c) {
    return stub_->ListFunctions(c, v1::ListFunctionsRequest(), &response);
  }));
  return std::vector<v1::Function>(std::make_move_iterator(response.mutable_functions()->begin()),
                                   std::make_move_iterator(response.mutable_functions()->end()));
}

Result<v1::EndpointRecord> Client::CreateEndpoint(const std::string& name, const std::string& id) {
  return CreateEndpoint(name, id, EndpointOptions{});
}

Result<v1::EndpointRecord> Client::CreateEndpoint(const std::string& name, const std::string& id,
                                                  const EndpointOptions& options) {
  v1::CreateEndpointRequest request;
  request.set_name(name);
  request.set_id(id);
  request.set_curve_public_key(options.curve_public_key);
  for (const auto& u : options.allowed_users) request.add_allowed_users(u);
  for (const auto& f : options.allowed_functions) request.add_allowed_functions(f);
  v1::EndpointRecord response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->CreateEndpoint(c, request, &response); }));
  return response;
}

Result<v1::EndpointRecord> Client::CreateEndpoint(const v1::CreateEndpointRequest& request) {
  v1::EndpointRecord response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->CreateEndpoint(c, request, &response); }));
  return response;
}

Result<v1::EndpointRecord> Client::UpdateEndpoint(const v1::UpdateEndpointRequest& request) {
  v1::EndpointRecord response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->UpdateEndpoint(c, request, &response); }));
  return response;
}

Result<v1::WhoAmIResponse> Client::WhoAmI() {
  v1::WhoAmIResponse response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->WhoAmI(c, v1::WhoAmIRequest(), &response); }));
  return response;
}

Result<v1::CreateTokenResponse> Client::CreateToken(const v1::CreateTokenRequest& request) {
  v1::CreateTokenResponse response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->CreateToken(c, request, &response); }));
  return response;
}

Status Client::RevokeToken(const std::string& id) {
  v1::RevokeTokenRequest request;
  request.set_id(id);
  v1::RevokeTokenResponse response;
  return Unary(options_, [&](grpc::ClientContext* c) { return stub_->RevokeToken(c, request, &response); });
}

Result<std::vector<v1::TokenInfo>> Client::ListTokens(const std::string& user) {
  v1::ListTokensRequest request;
  request.set_user(user);
  v1::ListTokensResponse response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->ListTokens(c, request, &response); }));
  return std::vector<v1::TokenInfo>(response.tokens().begin(), response.tokens().end());
}

Result<std::vector<v1::EndpointRecord>> Client::ListEndpoints() {
  v1::ListEndpointsResponse response;
  LOOM_RETURN_IF_ERROR(Unary(options_, [&](grpc::ClientContext* c) {
    return stub_->ListEndpoints(c, v1::ListEndpointsRequest(), &response);
  }));
  return std::vector<v1::EndpointRecord>(std::make_move_iterator(response.mutable_endpoints()->begin()),
                                         std::make_move_iterator(response.mutable_endpoints()->end()));
}

Result<v1::EndpointRecord> Client::GetEndpoint(const std::string& id) {
  v1::GetEndpointRequest request;
  request.set_id(id);
  v1::EndpointRecord response;
  LOOM_RETURN_IF_ERROR(
      Unary(options_, [&](grpc::ClientContext* c) { return stub_->GetEndpoint(c, request, &response); }));
  return response;
}

Result<std::string> Client::Submit(const std::string& endpoint, const std::string& function, std::vector<Value> args,
                                   const Kwargs& kwargs, const SubmitOptions& options) {
  const v1::SubmitRequest request = MakeSubmitRequest(endpoint, function, std::move(args), kwargs, options);
  v1::SubmitResponse response;
  LOOM_RETURN_IF_ERROR(SubmitWithRetries(options_, !request.idempotency_key().empty(),
                                         [&](grpc::ClientContext* c) { return stub_->Submit(c, request, &response); }));
  return std::move(*response.mutable_task_id());
}

Result<std::vector<std::string>> Client::SubmitBatch(std::vector<v1::SubmitRequest> tasks) {
  std::vector<size_t> sizes;
  sizes.reserve(tasks.size());
  for (const auto& t : tasks) sizes.push_back(sdk_internal::RepeatedFieldBytes(t.ByteSizeLong()));
  LOOM_ASSIGN_OR_RETURN(
      std::vector<size_t> ends,
      sdk_internal::ChunkBySize(sizes, options_.max_batch, sdk_internal::RequestBudget(options_.max_message_bytes)));
  std::vector<std::string> ids;
  ids.reserve(tasks.size());
  size_t begin = 0;
  for (size_t end : ends) {
    v1::SubmitBatchRequest request;
    request.mutable_tasks()->Reserve(static_cast<int>(end - begin));
    for (size_t i = begin; i < end; ++i) *request.add_tasks() = std::move(tasks[i]);
    const bool keyed = std::all_of(request.tasks().begin(), request.tasks().end(),
                                   [](const v1::SubmitRequest& t) { return !t.idempotency_key().empty(); });
    v1::SubmitBatchResponse response;
    Status st = SubmitWithRetries(options_, keyed, [&](grpc::ClientContext* c) {
      response.Clear();
      return stub_->SubmitBatch(c, request, &response);
    });
    if (st.ok() && static_cast<size_t>(response.task_ids_size()) != end - begin) {
      st = Internal("the service answered a batch of " + std::to_string(end - begin) + " tasks with " +
                    std::to_string(response.task_ids_size()) + " ids");
    }
    if (!st.ok()) {
      if (begin == 0) return st;
      return Status(st.code(), st.message() + " (the first " + std::to_string(begin) + " of " +
                                   std::to_string(tasks.size()) + " tasks were submitted before this error)");
    }
    for (auto& id : *response.mutable_task_ids()) ids.push_back(std::move(id));
    begin = end;
  }
  return ids;
}

Result<v1::TaskRecord> Client::GetStatus(const std::string& task_id) {
  LOOM_ASSIGN_OR_RETURN(std::vector<v1::TaskRecord> records, GetTasks({task_id}));
  if (records.empty()) return NotFound("task '" + task_id + "' is not known to the service");
  return std::move(records.front());
}

Result<std::vector<v1::TaskRecord>> Client::GetTasks(const std::vector<std::string>& task_ids) {
  std::vector<v1::TaskRecord> records;
  records.reserve(task_ids.size());
  const size_t chunk = std::max<size_t>(options_.max_batch, 1);
  for (size_t begin = 0; begin < task_ids.size(); begin += chunk) {
    const size_t end = std::min(task_ids.size(), begin + chunk);
    v1::GetTasksRequest request;
    for (size_t i = begin; i < end; ++i) request.add_task_ids(task_ids[i]);
    v1::GetTasksResponse response;
    LOOM_RETURN_IF_ERROR(
        Unary(options_, [&](grpc::ClientContext* c) { return stub_->GetTasks(c, request, &response); }));
    for (auto& r : *response.mutable_tasks()) records.push_back(std::move(r));
  }
  return records;
}

Result<std::optional<v1::TaskRecord>> Client::GetResult(const std::string& task_id, std::chrono::milliseconds timeout) {
  if (timeout <= std::chrono::milliseconds(0)) {
    LOOM_ASSIGN_OR_RETURN(v1::TaskRecord record, GetStatus(task_id));
    if (IsTerminal(record.state())) return std::optional<v1::TaskRecord>(std::move(record));
    return std::optional<v1::TaskRecord>();
  }
  // One unary long poll (GetTasks with wait_ms) per attempt: cheaper than a stream for one
  // task. Polls are kept shorter than the RPC deadline; a service restart (UNAVAILABLE) is
  // ridden out with backoff, like StreamResults.
  const auto deadline = DeadlineAfter(timeout);
  const auto max_poll =
      std::max(options_.rpc_timeout - std::chrono::milliseconds(1000), std::chrono::milliseconds(100));
  auto backoff = std::chrono::milliseconds(sdk_internal::kChannelMinReconnectMs);
  Status last_error;
  while (true) {
    const auto now = Clock::now();
    if (now >= deadline) break;
    const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now), max_poll);
    v1::GetTasksRequest request;
    request.add_task_ids(task_id);
    request.set_wait_ms(std::max<int64_t>(1, wait.count()));
    v1::GetTasksResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(Clock::now() + wait + options_.rpc_timeout);
    Status st = FromGrpc(stub_->GetTasks(&ctx, request, &response));
    if (st.ok()) {
      if (response.tasks_size() == 0) return NotFound("task '" + task_id + "' is not known to the service");
      if (IsTerminal(response.tasks(0).state()))
        return std::optional<v1::TaskRecord>(std::move(*response.mutable_tasks(0)));
      continue;
    }
    if (st.code() != StatusCode::kUnavailable) return st;
    last_error = st;
    const auto left = deadline - Clock::now();
    if (left <= std::chrono::milliseconds(0)) break;
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, left));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
  if (!last_error.ok()) return last_error;
  return std::optional<v1::TaskRecord>();
}

Status Client::StreamResults(const std::vector<std::string>& task_ids,
                             const std::function<bool(const v1::TaskRecord&)>& on_result,
                             std::chrono::milliseconds timeout) {
  grpc::CompletionQueue cq;
  sdk_internal::WatchOptions watch;
  watch.deadline = DeadlineAfter(timeout);
  watch.max_ids_per_stream = options_.max_batch;
  watch.max_request_bytes = sdk_internal::RequestBudget(options_.max_message_bytes);
  watch.channel = channel_.get();
  Status result;
  size_t delivered = 0;
  sdk_internal::ResultWatcher* self = nullptr;
  sdk_internal::ResultWatcher watcher(
      *stub_, cq, watch,
      [&](v1::TaskRecord& record) {
        ++delivered;
        if (!on_result(record)) self->CancelAll();
      },
      [&](std::vector<std::string> ids, const Status& status) {
        if (result.ok()) {
          result = status.code() == StatusCode::kDeadlineExceeded
                       ? DeadlineExceeded(std::to_string(self->watched() + ids.size()) + " of " +
                                          std::to_string(delivered + self->watched() + ids.size()) +
                                          " task(s) not finished within " + std::to_string(timeout.count()) + " ms")
                       : status;
        }
        self->CancelAll();
      });
  self = &watcher;
  watcher.Watch(task_ids);
  void* tag = nullptr;
  bool ok = false;
  while (!watcher.idle() && cq.Next(&tag, &ok)) static_cast<sdk_internal::CqOp*>(tag)->OnEvent(ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return result;
}

Result<v1::TaskRecord> Client::Cancel(const std::string& task_id) {
  v1::CancelRequest request;
  request.set_task_id(task_id);
  v1::CancelResponse response;
  LOOM_RETURN_IF_ERROR(Unary(options_, [&](grpc::ClientContext* c) { return stub_->Cancel(c, request, &response); }));
  return std::move(*response.mutable_task());
}

Result<int> Client::DeleteTasks(const std::vector<std::string>& task_ids) {
  std::vector<size_t> sizes;
  sizes.reserve(task_ids.size());
  for (const auto& id : task_ids) sizes.push_back(sdk_internal::RepeatedFieldBytes(id.size()));
  LOOM_ASSIGN_OR_RETURN(
      std::vector<size_t> ends,
      sdk_internal::ChunkBySize(sizes, options_.max_batch, sdk_internal::RequestBudget(options_.max_message_bytes)));
  int deleted = 0;
  size_t begin = 0;
  for (size_t end : ends) {
    v1::DeleteTasksRequest request;
    for (size_t i = begin; i < end; ++i) request.add_task_ids(task_ids[i]);
    v1::DeleteTasksResponse response;
    Status st = Unary(options_, [&](grpc::ClientContext* c) { return stub_->DeleteTasks(c, request, &response); });
    if (!st.ok()) {
      if (begin == 0) return st;
      return Status(st.code(), st.message() + " (" + std::to_string(deleted) + " task(s) among the first " +
                                   std::to_string(begin) + " of " + std::to_string(task_ids.size()) +
                                   " ids were deleted before this error)");
    }
    deleted += response.deleted();
    begin = end;
  }
  return deleted;
}

}  // namespace loom
