#include "service/rest_gateway.h"

#include <httplib.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include "common/metrics.h"
#include "common/util.h"

namespace loom::service {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxPathBytes = 2048;  // longer paths are refused before any regex sees them
constexpr const char* kJson = "application/json";

// The path parameters of `path` when it fits `tmpl` (an OpenAPI template such as
// /v1/tasks/{id}:cancel), nullopt otherwise. A parameter is one or more characters other than
// '/' and ':' (ids and names never hold either).
std::optional<std::vector<std::string>> MatchPath(std::string_view tmpl, std::string_view path) {
  std::vector<std::string> params;
  size_t t = 0, p = 0;
  while (t < tmpl.size()) {
    if (tmpl[t] == '{') {
      const size_t start = p;
      while (p < path.size() && path[p] != '/' && path[p] != ':') ++p;
      if (p == start) return std::nullopt;
      params.emplace_back(path.substr(start, p - start));
      t = tmpl.find('}', t) + 1;
    } else {
      if (p >= path.size() || path[p] != tmpl[t]) return std::nullopt;
      ++t;
      ++p;
    }
  }
  if (p != path.size()) return std::nullopt;
  return params;
}

// The regex httplib dispatches `tmpl` by: the same shape as MatchPath.
std::string PathRegex(std::string_view tmpl) {
  std::string out;
  for (size_t t = 0; t < tmpl.size(); ++t) {
    const char c = tmpl[t];
    if (c == '{') {
      out += "([^/:]+)";
      t = tmpl.find('}', t);
      continue;
    }
    // Templates hold no regex metacharacters; keep it that way.
    LOOM_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == ':' || c == '_' || c == '-');
    out += c;
  }
  return out;
}

bool IsBlank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

Result<int64_t> ParseMillis(const std::string& name, const std::string& v) {
  int64_t out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || out < 0) {
    return InvalidArgument("query parameter " + name + "=" + v + " is not a whole number of milliseconds (0 or more)");
  }
  return out;
}

Result<bool> ParseBool(const std::string& name, const std::string& v) {
  if (v == "true" || v == "1" || v.empty()) return true;  // "?include_args" alone means true
  if (v == "false" || v == "0") return false;
  return InvalidArgument("query parameter " + name + "=" + v + " is not true or false");
}

// Path parameters name the object; a body may name it too, but then the same one.
Status BindId(const std::string& from_path, std::string* field, const char* name) {
  if (!field->empty() && *field != from_path) {
    return InvalidArgument(std::string("the body's ") + name + " '" + *field + "' is not the path's '" + from_path +
                           "'");
  }
  *field = from_path;
  return Status::Ok();
}

void WriteError(httplib::Response& res, const Status& s) {
  res.status = HttpStatusFor(s);
  if (s.code() == StatusCode::kUnauthenticated) res.set_header("WWW-Authenticate", "Bearer realm=\"loom\"");
  if (s.retry_after_ms() > 0 && (res.status == 429 || res.status == 503)) {
    res.set_header("Retry-After", std::to_string((s.retry_after_ms() + 999) / 1000));
  }
  res.set_content(ErrorJson(s), kJson);
}

}  // namespace

int HttpStatusFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kAborted:
      return 409;
    // A rate or quota says when to come back; a size limit (message bytes, batch) does not.
    case StatusCode::kResourceExhausted:
      return s.retry_after_ms() > 0 ? 429 : 413;
    case StatusCode::kCancelled:
      return 499;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kUnknown:
    case StatusCode::kInternal:
    case StatusCode::kDataLoss:
      return 500;
  }
  return 500;
}

std::string ErrorJson(const Status& s) {
  return std::string("{\"code\":") + JsonQuote(StatusCodeName(s.code())) + ",\"message\":" + JsonQuote(s.message()) +
         "}";
}

// One request on its way through a route.
struct RestGateway::Call {
  const httplib::Request& req;
  httplib::Response& res;
  const Entry& entry;
  Principal who;
  std::string body;
  std::vector<std::string> params;  // path parameters, in template order
};

struct RestGateway::Entry {
  RestRoute route;
  Handler handler;
};

