#include "service/grpc_server.h"

namespace loom::service {

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), s.message());
}

Result<Principal> LoomGrpcService::Authenticate(grpc::ServerContext* ctx) {
  if (auth_ == nullptr) return LocalPrincipal();
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return auth_->Authenticate("");
  return auth_->Authenticate(std::string_view(it->second.data(), it->second.size()));
}

grpc::Status LoomGrpcService::Finish(GrpcMethod method, grpc::ServerContext* ctx, const Status& s) {
  if (s.retry_after_ms() > 0) ctx->AddTrailingMetadata("retry-after-ms", std::to_string(s.retry_after_ms()));
  grpc::Status g = ToGrpc(s);
  if (metrics_ != nullptr) metrics_->GrpcRequest(method, static_cast<int>(g.error_code()));
  return g;
}

template <typename T, typename Handler>
grpc::Status LoomGrpcService::Unary(GrpcMethod method, grpc::ServerContext* ctx, T* out, Handler handler) {
  auto who = Authenticate(ctx);
  if (!who.ok()) return Finish(method, ctx, who.status());
  Result<T> r = handler(*who);
  if (!r.ok()) return Finish(method, ctx, r.status());
  *out = std::move(r).value();
  return Finish(method, ctx, Status::Ok());
}

grpc::Status LoomGrpcService::RegisterFunction(grpc::ServerContext* ctx, const v1::RegisterFunctionRequest* req,
                                               v1::RegisterFunctionResponse* resp) {
  return Unary(GrpcMethod::kRegisterFunction, ctx, resp,
               [&](const Principal& who) { return api_->RegisterFunction(*req, who); });
}
grpc::Status LoomGrpcService::GetFunction(grpc::ServerContext* ctx, const v1::GetFunctionRequest* req,
                                          v1::Function* resp) {
  return Unary(GrpcMethod::kGetFunction, ctx, resp, [&](const Principal& who) { return api_->GetFunction(*req, who); });
}
grpc::Status LoomGrpcService::ListFunctions(grpc::ServerContext* ctx, const v1::ListFunctionsRequest*,
                                            v1::ListFunctionsResponse* resp) {
  return Unary(GrpcMethod::kListFunctions, ctx, resp, [&](const Principal& who) { return api_->ListFunctions(who); });
}
grpc::Status LoomGrpcService::CreateEndpoint(grpc::ServerContext* ctx, const v1::CreateEndpointRequest* req,
                                             v1::EndpointRecord* resp) {
  return Unary(GrpcMethod::kCreateEndpoint, ctx, resp,
               [&](const Principal& who) { return api_->CreateEndpoint(*req, who); });
}
grpc::Status LoomGrpcService::ListEndpoints(grpc::ServerContext* ctx, const v1::ListEndpointsRequest*,
                                            v1::ListEndpointsResponse* resp) {
  return Unary(GrpcMethod::kListEndpoints, ctx, resp, [&](const Principal& who) { return api_->ListEndpoints(who); });
}
grpc::Status LoomGrpcService::GetEndpoint(grpc::ServerContext* ctx, const v1::GetEndpointRequest* req,
                                          v1::EndpointRecord* resp) {
  return Unary(GrpcMethod::kGetEndpoint, ctx, resp, [&](const Principal& who) { return api_->GetEndpoint(*req, who); });
}
grpc::Status LoomGrpcService::UpdateEndpoint(grpc::ServerContext* ctx, const v1::UpdateEndpointRequest* req,
                                             v1::EndpointRecord* resp) {
  return Unary(GrpcMethod::kUpdateEndpoint, ctx, resp,
               [&](const Principal& who) { return api_->UpdateEndpoint(*req, who); });
}
grpc::Status LoomGrpcService::Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req, v1::SubmitResponse* resp) {
  return Unary(GrpcMethod::kSubmit, ctx, resp, [&](const Principal& who) { return api_->Submit(*req, who); });
}
grpc::Status LoomGrpcService::SubmitBatch(grpc::ServerContext* ctx, const v1::SubmitBatchRequest* req,
                                          v1::SubmitBatchResponse* resp) {
  return Unary(GrpcMethod::kSubmitBatch, ctx, resp, [&](const Principal& who) { return api_->SubmitBatch(*req, who); });
}
grpc::Status LoomGrpcService::GetTasks(grpc::ServerContext* ctx, const v1::GetTasksRequest* req,
                                       v1::GetTasksResponse* resp) {
  return Unary(GrpcMethod::kGetTasks, ctx, resp,
               [&](const Principal& who) { return api_->GetTasks(*req, who, [&] { return ctx->IsCancelled(); }); });
}
grpc::Status LoomGrpcService::WaitResults(grpc::ServerContext* ctx, const v1::WaitResultsRequest* req,
                                          grpc::ServerWriter<v1::TaskRecord>* writer) {
  auto who = Authenticate(ctx);
  if (!who.ok()) return Finish(GrpcMethod::kWaitResults, ctx, who.status());
  Status s = api_->WaitResults(
      *req, *who,
      [&](const LoomApi::Burst& burst) {
        for (const auto* r : burst) {
          if (!writer->Write(*r)) return false;
        }
        return true;
      },
      [&] { return ctx->IsCancelled(); });
  return Finish(GrpcMethod::kWaitResults, ctx, s);
}
grpc::Status LoomGrpcService::StreamResults(grpc::ServerContext* ctx, const v1::WaitResultsRequest* req,
                                            grpc::ServerWriter<v1::TaskRecords>* writer) {
  auto who = Authenticate(ctx);
  if (!who.ok()) return Finish(GrpcMethod::kStreamResults, ctx, who.status());
  // One message per burst, split where it would pass max_message_bytes (a record alone may be
  // larger: its own message then, which the SDK accepts up to twice the limit plus 1 MiB).
  const int64_t limit = api_->limits().max_message_bytes;
  v1::TaskRecords message;
  Status s = api_->WaitResults(
      *req, *who,
      [&](const LoomApi::Burst& burst) {
        int64_t bytes = 0;
        for (auto* r : burst) {
          const auto size = static_cast<int64_t>(r->ByteSizeLong());
          if (message.tasks_size() > 0 && bytes + size > limit) {
            if (!writer->Write(message)) return false;
            message.Clear();
            bytes = 0;
          }
          message.add_tasks()->Swap(r);
          bytes += size;
        }
        const bool ok = writer->Write(message);
        message.Clear();
        return ok;
      },
      [&] { return ctx->IsCancelled(); });
  return Finish(GrpcMethod::kStreamResults, ctx, s);
}
grpc::Status LoomGrpcService::Cancel(grpc::ServerContext* ctx, const v1::CancelRequest* req, v1::CancelResponse* resp) {
  return Unary(GrpcMethod::kCancel, ctx, resp, [&](const Principal& who) { return api_->Cancel(*req, who); });
}
grpc::Status LoomGrpcService::DeleteTasks(grpc::ServerContext* ctx, const v1::DeleteTasksRequest* req,
                                          v1::DeleteTasksResponse* resp) {
  return Unary(GrpcMethod::kDeleteTasks, ctx, resp, [&](const Principal& who) { return api_->DeleteTasks(*req, who); });
}
grpc::Status LoomGrpcService::CreateToken(grpc::ServerContext* ctx, const v1::CreateTokenRequest* req,
                                          v1::CreateTokenResponse* resp) {
  return Unary(GrpcMethod::kCreateToken, ctx, resp, [&](const Principal& who) { return api_->CreateToken(*req, who); });
}
grpc::Status LoomGrpcService::RevokeToken(grpc::ServerContext* ctx, const v1::RevokeTokenRequest* req,
                                          v1::RevokeTokenResponse* resp) {
  return Unary(GrpcMethod::kRevokeToken, ctx, resp, [&](const Principal& who) { return api_->RevokeToken(*req, who); });
}
grpc::Status LoomGrpcService::ListTokens(grpc::ServerContext* ctx, const v1::ListTokensRequest* req,
                                         v1::ListTokensResponse* resp) {
  return Unary(GrpcMethod::kListTokens, ctx, resp, [&](const Principal& who) { return api_->ListTokens(*req, who); });
}
grpc::Status LoomGrpcService::WhoAmI(grpc::ServerContext* ctx, const v1::WhoAmIRequest*, v1::WhoAmIResponse* resp) {
  return Unary(GrpcMethod::kWhoAmI, ctx, resp, [&](const Principal& who) { return api_->WhoAmI(who); });
}

}  // namespace loom::service
