#include "service/grpc_server.h"

namespace loom::service {

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

namespace {
template <typename T>
grpc::Status Reply(Result<T> r, T* out) {
  if (!r.ok()) return ToGrpc(r.status());
  *out = std::move(r).value();
  return grpc::Status::OK;
}
}  // namespace

grpc::Status LoomGrpcService::RegisterFunction(grpc::ServerContext*, const v1::RegisterFunctionRequest* req,
                                               v1::RegisterFunctionResponse* resp) {
  return Counted(GrpcMethod::kRegisterFunction, Reply(api_->RegisterFunction(*req, LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::GetFunction(grpc::ServerContext*, const v1::GetFunctionRequest* req, v1::Function* resp) {
  return Counted(GrpcMethod::kGetFunction, Reply(api_->GetFunction(*req, LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::ListFunctions(grpc::ServerContext*, const v1::ListFunctionsRequest*,
                                            v1::ListFunctionsResponse* resp) {
  return Counted(GrpcMethod::kListFunctions, Reply(api_->ListFunctions(LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::CreateEndpoint(grpc::ServerContext*, const v1::CreateEndpointRequest* req,
                                             v1::EndpointRecord* resp) {
  return Counted(GrpcMethod::kCreateEndpoint, Reply(api_->CreateEndpoint(*req, LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::ListEndpoints(grpc::ServerContext*, const v1::ListEndpointsRequest*,
                                            v1::ListEndpointsResponse* resp) {
  return Counted(GrpcMethod::kListEndpoints, Reply(api_->ListEndpoints(LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::GetEndpoint(grpc::ServerContext*, const v1::GetEndpointRequest* req,
                                          v1::EndpointRecord* resp) {
  return Counted(GrpcMethod::kGetEndpoint, Reply(api_->GetEndpoint(*req, LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::Submit(grpc::ServerContext*, const v1::SubmitRequest* req, v1::SubmitResponse* resp) {
  return Counted(GrpcMethod::kSubmit, Reply(api_->Submit(*req, LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::SubmitBatch(grpc::ServerContext*, const v1::SubmitBatchRequest* req,
                                          v1::SubmitBatchResponse* resp) {
  return Counted(GrpcMethod::kSubmitBatch, Reply(api_->SubmitBatch(*req, LocalPrincipal()), resp));
}
grpc::Status LoomGrpcService::GetTasks(grpc::ServerContext* ctx, const v1::GetTasksRequest* req,
                                       v1::GetTasksResponse* resp) {
  return Counted(GrpcMethod::kGetTasks,
                 Reply(api_->GetTasks(*req, LocalPrincipal(), [&] { return ctx->IsCancelled(); }), resp));
}
grpc::Status LoomGrpcService::WaitResults(grpc::ServerContext* ctx, const v1::WaitResultsRequest* req,
                                          grpc::ServerWriter<v1::TaskRecord>* writer) {
  Status s = api_->WaitResults(
      *req, LocalPrincipal(), [&](const v1::TaskRecord& r) { return writer->Write(r); }, [&] { return ctx->IsCancelled(); });
  return Counted(GrpcMethod::kWaitResults, ToGrpc(s));
}
grpc::Status LoomGrpcService::Cancel(grpc::ServerContext*, const v1::CancelRequest* req, v1::CancelResponse* resp) {
  return Counted(GrpcMethod::kCancel, Reply(api_->Cancel(*req, LocalPrincipal()), resp));
}

grpc::Status LoomGrpcService::DeleteTasks(grpc::ServerContext*, const v1::DeleteTasksRequest* req,
                                          v1::DeleteTasksResponse* resp) {
  return Counted(GrpcMethod::kDeleteTasks, Reply(api_->DeleteTasks(*req, LocalPrincipal()), resp));
}

// A stand-in until main's lands (not counted: GrpcMethod has no entry for it yet).
grpc::Status LoomGrpcService::UpdateEndpoint(grpc::ServerContext*, const v1::UpdateEndpointRequest* req,
                                             v1::EndpointRecord* resp) {
  return Reply(api_->UpdateEndpoint(*req, LocalPrincipal()), resp);
}

}  // namespace loom::service
