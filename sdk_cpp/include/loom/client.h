// loom::Client: the C++ SDK's connection to the Loom service. It registers functions, creates
// and inspects endpoints, submits tasks (one at a time or in batches), follows them to their
// results and deletes finished ones, mapping every gRPC status one to one onto loom::Status
// with the service's message.
//
//   auto client = loom::Client::Connect({.address = "127.0.0.1:50051"});
//   if (!client.ok()) { /* client.status(): UNAVAILABLE, names the address */ }
//   auto id = (*client)->Submit("my-endpoint", "my-add", {loom::IntValue(1), loom::IntValue(2)});
//   auto record = (*client)->GetResult(*id, std::chrono::seconds(10));  // nullopt: not done yet
//
// A submit that must not run twice carries an idempotency key, which also lets the client
// retry it safely when the service is briefly unreachable (see Submit):
//   (*client)->Submit("my-endpoint", "my-add", {...}, {}, {.idempotency_key = "job-17", .max_attempts = 2});
//
// For many concurrent tasks with futures, see loom::Executor (executor.h).
//
// Thread-safe: one Client is meant to be shared by every thread of a program; each call is
// independent (gRPC channels multiplex calls over one connection).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/value.h"
#include "loom.grpc.pb.h"
#include "loom.pb.h"

namespace loom {

class Executor;

struct ClientOptions {
  // host:port of the Loom service.
  std::string address = "127.0.0.1:50051";
  // The largest gRPC message sent: batches of tasks and of ids are split to stay under it. The
  // service must accept at least this much (loom-service --max-message-bytes, whose default this
  // is). Replies of up to twice this plus 1 MiB are accepted: a task record carries both its
  // arguments and its result.
  int64_t max_message_bytes = int64_t{10} << 20;
  // Deadline of each unary call, and how long Connect waits for the service.
  std::chrono::milliseconds rpc_timeout{30000};
  // The most tasks (or ids) one SubmitBatch, GetTasks or DeleteTasks call or one StreamResults
  // stream carries.
  size_t max_batch = 10000;
  // How many times a submit that carries an idempotency key is sent again after UNAVAILABLE or
  // DEADLINE_EXCEEDED (see Client::Submit); 0: never.
  int submit_retries = 3;
  // The bearer token sent with every call ("authorization: Bearer <token>"). Empty: the
  // environment's LOOM_TOKEN, else the first line of the file named by LOOM_TOKEN_FILE.
  std::string token;
  // TLS: the PEM file of the certificate authorities to trust (for a self-signed service
  // certificate, the certificate itself). Empty with `tls` false: plaintext.
  std::string tls_ca_file;
  bool tls = false;  // TLS with the system's trusted authorities (implied by tls_ca_file)
};

// The token a client without ClientOptions::token uses: LOOM_TOKEN, else the first line of
// the file LOOM_TOKEN_FILE names; empty when neither is set.
std::string TokenFromEnvironment();

// Arguments of a task by name.
using Kwargs = std::map<std::string, Value>;

// Per-task settings of a submit. Zero or empty fields leave the function's defaults.
// Every field has an initializer (`{}` too) so that callers may name any subset of them,
// {.max_attempts = 2}, without GCC's -Wmissing-field-initializers.
struct SubmitOptions {
  // Makes the submit safe to repeat: the service answers a submit whose key (per owner) it has
  // seen with the original task's id and creates nothing, for as long as that task's record
  // lives (until its result TTL passes or it is deleted). Only keyed submits are retried after
  // UNAVAILABLE or DEADLINE_EXCEEDED. A reused key returns the earlier task even when the rest
  // of the request differs: use one key per logical task (e.g. a UUID, or "run-42/frame-7").
  std::string idempotency_key{};
  // Attempts the service makes when an attempt ends in a system failure (the worker or the
  // endpoint was lost); a kernel error or a timeout is never retried. 0: the function's default.
  int32_t max_attempts = 0;
  // Walltime of one attempt in milliseconds, enforced by the endpoint (the worker is stopped and
  // the task fails with FAILURE_KIND_TIMEOUT). 0: the function's default (which may be none).
  int64_t timeout_ms = 0;
  // If its endpoint is lost, the task may run on another endpoint of the same group (endpoints
  // started with the same --group) that offers its kernel.
  bool failover = false;
  // Trace the task: its record also gets "service_committed" and "result_committed", the times
  // the service's Redis writes returned (the latter only on the record handed out as it
  // finishes: GetResult, StreamResults). Costs a few microseconds a task.
  bool trace = false;
};

// What Client::RegisterFunction stores besides the name and the kernel (initialized like
// SubmitOptions).
struct FunctionOptions {
  std::string description{};
  // Default configuration passed to the kernel.
  Kwargs config{};
  // Defaults for the function's tasks (a submit may override them; see SubmitOptions).
  int32_t max_attempts = 0;  // 0: the service's default
  int64_t timeout_ms = 0;    // 0: no deadline
  // Device classes ("gpu", "fpga") an endpoint must advertise to run it; checked at submit.
  std::vector<std::string> required_device_classes{};
};

// What Client::CreateEndpoint stores besides the name and the id (initialized like
// SubmitOptions).
struct EndpointOptions {
  // The endpoint's ZeroMQ CURVE public key (Z85, 40 characters): only a connection holding the
  // matching secret key may register as this endpoint. `loom endpoint configure` makes the pair.
  std::string curve_public_key{};
  // Who besides the owner may submit to it ("*": every user), and which functions may run on it
  // ("name": the owner's function; "user/name": another user's; empty: any).
  std::vector<std::string> allowed_users{};
  std::vector<std::string> allowed_functions{};
};

// Builds the request that Client::SubmitBatch takes for one task.
v1::SubmitRequest MakeSubmitRequest(const std::string& endpoint, const std::string& function, std::vector<Value> args,
                                    const Kwargs& kwargs = {}, const SubmitOptions& options = {});

// One stage of a task's life (TaskRecord.timestamps), with microseconds since the first stage
// and since the previous one.
struct StageTiming {
  std::string stage;
  int64_t unix_nanos = 0;
  double since_first_us = 0;
  double since_previous_us = 0;
};

// The record's timestamps in time order (equal times keep the record's order). Works with
// whatever stages are present: the set differs between paths (e.g. a cancelled task).
std::vector<StageTiming> Timeline(const v1::TaskRecord& record);

class Client {
 public:
  // Opens a channel to options.address and waits up to options.rpc_timeout for it to connect.
  // UNAVAILABLE (naming the address) when the service cannot be reached in that time.
  static Result<std::unique_ptr<Client>> Connect(ClientOptions options = {});

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // ---------------------------------------------------------------- functions