const std::vector<RestGateway::Entry>& RestGateway::Table() {
  // clang-format off
  static const std::vector<Entry> table = {
    {{"GET", "/v1/health", "Health", false, {}, "", false, ""}, &RestGateway::Health},
    {{"GET", "/v1/whoami", "WhoAmI", true, {}, "", false, "loom.v1.WhoAmIResponse"}, &RestGateway::WhoAmI},
    {{"POST", "/v1/functions", "RegisterFunction", true, {}, "loom.v1.RegisterFunctionRequest", true,
      "loom.v1.RegisterFunctionResponse"}, &RestGateway::RegisterFunction},
    {{"GET", "/v1/functions", "ListFunctions", true, {}, "", false, "loom.v1.ListFunctionsResponse"},
     &RestGateway::ListFunctions},
    {{"GET", "/v1/functions/{name}", "GetFunction", true, {}, "", false, "loom.v1.Function"},
     &RestGateway::GetFunction},
    // Another user's function ("user/name" in gRPC): an admin's reach.
    {{"GET", "/v1/functions/{owner}/{name}", "GetFunctionOf", true, {}, "", false, "loom.v1.Function"},
     &RestGateway::GetFunction},
    {{"POST", "/v1/endpoints", "CreateEndpoint", true, {}, "loom.v1.CreateEndpointRequest", true,
      "loom.v1.EndpointRecord"}, &RestGateway::CreateEndpoint},
    {{"GET", "/v1/endpoints", "ListEndpoints", true, {}, "", false, "loom.v1.ListEndpointsResponse"},
     &RestGateway::ListEndpoints},
    {{"GET", "/v1/endpoints/{id}", "GetEndpoint", true, {}, "", false, "loom.v1.EndpointRecord"},
     &RestGateway::GetEndpoint},
    {{"PATCH", "/v1/endpoints/{id}", "UpdateEndpoint", true, {}, "loom.v1.UpdateEndpointRequest", true,
      "loom.v1.EndpointRecord"}, &RestGateway::UpdateEndpoint},
    {{"POST", "/v1/tasks", "Submit", true, {}, "loom.v1.SubmitRequest", true, "loom.v1.SubmitResponse"},
     &RestGateway::Submit},
    {{"POST", "/v1/tasks:batch", "SubmitBatch", true, {}, "loom.v1.SubmitBatchRequest", true,
      "loom.v1.SubmitBatchResponse"}, &RestGateway::SubmitBatch},
    {{"POST", "/v1/tasks:get", "GetTasks", true, {}, "loom.v1.GetTasksRequest", true, "loom.v1.GetTasksResponse"},
     &RestGateway::GetTasks},
    {{"POST", "/v1/tasks:wait", "WaitResults", true, {}, "loom.v1.WaitResultsRequest", true, "loom.v1.TaskRecord"},
     &RestGateway::WaitResults},
    {{"POST", "/v1/tasks:delete", "DeleteTasks", true, {}, "loom.v1.DeleteTasksRequest", true,
      "loom.v1.DeleteTasksResponse"}, &RestGateway::DeleteTasks},
    {{"GET", "/v1/tasks/{id}", "GetTask", true, {"wait_ms", "include_args"}, "", false, "loom.v1.TaskRecord"},
     &RestGateway::GetTask},
    {{"POST", "/v1/tasks/{id}:cancel", "Cancel", true, {}, "loom.v1.CancelRequest", false, "loom.v1.CancelResponse"},
     &RestGateway::Cancel},
    {{"POST", "/v1/tokens", "CreateToken", true, {}, "loom.v1.CreateTokenRequest", false,
      "loom.v1.CreateTokenResponse"}, &RestGateway::CreateToken},
    {{"GET", "/v1/tokens", "ListTokens", true, {"user"}, "", false, "loom.v1.ListTokensResponse"},
     &RestGateway::ListTokens},
    {{"DELETE", "/v1/tokens/{id}", "RevokeToken", true, {}, "", false, "loom.v1.RevokeTokenResponse"},
     &RestGateway::RevokeToken},
  };
  // clang-format on
  return table;
}

std::vector<RestRoute> RestGateway::Routes() {
  std::vector<RestRoute> out;
  for (const auto& e : Table()) out.push_back(e.route);
  return out;
}

RestGateway::RestGateway(const RestOptions& options, LoomApi* api, Authenticator* auth)
    : options_(options), api_(api), auth_(auth) {
  const int64_t mmb = api->limits().max_message_bytes;
  limits_.max_bytes =
      static_cast<size_t>(options.max_body_bytes > 0 ? options.max_body_bytes : mmb + mmb / 3 + (int64_t{1} << 20));
  limits_.max_depth = options.max_json_depth;
}

