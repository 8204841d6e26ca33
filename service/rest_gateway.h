// RestGateway: the REST/JSON face of LoomApi, served by loom-service over HTTP/1.1 (HTTPS with a
// certificate) under /v1. Each route maps onto the same LoomApi method as its gRPC call; bodies
// are protobuf's JSON mapping of the same messages (service/json_codec.h). Errors are
// {"code": "NOT_FOUND", "message": "..."} with the HTTP status of HttpStatusFor().
//
//   auto gw = RestGateway::Start({.address = "127.0.0.1:0"}, &api, &authenticator);
//   // curl -H "Authorization: Bearer $TOKEN" http://<gw->address()>/v1/functions
//
// Every route but /v1/health authenticates "Authorization: Bearer <token>" with the
// Authenticator (null: none, every caller is LocalPrincipal()) and passes the Principal to
// LoomApi; the gateway itself authorizes nothing. The routes are one table (Routes()), which
// docs/openapi.yaml documents and a test compares with it both ways.
//
// Thread-safe; requests run on a pool of `threads` threads. A long poll or a result stream
// holds one thread while it waits.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "service/api.h"
#include "service/auth.h"
#include "service/json_codec.h"

namespace httplib {
class Server;
struct Request;
struct Response;
class ContentReader;
}  // namespace httplib

namespace loom::service {

struct RestOptions {
  std::string address;        // HOST:PORT to listen on; port 0 picks a free one
  std::string tls_cert_file;  // PEM certificate (chain); with tls_key_file, serve HTTPS
  std::string tls_key_file;   // PEM private key of the certificate
  // Largest request body; over it: 413 before parsing. 0: room for a message of the API's
  // max_message_bytes in JSON (4/3 of it, for base64 bytes and tensors, plus 1 MiB).
  int64_t max_body_bytes = 0;
  int max_json_depth = 64;  // objects and arrays inside each other in a body; deeper: 400
  int threads = 32;         // requests served at once (each long poll or stream holds one)
  // Long polls (GET /v1/tasks/{id}?wait_ms=, POST /v1/tasks:get) wait at most this long, since
  // a client that went away cannot be noticed before the answer is written.
  int64_t max_wait_ms = 60000;
  // A result stream (POST /v1/tasks:wait) with nothing to send writes an empty line this often,
  // to find out whether the client is still there.
  std::chrono::milliseconds stream_keepalive{10000};
};

// One route: what docs/openapi.yaml documents.
struct RestRoute {
  std::string method;              // GET, POST, PATCH, DELETE
  std::string path;                // OpenAPI template, e.g. /v1/tasks/{id}:cancel
  std::string operation;           // operationId
  bool authenticated = true;       // takes Authorization: Bearer <token>
  std::vector<std::string> query;  // query parameters it accepts
  std::string request;             // the loom.v1 message of its body; empty: no body
  bool request_required = false;   // an empty body is refused (otherwise it is the message's defaults)
  std::string response;            // the loom.v1 message it answers with (empty: its own shape)
};

// The HTTP status for a Status (the table in docs/REST.md).
int HttpStatusFor(const Status& s);
// {"code": "NOT_FOUND", "message": "..."}.
std::string ErrorJson(const Status& s);

class RestGateway {
 public:
  // Listens and serves until destroyed. `api` and `auth` (may be null: no authentication) must
  // outlive the gateway. INVALID_ARGUMENT for a bad address or TLS files, UNAVAILABLE when it
  // cannot listen.
  static Result<std::unique_ptr<RestGateway>> Start(const RestOptions& options, LoomApi* api, Authenticator* auth);
  // Stops listening, ends long polls (503) and streams (an UNAVAILABLE status line), and waits
  // for the requests in progress.
  ~RestGateway();
  RestGateway(const RestGateway&) = delete;
  RestGateway& operator=(const RestGateway&) = delete;

  // HOST:PORT actually bound.
  const std::string& address() const { return address_; }
  bool tls() const { return tls_; }
  int64_t max_body_bytes() const { return static_cast<int64_t>(limits_.max_bytes); }

  // Every route served, in the order they are matched.
  static std::vector<RestRoute> Routes();

 private:
  struct Call;
  struct Entry;
  using Handler = Status (RestGateway::*)(Call&);
  static const std::vector<Entry>& Table();

  RestGateway(const RestOptions& options, LoomApi* api, Authenticator* auth);
  void Register();
  void Serve(const Entry& e, const httplib::Request& req, httplib::Response& res, const httplib::ContentReader* reader);
  Status ReadBody(httplib::Response& res, const httplib::ContentReader& reader, std::string* body) const;
  // Answers a request no route takes: 405 (with Allow) when another method takes the path,
  // 404 otherwise. Returns false when some route takes it.
  bool AnswerUnrouted(const httplib::Request& req, httplib::Response& res) const;
  Status ParseBody(const Call& c, google::protobuf::Message* msg) const;
  Status Reply(Call& c, int http_status, const google::protobuf::Message& msg) const;
  int64_t CapWait(int64_t wait_ms) const;
  // LoomApi::GetTasks, ended early (UNAVAILABLE) when the gateway stops.
  Result<v1::GetTasksResponse> LongPoll(const v1::GetTasksRequest& req, const Principal& who);

  Status Health(Call& c);
  Status WhoAmI(Call& c);
  Status RegisterFunction(Call& c);
  Status ListFunctions(Call& c);
  Status GetFunction(Call& c);
  Status CreateEndpoint(Call& c);
  Status ListEndpoints(Call& c);
  Status GetEndpoint(Call& c);
  Status UpdateEndpoint(Call& c);
  Status Submit(Call& c);
  Status SubmitBatch(Call& c);
  Status GetTasks(Call& c);
  Status WaitResults(Call& c);
  Status DeleteTasks(Call& c);
  Status GetTask(Call& c);
  Status Cancel(Call& c);
  Status CreateToken(Call& c);
  Status ListTokens(Call& c);
  Status RevokeToken(Call& c);

  const RestOptions options_;
  LoomApi* api_;
  Authenticator* auth_;
  JsonLimits limits_;
  bool tls_ = false;
  std::string address_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  std::atomic<bool> stopping_{false};
};

}  // namespace loom::service