  // Binds `name` to a kernel reference "kernel@version". Registering an identical function
  // again succeeds with *created = false; a different one under the same name is an error
  // from the service.
  Result<v1::Function> RegisterFunction(const std::string& name, const std::string& kernel_ref,
                                        const std::string& description = "", const Kwargs& config = {},
                                        bool* created = nullptr);
  // The same, with the task defaults too:
  //   client.RegisterFunction("braggnn", "braggnn@2", {.max_attempts = 5, .timeout_ms = 60000});
  Result<v1::Function> RegisterFunction(const std::string& name, const std::string& kernel_ref,
                                        const FunctionOptions& options, bool* created = nullptr);
  Result<v1::Function> GetFunction(const std::string& name);
  Result<std::vector<v1::Function>> ListFunctions();

  // ---------------------------------------------------------------- endpoints

  // Creates an endpoint record; the id is the name when `id` is empty.
  Result<v1::EndpointRecord> CreateEndpoint(const std::string& name, const std::string& id = "");
  // The same with every field of the request (CURVE public key, allow-lists).
  Result<v1::EndpointRecord> CreateEndpoint(const v1::CreateEndpointRequest& request);
  // Changes the fields set in `request` (allow-lists, CURVE key); only the owner may.
  Result<v1::EndpointRecord> UpdateEndpoint(const v1::UpdateEndpointRequest& request);

  // ---------------------------------------------------------------- tokens