Result<std::unique_ptr<RestGateway>> RestGateway::Start(const RestOptions& options, LoomApi* api, Authenticator* auth) {
  LOOM_ASSIGN_OR_RETURN(std::string address, metrics::CheckListenAddress(options.address, "--rest-address"));
  if (options.max_body_bytes < 0) return InvalidArgument("--rest-max-body-bytes must be 0 (the default) or more");
  if (options.max_json_depth < 1) return InvalidArgument("--rest-max-json-depth must be at least 1");
  if (options.threads < 1) return InvalidArgument("--rest-threads must be at least 1");
  if (options.max_wait_ms < 1) return InvalidArgument("--rest-max-wait-ms must be at least 1");
  const size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  const int port = std::stoi(address.substr(colon + 1));  // checked above
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);

  std::unique_ptr<RestGateway> gw(new RestGateway(options, api, auth));
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return InvalidArgument("HTTPS needs both --rest-tls-cert and --rest-tls-key");
  }
  if (!options.tls_cert_file.empty()) {
    for (const auto& f : {options.tls_cert_file, options.tls_key_file}) {
      if (ReadFileOrEmpty(f).empty()) return InvalidArgument("cannot read the TLS file '" + f + "'");
    }
    auto ssl = std::make_unique<httplib::SSLServer>(options.tls_cert_file.c_str(), options.tls_key_file.c_str());
    if (!ssl->is_valid()) {
      return InvalidArgument("the TLS certificate '" + options.tls_cert_file + "' and key '" + options.tls_key_file +
                             "' cannot be used: each must be PEM, and the key must be the certificate's");
    }
    SSL_CTX_set_min_proto_version(ssl->ssl_context(), TLS1_2_VERSION);
    gw->server_ = std::move(ssl);
    gw->tls_ = true;
  } else {
    gw->server_ = std::make_unique<httplib::Server>();
  }
  gw->Register();
  httplib::Server& s = *gw->server_;
  int bound = port;
  if (port == 0) {
    bound = s.bind_to_any_port(host);
  } else if (!s.bind_to_port(host, port)) {
    bound = -1;
  }
  if (bound <= 0) return Unavailable("cannot listen for REST on '" + options.address + "'");
  gw->address_ = (address.front() == '[' ? "[" + host + "]" : host) + ":" + std::to_string(bound);
  RestGateway* g = gw.get();
  gw->listener_ = std::thread([g] {
    g->server_->listen_after_bind();
    g->listener_done_ = true;
  });
  // stop() does nothing before the accept loop runs, so make sure it does before anyone can
  // destroy the gateway; connections made meanwhile wait in the listen backlog.
  while (!s.is_running() && !g->listener_done_) std::this_thread::yield();
  return gw;
}

RestGateway::~RestGateway() {
  stopping_ = true;
  if (server_) server_->stop();
  if (listener_.joinable()) listener_.join();
}

void RestGateway::Register() {
  httplib::Server& s = *server_;
  // httplib owns the pool it is given.
  s.new_task_queue = [n = options_.threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  s.set_payload_max_length(limits_.max_bytes);
  s.set_keep_alive_timeout(2);  // an idle connection holds a thread this long
  s.set_keep_alive_max_count(1000);
  // httplib writes a response's head and body in separate sends: without TCP_NODELAY the body
  // waits for the client's delayed ACK, 40 ms a request.
  s.set_tcp_nodelay(true);
  s.set_read_timeout(10);
  s.set_write_timeout(10);
  // httplib's default is SO_REUSEPORT, with which a second process could listen on our port
  // and take half the connections; reusing an address in TIME_WAIT is all a restart needs.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // httplib reads a POST without Content-Length or chunked encoding until the connection
    // closes; HTTP/1.1 says it has no body (RFC 9112 6.3), so say so before it reads.
    if ((req.method == "POST" || req.method == "PUT" || req.method == "PATCH" || req.method == "DELETE") &&
        !req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) {
      const_cast<httplib::Request&>(req).set_header("Content-Length", "0");  // httplib's own object
    }
    return AnswerUnrouted(req, res) ? httplib::Server::HandlerResponse::Handled
                                    : httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors httplib answers by itself (malformed request, body over the limit, URI too long)
  // get a JSON body too; those the routes answered keep theirs.
  s.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    Status st;
    switch (res.status) {
      case 413:
        st = ResourceExhausted("the request body is over the limit of " + std::to_string(limits_.max_bytes) +
                               " bytes (--rest-max-body-bytes)");
        break;
      case 414:
        st = InvalidArgument("the request URI is too long");
        break;
      case 400:
        st = InvalidArgument("malformed HTTP request");
        break;
      default:
        st = Status(StatusCode::kUnknown, "HTTP " + std::to_string(res.status));
        break;
    }
    spdlog::debug("REST {} {}: {}", req.method, req.path, st.ToString());
    const int status = res.status;
    WriteError(res, st);
    res.status = status;
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("REST {} {}: {}", req.method, req.path, what);
    WriteError(res, Internal("the service failed on this request: " + what));
  });

  for (const Entry& e : Table()) {
    const std::string pattern = PathRegex(e.route.path);
    const Entry* entry = &e;
    auto plain = [this, entry](const httplib::Request& req, httplib::Response& res) {
      Serve(*entry, req, res, nullptr);
    };
    auto with_body = [this, entry](const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& reader) { Serve(*entry, req, res, &reader); };
    // Bodies are read by the route, so that it can stop at the limit whatever the encoding
    // (httplib bounds only bodies with a Content-Length).
    if (e.route.method == "GET") {
      s.Get(pattern, plain);
    } else if (e.route.method == "POST") {
      s.Post(pattern, with_body);
    } else if (e.route.method == "PATCH") {
      s.Patch(pattern, with_body);
    } else if (e.route.method == "DELETE") {
      s.Delete(pattern, with_body);
    } else {
      LOOM_CHECK(false && "a route with a method Register() does not know");
    }
  }
}

