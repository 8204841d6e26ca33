// LoomGrpcService: the gRPC face of LoomApi, one RPC to one method, Status codes mapped one to
// one. Each call is authenticated first from its "authorization" metadata ("Bearer <token>",
// the SDK's per-call credentials); a failure answers UNAUTHENTICATED and reaches no handler.
// A RESOURCE_EXHAUSTED with a retry hint carries it as the trailer "retry-after-ms". With
// metrics, each finished RPC is counted by method and code. Thread-safe (LoomApi,
// Authenticator and ServiceMetrics are).
#pragma once

#include "loom.grpc.pb.h"
#include "service/api.h"
#include "service/auth.h"
#include "service/metrics.h"

namespace loom::service {

grpc::Status ToGrpc(const Status& s);

class LoomGrpcService final : public v1::Loom::Service {
 public:
  // `auth` may be null: every caller is LocalPrincipal() (in-process tests). `metrics` may be
  // null (none).
  LoomGrpcService(LoomApi* api, Authenticator* auth, ServiceMetrics* metrics = nullptr)
      : api_(api), auth_(auth), metrics_(metrics) {}

  grpc::Status RegisterFunction(grpc::ServerContext*, const v1::RegisterFunctionRequest*,
                                v1::RegisterFunctionResponse*) override;
  grpc::Status GetFunction(grpc::ServerContext*, const v1::GetFunctionRequest*, v1::Function*) override;
  grpc::Status ListFunctions(grpc::ServerContext*, const v1::ListFunctionsRequest*,
                             v1::ListFunctionsResponse*) override;
  grpc::Status CreateEndpoint(grpc::ServerContext*, const v1::CreateEndpointRequest*, v1::EndpointRecord*) override;
  grpc::Status ListEndpoints(grpc::ServerContext*, const v1::ListEndpointsRequest*,
                             v1::ListEndpointsResponse*) override;
  grpc::Status GetEndpoint(grpc::ServerContext*, const v1::GetEndpointRequest*, v1::EndpointRecord*) override;
  grpc::Status UpdateEndpoint(grpc::ServerContext*, const v1::UpdateEndpointRequest*, v1::EndpointRecord*) override;
  grpc::Status Submit(grpc::ServerContext*, const v1::SubmitRequest*, v1::SubmitResponse*) override;
  grpc::Status SubmitBatch(grpc::ServerContext*, const v1::SubmitBatchRequest*, v1::SubmitBatchResponse*) override;
  grpc::Status GetTasks(grpc::ServerContext*, const v1::GetTasksRequest*, v1::GetTasksResponse*) override;
  grpc::Status WaitResults(grpc::ServerContext*, const v1::WaitResultsRequest*,
                           grpc::ServerWriter<v1::TaskRecord>*) override;
  grpc::Status StreamResults(grpc::ServerContext*, const v1::WaitResultsRequest*,
                             grpc::ServerWriter<v1::TaskRecords>*) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest*, v1::CancelResponse*) override;
  grpc::Status DeleteTasks(grpc::ServerContext*, const v1::DeleteTasksRequest*, v1::DeleteTasksResponse*) override;
  grpc::Status CreateToken(grpc::ServerContext*, const v1::CreateTokenRequest*, v1::CreateTokenResponse*) override;
  grpc::Status RevokeToken(grpc::ServerContext*, const v1::RevokeTokenRequest*, v1::RevokeTokenResponse*) override;
  grpc::Status ListTokens(grpc::ServerContext*, const v1::ListTokensRequest*, v1::ListTokensResponse*) override;
  grpc::Status WhoAmI(grpc::ServerContext*, const v1::WhoAmIRequest*, v1::WhoAmIResponse*) override;

 private:
  // Authenticates the call, runs `handler(principal)` (returning Result<T>) and fills `out`.
  template <typename T, typename Handler>
  grpc::Status Unary(GrpcMethod method, grpc::ServerContext* ctx, T* out, Handler handler);
  Result<Principal> Authenticate(grpc::ServerContext* ctx);
  grpc::Status Finish(GrpcMethod method, grpc::ServerContext* ctx, const Status& s);

  LoomApi* api_;
  Authenticator* auth_;
  ServiceMetrics* metrics_;
};

}  // namespace loom::service
