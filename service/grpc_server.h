// LoomGrpcService: the gRPC face of LoomApi, one RPC to one method, Status codes mapped one to
// one; with metrics, each finished RPC is counted by method and code. Thread-safe (LoomApi and
// ServiceMetrics are).
#pragma once

#include "loom.grpc.pb.h"
#include "service/api.h"
#include "service/metrics.h"

namespace loom::service {

grpc::Status ToGrpc(const Status& s);

class LoomGrpcService final : public v1::Loom::Service {
 public:
  // `metrics` may be null (none).
  explicit LoomGrpcService(LoomApi* api, ServiceMetrics* metrics = nullptr) : api_(api), metrics_(metrics) {}

  grpc::Status RegisterFunction(grpc::ServerContext*, const v1::RegisterFunctionRequest*,
                                v1::RegisterFunctionResponse*) override;
  grpc::Status GetFunction(grpc::ServerContext*, const v1::GetFunctionRequest*, v1::Function*) override;
  grpc::Status ListFunctions(grpc::ServerContext*, const v1::ListFunctionsRequest*,
                             v1::ListFunctionsResponse*) override;
  grpc::Status CreateEndpoint(grpc::ServerContext*, const v1::CreateEndpointRequest*, v1::EndpointRecord*) override;
  grpc::Status ListEndpoints(grpc::ServerContext*, const v1::ListEndpointsRequest*,
                             v1::ListEndpointsResponse*) override;
  grpc::Status GetEndpoint(grpc::ServerContext*, const v1::GetEndpointRequest*, v1::EndpointRecord*) override;
  grpc::Status Submit(grpc::ServerContext*, const v1::SubmitRequest*, v1::SubmitResponse*) override;
  grpc::Status SubmitBatch(grpc::ServerContext*, const v1::SubmitBatchRequest*, v1::SubmitBatchResponse*) override;
  grpc::Status GetTasks(grpc::ServerContext*, const v1::GetTasksRequest*, v1::GetTasksResponse*) override;
  grpc::Status WaitResults(grpc::ServerContext*, const v1::WaitResultsRequest*,
                           grpc::ServerWriter<v1::TaskRecord>*) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest*, v1::CancelResponse*) override;
  grpc::Status DeleteTasks(grpc::ServerContext*, const v1::DeleteTasksRequest*, v1::DeleteTasksResponse*) override;
  grpc::Status UpdateEndpoint(grpc::ServerContext*, const v1::UpdateEndpointRequest*, v1::EndpointRecord*) override;

 private:
  grpc::Status Counted(GrpcMethod method, grpc::Status s) {
    if (metrics_ != nullptr) metrics_->GrpcRequest(method, static_cast<int>(s.error_code()));
    return s;
  }

  LoomApi* api_;
  ServiceMetrics* metrics_;
};

}  // namespace loom::service