bool RestGateway::AnswerUnrouted(const httplib::Request& req, httplib::Response& res) const {
  const bool has_body = req.get_header_value("Content-Length", 0) != "0" || req.has_header("Transfer-Encoding");
  auto answer = [&](const Status& st) {
    spdlog::debug("REST {} {}: {}", req.method, req.path, st.ToString());
    WriteError(res, st);
    // The body was not read: the connection cannot carry another request.
    if (has_body) res.set_header("Connection", "close");
    return true;
  };
  if (req.path.size() > kMaxPathBytes) {
    Status st = InvalidArgument("the path is longer than " + std::to_string(kMaxPathBytes) + " bytes");
    answer(st);
    res.status = 414;
    return true;
  }
  const std::string method = req.method == "HEAD" ? "GET" : req.method;
  std::vector<std::string> allowed;
  for (const Entry& e : Table()) {
    if (!MatchPath(e.route.path, req.path)) continue;
    if (e.route.method == method) return false;
    allowed.push_back(e.route.method);
  }
  if (allowed.empty()) {
    return answer(NotFound("no route for " + req.method + " " + req.path + "; the routes are in docs/openapi.yaml"));
  }
  answer(Status(StatusCode::kUnimplemented,
                "method " + req.method + " is not allowed on " + req.path + "; allowed: " + JoinNames(allowed)));
  res.status = 405;
  res.set_header("Allow", JoinNames(allowed));
  return true;
}

Status RestGateway::ReadBody(httplib::Response& res, const httplib::ContentReader& reader, std::string* body) const {
  bool over = false;
  const bool ok = reader([&](const char* data, size_t n) {
    if (body->size() + n > limits_.max_bytes) {
      over = true;
      return false;
    }
    body->append(data, n);
    return true;
  });
  if (ok) return Status::Ok();
  // The rest of the body was not read: the connection cannot carry another request.
  res.set_header("Connection", "close");
  if (over || res.status == 413) {
    return ResourceExhausted("the request body is over the limit of " + std::to_string(limits_.max_bytes) +
                             " bytes (--rest-max-body-bytes)");
  }
  return InvalidArgument(
      "cannot read the request body (malformed chunked encoding or compression, or the client stopped sending)");
}