  // Who the service takes this client for.
  Result<v1::WhoAmIResponse> WhoAmI();
  // A new token; creating one for another user, or an admin token, takes an admin.
  Result<v1::CreateTokenResponse> CreateToken(const v1::CreateTokenRequest& request);
  Status RevokeToken(const std::string& id);
  // The caller's tokens; an admin may name another user, or "*" for all.
  Result<std::vector<v1::TokenInfo>> ListTokens(const std::string& user = "");
  // The same, with its CURVE key and allow-lists; ALREADY_EXISTS when the id is taken.
  Result<v1::EndpointRecord> CreateEndpoint(const std::string& name, const std::string& id,
                                            const EndpointOptions& options);
  Result<std::vector<v1::EndpointRecord>> ListEndpoints();
  Result<v1::EndpointRecord> GetEndpoint(const std::string& id);

  // ---------------------------------------------------------------- tasks

  // Submits one task; returns its id.
  //
  // Retries: a submit that fails with UNAVAILABLE or DEADLINE_EXCEEDED may or may not have
  // created the task (the service can commit it and the reply be lost), so it is sent again only
  // when options.idempotency_key is set: up to ClientOptions::submit_retries more times, after
  // 100 ms, 200 ms, 400 ms, ... (capped at 2 s, each +-20% jitter); the service answers a
  // repeat with the original id, so at most one task exists. Without a key the error is
  // returned at once: the task may exist without its id ever reaching the caller, so set a key
  // whenever a duplicate would matter. Other errors are never retried.
  Result<std::string> Submit(const std::string& endpoint, const std::string& function, std::vector<Value> args,
                             const Kwargs& kwargs = {}, const SubmitOptions& options = {});
  // Submits many tasks in as few calls as options allow (chunks of at most max_batch tasks and
  // under max_message_bytes); returns the ids in input order. INVALID_ARGUMENT, before anything is
  // sent, when one task alone is over max_message_bytes. A chunk whose tasks all carry an
  // idempotency key is retried like Submit; a chunk with any task without one is not. If a
  // later chunk fails, the earlier chunks' tasks were submitted: the error message says how many.
  Result<std::vector<std::string>> SubmitBatch(std::vector<v1::SubmitRequest> tasks);

  // The task's record now (without its arguments).
  Result<v1::TaskRecord> GetStatus(const std::string& task_id);
  // Records in the order of `task_ids`.
  Result<std::vector<v1::TaskRecord>> GetTasks(const std::vector<std::string>& task_ids);

  // Waits up to `timeout` for the task to reach a terminal state (success, failed, cancelled)
  // and returns its record, or nullopt if it is still running then. Rides out a service
  // restart like StreamResults.
  Result<std::optional<v1::TaskRecord>> GetResult(const std::string& task_id, std::chrono::milliseconds timeout);

  // Calls on_result once for each of `task_ids` as it reaches a terminal state, in completion
  // order, on the calling thread, until all were delivered (OK), on_result returned false (OK),
  // or `timeout` passed (DEADLINE_EXCEEDED, saying how many are still running). When the stream
  // breaks with UNAVAILABLE (e.g. the service restarted) it reconnects with backoff and
  // resubscribes for the ids not delivered yet; it never delivers one id twice (duplicates in
  // `task_ids` are delivered once). Long id lists are followed over several streams.
  // Other errors (e.g. NOT_FOUND for an unknown id) end the call with that status.
  Status StreamResults(const std::vector<std::string>& task_ids,
                       const std::function<bool(const v1::TaskRecord&)>& on_result, std::chrono::milliseconds timeout);

  // Cancels a task that has not finished; returns its record afterwards.
  Result<v1::TaskRecord> Cancel(const std::string& task_id);

  // Deletes finished tasks (records and results) before their result TTL, which also frees
  // their idempotency keys; returns how many were deleted (unknown ids are skipped).
  // FAILED_PRECONDITION, deleting nothing, when one of them has not finished: cancel it first.
  // Each call of at most max_batch ids is all-or-nothing; if a later one fails, the message
  // says how many tasks the earlier calls deleted.
  Result<int> DeleteTasks(const std::vector<std::string>& task_ids);

 private:
  friend class Executor;  // runs its own asynchronous calls on this client's channel

  Client(ClientOptions options, std::shared_ptr<grpc::Channel> channel);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Loom::StubInterface> stub_;
};

}  // namespace loom
