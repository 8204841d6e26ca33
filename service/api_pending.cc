// TEMPORARY, for the rest-gateway branch only: stand-ins for the LoomApi methods that api.h
// declares and main is defining (tokens, endpoint access, whoami), so that this branch links.
// They are weak: main's definitions in api.cc replace them when the branches meet, and then this
// file is to be deleted (with its line in service/CMakeLists.txt).
#include "service/api.h"

namespace loom::service {

namespace {
Status Pending(const char* what) {
  return Status(StatusCode::kUnimplemented, std::string(what) + " is not implemented in this build yet");
}
}  // namespace

[[gnu::weak]] Result<v1::EndpointRecord> LoomApi::UpdateEndpoint(const v1::UpdateEndpointRequest&, const Principal&) {
  return Pending("UpdateEndpoint");
}
[[gnu::weak]] Result<v1::CreateTokenResponse> LoomApi::CreateToken(const v1::CreateTokenRequest&, const Principal&) {
  return Pending("CreateToken");
}
[[gnu::weak]] Result<v1::RevokeTokenResponse> LoomApi::RevokeToken(const v1::RevokeTokenRequest&, const Principal&) {
  return Pending("RevokeToken");
}
[[gnu::weak]] Result<v1::ListTokensResponse> LoomApi::ListTokens(const v1::ListTokensRequest&, const Principal&) {
  return Pending("ListTokens");
}
[[gnu::weak]] Result<v1::WhoAmIResponse> LoomApi::WhoAmI(const Principal& who) {
  v1::WhoAmIResponse r;
  r.set_user(who.user);
  r.set_admin(who.admin);
  return r;
}

}  // namespace loom::service