void RestGateway::Serve(const Entry& e, const httplib::Request& req, httplib::Response& res,
                        const httplib::ContentReader* reader) {
  Call c{req, res, e, {}, {}, {}};
  Status s = [&]() -> Status {
    if (reader != nullptr) LOOM_RETURN_IF_ERROR(ReadBody(res, *reader, &c.body));
    auto params = MatchPath(e.route.path, req.path);
    if (!params) return Internal("route " + e.route.path + " was dispatched for " + req.path);
    c.params = std::move(*params);
    for (const auto& p : c.params) {
      if (!IsValidUtf8(p)) return InvalidArgument("the path parameter is not valid UTF-8");
    }
    for (const auto& [key, value] : req.params) {
      if (std::find(e.route.query.begin(), e.route.query.end(), key) == e.route.query.end()) {
        return InvalidArgument("unknown query parameter '" + key + "' for " + e.route.method + " " + e.route.path +
                               (e.route.query.empty() ? "; it takes none" : "; it takes: " + JoinNames(e.route.query)));
      }
    }
    if (e.route.request.empty() && !IsBlank(c.body)) {
      return InvalidArgument(e.route.method + " " + e.route.path + " takes no request body");
    }
    if (e.route.authenticated) {
      if (auth_ != nullptr) {
        LOOM_ASSIGN_OR_RETURN(c.who, auth_->Authenticate(req.get_header_value("Authorization")));
      } else {
        c.who = LocalPrincipal();
      }
    }
    return (this->*e.handler)(c);
  }();
  if (s.ok()) return;
  // Request errors at debug; the service failing at error; an outage (Redis away, a deadline)
  // at warn, since it repeats for every request while it lasts.
  const int status = HttpStatusFor(s);
  const auto level = status == 500                    ? spdlog::level::err
                     : status == 503 || status == 504 ? spdlog::level::warn
                                                      : spdlog::level::debug;
  spdlog::log(level, "REST {} {} -> {}: {}", req.method, req.path, status, s.ToString());
  WriteError(res, s);
}

Status RestGateway::ParseBody(const Call& c, google::protobuf::Message* msg) const {
  if (IsBlank(c.body)) {
    if (c.entry.route.request_required) {
      return InvalidArgument(c.entry.route.method + " " + c.entry.route.path + " needs a JSON body: a " +
                             c.entry.route.request + " (see docs/openapi.yaml); the request had none");
    }
    msg->Clear();
    return Status::Ok();
  }
  return JsonToMessage(c.body, msg, limits_);
}

Status RestGateway::Reply(Call& c, int http_status, const google::protobuf::Message& msg) const {
  LOOM_ASSIGN_OR_RETURN(std::string json, MessageToJson(msg));
  c.res.status = http_status;
  c.res.set_content(std::move(json), kJson);
  return Status::Ok();
}

int64_t RestGateway::CapWait(int64_t wait_ms) const { return std::min(wait_ms, options_.max_wait_ms); }

Result<v1::GetTasksResponse> RestGateway::LongPoll(const v1::GetTasksRequest& req, const Principal& who) {
  auto resp = api_->GetTasks(req, who, [this] { return stopping_.load(); });
  // Cut short by a stopping service: the client should poll again (perhaps another replica).
  if (!resp.ok() && resp.status().code() == StatusCode::kCancelled && stopping_) {
    return Unavailable("the service is stopping; poll again");
  }
  return resp;
}

Status RestGateway::Health(Call& c) {
  c.res.status = 200;
  c.res.set_content(R"({"status":"ok"})", kJson);
  return Status::Ok();
}

Status RestGateway::WhoAmI(Call& c) {
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->WhoAmI(c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::RegisterFunction(Call& c) {
  v1::RegisterFunctionRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->RegisterFunction(req, c.who));
  return Reply(c, resp.created() ? 201 : 200, resp);
}

Status RestGateway::ListFunctions(Call& c) {
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->ListFunctions(c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::GetFunction(Call& c) {
  v1::GetFunctionRequest req;
  req.set_name(c.params.size() == 2 ? c.params[0] + "/" + c.params[1] : c.params[0]);
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->GetFunction(req, c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::CreateEndpoint(Call& c) {
  v1::CreateEndpointRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->CreateEndpoint(req, c.who));
  c.res.set_header("Location", "/v1/endpoints/" + resp.id());
  return Reply(c, 201, resp);
}

Status RestGateway::ListEndpoints(Call& c) {
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->ListEndpoints(c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::GetEndpoint(Call& c) {
  v1::GetEndpointRequest req;
  req.set_id(c.params[0]);
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->GetEndpoint(req, c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::UpdateEndpoint(Call& c) {
  v1::UpdateEndpointRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_RETURN_IF_ERROR(BindId(c.params[0], req.mutable_id(), "id"));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->UpdateEndpoint(req, c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::Submit(Call& c) {
  v1::SubmitRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->Submit(req, c.who));
  c.res.set_header("Location", "/v1/tasks/" + resp.task_id());
  return Reply(c, 201, resp);
}

Status RestGateway::SubmitBatch(Call& c) {
  v1::SubmitBatchRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->SubmitBatch(req, c.who));
  return Reply(c, 201, resp);
}

Status RestGateway::GetTasks(Call& c) {
  v1::GetTasksRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  if (req.wait_ms() < 0) return InvalidArgument("wait_ms " + std::to_string(req.wait_ms()) + " is negative");
  req.set_wait_ms(CapWait(req.wait_ms()));
  LOOM_ASSIGN_OR_RETURN(auto resp, LongPoll(req, c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::GetTask(Call& c) {
  v1::GetTasksRequest req;
  req.add_task_ids(c.params[0]);
  if (c.req.has_param("wait_ms")) {
    LOOM_ASSIGN_OR_RETURN(int64_t wait, ParseMillis("wait_ms", c.req.get_param_value("wait_ms")));
    req.set_wait_ms(CapWait(wait));
  }
  if (c.req.has_param("include_args")) {
    LOOM_ASSIGN_OR_RETURN(bool include, ParseBool("include_args", c.req.get_param_value("include_args")));
    req.set_include_args(include);
  }
  LOOM_ASSIGN_OR_RETURN(auto resp, LongPoll(req, c.who));
  if (resp.tasks_size() != 1) return Internal("GetTasks answered " + std::to_string(resp.tasks_size()) + " records");
  return Reply(c, 200, resp.tasks(0));
}

Status RestGateway::WaitResults(Call& c) {
  constexpr size_t kFlushBytes = 1 << 20;  // the records ready together go out in writes of about this much
  v1::WaitResultsRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  if (req.timeout_ms() < 0) return InvalidArgument("timeout_ms " + std::to_string(req.timeout_ms()) + " is negative");
  // Once the stream starts, its HTTP status is 200. Whatever would fail the wait at once
  // (unknown or forbidden tasks, too many ids) fails this read the same way, and gets its own
  // HTTP status.
  v1::GetTasksRequest check;
  *check.mutable_task_ids() = req.task_ids();
  LOOM_RETURN_IF_ERROR(api_->GetTasks(check, c.who).status());
  c.res.status = 200;
  c.res.set_chunked_content_provider(
      "application/x-ndjson", [this, req = std::move(req), who = c.who](size_t, httplib::DataSink& sink) {
        auto last_write = Clock::now();
        bool client_gone = false;
        auto send = [&](const std::string& line) {
          last_write = Clock::now();
          if (!sink.write(line.data(), line.size())) client_gone = true;
          return !client_gone;
        };
        Status s = api_->WaitResults(
            req, who,
            [&](const LoomApi::Burst& burst) {
              std::string lines;
              for (const auto* r : burst) {
                auto json = MessageToJson(*r);
                if (!json.ok()) json = ErrorJson(json.status());  // cannot happen for records read from the store
                lines += *json + "\n";
                if (lines.size() >= kFlushBytes) {
                  if (!send(lines)) return false;
                  lines.clear();
                }
              }
              return lines.empty() || send(lines);
            },
            [&] {
              if (stopping_ || client_gone) return true;
              // Only a write tells whether the client is still there.
              if (Clock::now() - last_write >= options_.stream_keepalive) return !send("\n");
              return false;
            });
        if (client_gone) return false;
        if (stopping_ && s.code() == StatusCode::kCancelled)
          s = Unavailable("the service is shutting down; wait again");
        spdlog::debug("REST stream of {} results ended: {}", req.task_ids_size(), s.ToString());
        send("{\"status\":" + ErrorJson(s) + "}\n");
        sink.done();
        return true;
      });
  return Status::Ok();
}

Status RestGateway::DeleteTasks(Call& c) {
  v1::DeleteTasksRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->DeleteTasks(req, c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::Cancel(Call& c) {
  v1::CancelRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_RETURN_IF_ERROR(BindId(c.params[0], req.mutable_task_id(), "task_id"));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->Cancel(req, c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::CreateToken(Call& c) {
  v1::CreateTokenRequest req;
  LOOM_RETURN_IF_ERROR(ParseBody(c, &req));
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->CreateToken(req, c.who));
  return Reply(c, 201, resp);
}

Status RestGateway::ListTokens(Call& c) {
  v1::ListTokensRequest req;
  if (c.req.has_param("user")) req.set_user(c.req.get_param_value("user"));
  if (!IsValidUtf8(req.user())) return InvalidArgument("query parameter user is not valid UTF-8");
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->ListTokens(req, c.who));
  return Reply(c, 200, resp);
}

Status RestGateway::RevokeToken(Call& c) {
  v1::RevokeTokenRequest req;
  req.set_id(c.params[0]);
  LOOM_ASSIGN_OR_RETURN(auto resp, api_->RevokeToken(req, c.who));
  return Reply(c, 200, resp);
}

}  // namespace loom::service
