// `loom`: the command-line client of the Loom service, built on the C++ SDK (loom/client.h).
//
//   loom [--service ADDR] [--token T | --token-file F] [--tls-ca PEM] [--json] [--rpc-timeout SECONDS] <command>
//     function register NAME --kernel name@version [--description D] [--config key=literal ...]
//                       [--max-attempts N] [--timeout-ms MS] [--requires CLASS ...]
//     function list | function get NAME
//     endpoint create NAME [--id ID] [--allow-user U ...] [--allow-function F ...] | endpoint list
//     endpoint status ID | endpoint share|unshare ID [--user U ...] [--function F ...]
//     token create [--user U] [--admin] [--expires 30d] [--description D] | token list [--user U|*]
//     token revoke ID | whoami
//     endpoint configure ID [--name N] [--key-dir DIR] [--allow-user U ...] [--allow-function F ...]
//                        [--service-public-key KEY | --service-public-key-file FILE] [--endpoint-address ADDR]
//                        (also writes a commented config.yaml into the endpoint's directory)
//     endpoint start NAME [--wait SECONDS] | endpoint stop NAME [--timeout SECONDS] | endpoint list --local
//       (endpoint daemons on this host, in $LOOM_HOME/endpoints/NAME; `endpoint status` shows them too)
//     run --endpoint EP --function F [ARG ...] [--kwarg key=literal ...] [TASK OPTIONS] [--timeout SECONDS]
//     submit --endpoint EP --function F [ARG ...] [--kwarg key=literal ...] [TASK OPTIONS]   (prints the id)
//       TASK OPTIONS: [--idempotency-key KEY] [--max-attempts N] [--timeout-ms MS]
//     task status|get ID | task result ID [--wait SECONDS] | task cancel ID | task delete ID...
//
// Exit codes: 0 success, 1 the task failed or was cancelled, 2 usage or RPC error, 3 timeout.
// Errors go to stderr as `error: CODE: message`; --json prints protobuf JSON, one object a line.
#include <google/protobuf/util/json_util.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "common/curve.h"
#include "common/task_state.h"
#include "common/util.h"
#include "common/value.h"
#include "endpoint_daemons.h"
#include "loom/client.h"

namespace loom {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitTaskFailed = 1;
constexpr int kExitError = 2;
constexpr int kExitTimeout = 3;

struct GlobalFlags {
  std::string service = "127.0.0.1:50051";
  std::string token;
  std::string token_file;
  std::string tls_ca;
  bool json = false;
  double rpc_timeout_s = 30;
};

// "90", "90s", "15m", "12h", "30d" -> seconds.
Result<int64_t> ParseDuration(const std::string& text) {
  if (text.empty()) return InvalidArgument("--expires takes a duration such as 3600, 15m, 12h or 30d");
  int64_t unit = 1;
  std::string digits = text;
  switch (text.back()) {
    case 's':
      digits.pop_back();
      break;
    case 'm':
      unit = 60;
      digits.pop_back();
      break;
    case 'h':
      unit = 3600;
      digits.pop_back();
      break;
    case 'd':
      unit = 86400;
      digits.pop_back();
      break;
    default:
      break;
  }
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument("--expires '" + text + "' is not a duration: use 3600, 15m, 12h or 30d");
  }
  const int64_t n = std::stoll(digits) * unit;
  if (n <= 0) return InvalidArgument("--expires must be positive");
  return n;
}

void AddAll(google::protobuf::RepeatedPtrField<std::string>* list, const std::vector<std::string>& items) {
  for (const auto& i : items) {
    if (std::find(list->begin(), list->end(), i) == list->end()) *list->Add() = i;
  }
}

void RemoveAll(google::protobuf::RepeatedPtrField<std::string>* list, const std::vector<std::string>& items) {
  google::protobuf::RepeatedPtrField<std::string> kept;
  for (const auto& i : *list) {
    if (std::find(items.begin(), items.end(), i) == items.end()) *kept.Add() = i;
  }
  *list = std::move(kept);
}

int Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
  return kExitError;
}

void PrintJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = false;
  if (!google::protobuf::util::MessageToJsonString(m, &out, options).ok()) out = "{}";
  std::printf("%s\n", out.c_str());
}

// Left-aligned columns, two spaces apart.
void PrintTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  };
  print_row(header);
  for (const auto& row : rows) print_row(row);
}

// ("ENDPOINT_STATUS_NEVER_CONNECTED", "ENDPOINT_STATUS_") -> "never-connected".
std::string EnumDisplayName(std::string name, const std::string& prefix) {
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return c == '_' ? '-' : std::tolower(c); });
  return name;
}

std::string EndpointStatusName(v1::EndpointStatus s) {
  return EnumDisplayName(v1::EndpointStatus_Name(s), "ENDPOINT_STATUS_");
}

// FAILURE_KIND_WORKER_LOST -> "worker-lost".
std::string FailureKindName(v1::FailureKind f) { return EnumDisplayName(v1::FailureKind_Name(f), "FAILURE_KIND_"); }

// Parses "key=literal" items into named values.
Result<Kwargs> ParseAssignments(const std::vector<std::string>& items, const std::string& flag) {
  Kwargs out;
  for (const auto& item : items) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument(flag + " takes key=literal, got '" + item + "'");
    }
    LOOM_ASSIGN_OR_RETURN(Value v, ParseValueLiteral(item.substr(eq + 1)));
    out[item.substr(0, eq)] = std::move(v);
  }
  return out;
}

// The whole content of `path` as a bytes value (an image file, say), for --arg-file/--kwarg-file.
Result<Value> FileValue(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument(flag + ": cannot open '" + path + "': " + std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return InvalidArgument(flag + ": cannot read '" + path + "'");
  return BytesValue(std::move(bytes));
}

std::chrono::milliseconds Seconds(double s) {
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(std::max(0.0, s) * 1000)));
}

std::string FormatSeconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", s);
  return buf;
}

void PrintTaskRecord(const v1::TaskRecord& r) {
  std::printf("task      %s\n", r.id().c_str());
  std::printf("function  %s\n", r.function().c_str());
  std::printf("endpoint  %s\n", r.endpoint().c_str());
  std::printf("state     %s\n", TaskStateName(r.state()));
  // A record from a service without retries has neither count.
  if (r.max_attempts() > 0) {
    std::printf("attempts  %d of %d\n", r.attempts(), r.max_attempts());
  } else if (r.attempts() > 0) {
    std::printf("attempts  %d\n", r.attempts());
  }
  if (r.failure() != v1::FAILURE_KIND_UNSPECIFIED) std::printf("failure   %s\n", FailureKindName(r.failure()).c_str());
  if (r.timeout_ms() > 0) std::printf("timeout   %lld ms\n", static_cast<long long>(r.timeout_ms()));
  if (!r.idempotency_key().empty()) std::printf("key       %s\n", r.idempotency_key().c_str());
  if (r.state() == v1::TASK_STATE_SUCCESS) std::printf("result    %s\n", DebugString(r.result()).c_str());
  if (!r.error().empty()) std::printf("error     %s\n", r.error().c_str());
  const std::vector<StageTiming> timeline = Timeline(r);
  // Deltas count from "received" when the record has it, else from the first stage.
  int64_t origin = timeline.empty() ? 0 : timeline.front().unix_nanos;
  for (const auto& t : timeline) {
    if (t.stage == "received") {
      origin = t.unix_nanos;
      break;
    }
  }
  char buf[64];
  if (r.attempt_history_size() > 0) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : r.attempt_history()) {
      std::string ended = "-";
      if (a.ended_unix_nanos() > 0 && origin > 0) {
        std::snprintf(buf, sizeof(buf), "%+.3f s", static_cast<double>(a.ended_unix_nanos() - origin) / 1e9);
        ended = buf;
      }
      rows.push_back({"  " + std::to_string(a.number()), a.endpoint().empty() ? "-" : a.endpoint(),
                      std::to_string(a.lease_epoch()), FailureKindName(a.failure()), ended,
                      a.error().empty() ? "-" : a.error()});
    }
    std::printf("attempt history:\n");
    PrintTable({"  attempt", "endpoint", "lease-epoch", "failure", "ended", "error"}, rows);
  }
  if (timeline.empty()) return;
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : timeline) {
    std::vector<std::string> row{"  " + t.stage};
    std::snprintf(buf, sizeof(buf), "%+.1f", static_cast<double>(t.unix_nanos - origin) / 1e3);
    row.emplace_back(buf);
    std::snprintf(buf, sizeof(buf), "%.1f", t.since_previous_us);
    row.emplace_back(buf);
    rows.push_back(std::move(row));
  }
  std::printf("timestamps:\n");
  PrintTable({"  stage", "us-since-received", "us-since-previous"}, rows);
}

// Prints a finished task the way `run` and `task result` do; returns the exit code.
int ReportFinished(const v1::TaskRecord& r, bool json) {
  if (json) PrintJson(r);
  if (r.state() == v1::TASK_STATE_SUCCESS) {
    if (!json) std::printf("%s\n", DebugString(r.result()).c_str());
    return kExitOk;
  }
  const std::string failure =
      r.failure() == v1::FAILURE_KIND_UNSPECIFIED ? "" : " (" + FailureKindName(r.failure()) + ")";
  std::fprintf(stderr, "error: task %s %s%s: %s\n", r.id().c_str(), TaskStateName(r.state()), failure.c_str(),
               r.error().empty() ? "(no message)" : r.error().c_str());
  return kExitTaskFailed;
}

int NotFinished(Client& client, const std::string& id, double waited_s) {
  std::string state = "unknown";
  if (auto r = client.GetStatus(id); r.ok()) state = TaskStateName(r->state());
  std::fprintf(stderr,
               "error: DEADLINE_EXCEEDED: task %s is not finished after %s s (state: %s); wait longer with "
               "`loom task result %s --wait SECONDS`\n",
               id.c_str(), FormatSeconds(waited_s).c_str(), state.c_str(), id.c_str());
  return kExitTimeout;
}

// CLI11 splits a value "[a,b]" of a multi-value option into "a" and "b", which would turn the
// list literal `loom run ... [1,2]` into two arguments. Values of `run` that look like that are
// marked before parsing so CLI11 leaves them whole, and unmarked after.
constexpr char kProtectMark = '\x1f';

void ProtectBracketLiterals(std::vector<std::string>& args) {
  auto run = std::find_if(args.begin(), args.end(), [](const std::string& a) { return a == "run" || a == "submit"; });
  if (run == args.end()) return;
  for (auto it = run + 1; it != args.end(); ++it) {
    if (it->size() >= 2 && it->front() == '[' && it->back() == ']') it->insert(it->begin(), kProtectMark);
  }
}

void Unprotect(std::string& value) {
  if (!value.empty() && value.front() == kProtectMark) value.erase(value.begin());
}

// What `run` and `submit` take to submit one task.
struct TaskFlags {
  std::string endpoint;
  std::string function;
  std::vector<std::string> args;
  std::vector<std::string> kwargs;
  std::vector<std::string> arg_files;
  std::vector<std::string> kwarg_files;
  SubmitOptions options;
};

void AddTaskOptions(CLI::App* command, TaskFlags& f) {
  command
      ->add_option("--endpoint", f.endpoint,
                   "Endpoint id, or group:NAME (the service picks a live member of the group by load)")
      ->required();
  command->add_option("--function", f.function, "Function name")->required();
  command->add_option("ARG", f.args,
                      "Positional arguments as literals: 3, 2.5, true, null, \"text\", [1,2], {\"k\":1}");
  command->add_option("--kwarg", f.kwargs, "Keyword argument key=literal (repeatable)")->allow_extra_args(false);
  command
      ->add_option("--arg-file", f.arg_files,
                   "Positional argument: the bytes of a file, e.g. a PNG or TIFF image (repeatable; after the ARGs)")
      ->allow_extra_args(false);
  command->add_option("--kwarg-file", f.kwarg_files, "Keyword argument key=PATH: the bytes of a file (repeatable)")
      ->allow_extra_args(false);
  command->add_option("--idempotency-key", f.options.idempotency_key,
                      "Submit at most once per key: a repeat (or an automatic retry) returns the first task's id");
  command
      ->add_option("--max-attempts", f.options.max_attempts,
                   "Attempts when the worker or endpoint is lost (default: the function's)")
      ->check(CLI::NonNegativeNumber);
  command
      ->add_option("--timeout-ms", f.options.timeout_ms,
                   "Walltime of one attempt in milliseconds; the task fails past it (default: the function's)")
      ->check(CLI::NonNegativeNumber);
  command->add_flag("--failover", f.options.failover,
                    "If the endpoint is lost, run on another endpoint of its group that offers the kernel");
  command->add_flag("--trace", f.options.trace,
                    "Also stamp when the service's Redis writes returned (service_committed, result_committed)");
}

// Call after parsing: undoes ProtectBracketLiterals.
void UnprotectTaskFlags(TaskFlags& f) {
  Unprotect(f.endpoint);
  Unprotect(f.function);
  for (auto& a : f.args) Unprotect(a);
}

Result<std::string> SubmitTask(Client& client, const TaskFlags& f) {
  std::vector<Value> args;
  for (const auto& a : f.args) {
    LOOM_ASSIGN_OR_RETURN(Value v, ParseValueLiteral(a));
    args.push_back(std::move(v));
  }
  for (const auto& path : f.arg_files) {
    LOOM_ASSIGN_OR_RETURN(Value v, FileValue(path, "--arg-file"));
    args.push_back(std::move(v));
  }
  LOOM_ASSIGN_OR_RETURN(Kwargs kwargs, ParseAssignments(f.kwargs, "--kwarg"));
  for (const auto& item : f.kwarg_files) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) return InvalidArgument("--kwarg-file takes key=PATH, got '" + item + "'");
    LOOM_ASSIGN_OR_RETURN(kwargs[item.substr(0, eq)], FileValue(item.substr(eq + 1), "--kwarg-file"));
  }
  return client.Submit(f.endpoint, f.function, std::move(args), kwargs, f.options);
}

struct EndpointConfigureFlags {
  std::string id;
  std::string name;
  std::string key_dir;
  std::vector<std::string> allowed_users;
  std::vector<std::string> allowed_functions;
  std::string service_public_key;
  std::string service_public_key_file;
  std::string endpoint_address;
};

// The commented config.yaml next to the keys, for `loom endpoint start` (an existing one is kept).
int WriteEndpointConfig(const EndpointConfigureFlags& f, const v1::EndpointRecord& record, const std::string& dir,
                        const std::string& secret_path, const std::string& service_key, bool quiet) {
  cli::ConfigTemplateValues v;
  v.id = record.id();
  v.service_address = f.endpoint_address;
  v.secret_key_file = secret_path;
  v.service_public_key = service_key;
  v.owner = record.owner();
  v.allowed_users.assign(record.allowed_users().begin(), record.allowed_users().end());
  v.allowed_functions.assign(record.allowed_functions().begin(), record.allowed_functions().end());
  bool written = false;
  const std::string path = dir + "/config.yaml";
  if (Status s = cli::WriteConfigTemplate(path, v, &written); !s.ok()) return Fail(s);
  if (quiet) return kExitOk;
  std::printf("config %s: %s%s\n", written ? "written" : "kept", path.c_str(),
              f.key_dir.empty() ? (" (`loom endpoint start " + f.id + "` runs it)").c_str() : "");
  return kExitOk;
}

// `loom endpoint configure`: the key pair (kept if it exists, so a re-run or a restarted
// endpoint keeps its identity), then the record: created, or updated when it exists (the
// service lets only its owner do that).
int ConfigureEndpoint(Client& client, const EndpointConfigureFlags& f, bool json) {
  std::string dir = f.key_dir;
  if (dir.empty()) {
    auto d = cli::EndpointDir(f.id);
    if (!d.ok()) return Fail(d.status());
    dir = *d;
  }
  std::string service_key = f.service_public_key;
  if (!f.service_public_key_file.empty()) {
    auto k = curve::ReadPublicKeyFile(f.service_public_key_file);
    if (!k.ok()) return Fail(k.status());
    service_key = *k;
  }
  if (!service_key.empty()) {
    if (Status s = curve::CheckKey(service_key, "--service-public-key"); !s.ok()) return Fail(s);
  }
  const std::string secret_path = dir + "/endpoint.key";
  bool created_keys = false;
  auto keys = curve::LoadOrCreateSecretKeyFile(secret_path, &created_keys);
  if (!keys.ok()) return Fail(keys.status());
  if (Status s = curve::WritePublicKeyFile(dir + "/endpoint.pub", keys->public_key); !s.ok()) return Fail(s);

  EndpointOptions options;
  options.curve_public_key = keys->public_key;
  options.allowed_users = f.allowed_users;
  options.allowed_functions = f.allowed_functions;
  auto record = client.CreateEndpoint(f.name.empty() ? f.id : f.name, f.id, options);
  bool updated = false;
  if (!record.ok() && record.status().code() == StatusCode::kAlreadyExists) {
    v1::UpdateEndpointRequest update;
    update.set_id(f.id);
    update.set_curve_public_key(keys->public_key);
    if (!f.allowed_users.empty()) {
      for (const auto& u : f.allowed_users) update.mutable_allowed_users()->add_items(u);
    }
    if (!f.allowed_functions.empty()) {
      for (const auto& fn : f.allowed_functions) update.mutable_allowed_functions()->add_items(fn);
    }
    record = client.UpdateEndpoint(update);
    updated = true;
  }
  if (!record.ok()) return Fail(record.status());
  if (json) {
    PrintJson(*record);
    return WriteEndpointConfig(f, *record, dir, secret_path, service_key, true);
  }
  std::printf("%s endpoint %s (owner %s) with CURVE public key %s\n", updated ? "updated" : "created",
              record->id().c_str(), record->owner().c_str(), keys->public_key.c_str());
  std::printf("key pair %s: %s (secret, mode 0600) and %s/endpoint.pub\n", created_keys ? "made" : "kept",
              secret_path.c_str(), dir.c_str());
  std::string flags = "loom-endpoint --id " + record->id() + " --service " +
                      (f.endpoint_address.empty() ? std::string("tcp://SERVICE-HOST:PORT") : f.endpoint_address) +
                      " \\\n    --curve-secret-key-file " + secret_path + " --service-public-key " +
                      (service_key.empty() ? std::string("SERVICE-PUBLIC-KEY") : service_key);
  // The endpoint checks the same allow-list itself (whatever the service sends it).
  flags += " \\\n    --owner " + record->owner();
  for (const auto& u : record->allowed_users()) flags += " --allow-user " + u;
  for (const auto& fn : record->allowed_functions()) flags += " --allow-function " + fn;
  std::printf("start it with:\n  %s\n", flags.c_str());
  if (service_key.empty()) {
    std::printf("(SERVICE-PUBLIC-KEY: the curve_public_key= line of the service's ready file, or its log)\n");
  }
  return WriteEndpointConfig(f, *record, dir, secret_path, service_key, false);
}

// `loom endpoint status NAME`: the daemon on this host, when NAME has a directory here.
void PrintLocalDaemon(const std::string& name) {
  auto dir = cli::EndpointDir(name);
  std::error_code ec;
  if (!dir.ok() || !std::filesystem::exists(*dir + "/config.yaml", ec)) return;
  cli::DaemonInfo d = cli::InspectDaemon(name, *dir);
  std::printf("on this host %s", cli::DaemonStateName(d.state));
  if (d.state == cli::DaemonState::kRunning) std::printf(" (pid %d%s)", d.pid, d.registered ? ", registered" : "");
  std::printf("; %s\n", d.dir.c_str());
}

// `loom endpoint list --local` (and after the service's list): the endpoint daemons on this host.
int PrintLocalDaemons(bool json, bool after_service_list) {
  auto list = cli::ListDaemons();
  if (!list.ok()) return after_service_list ? kExitOk : Fail(list.status());
  if (json) {
    auto quoted = [](const std::string& text) {
      std::string out = "\"";
      for (char ch : text) {
        if (ch == '"' || ch == '\\') out += '\\';
        if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
      }
      return out + "\"";
    };
    for (const auto& d : *list) {
      const bool running = d.state == cli::DaemonState::kRunning;
      std::printf("{\"name\":%s,\"state\":\"%s\",\"pid\":%d,\"registered\":%s,\"dir\":%s}\n", quoted(d.name).c_str(),
                  running ? "running" : "stopped", running ? d.pid : 0, running && d.registered ? "true" : "false",
                  quoted(d.dir).c_str());
    }
    return kExitOk;
  }
  if (after_service_list && list->empty()) return kExitOk;
  if (after_service_list) std::printf("\non this host:\n");
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : *list) {
    rows.push_back({d.name, cli::DaemonStateName(d.state),
                    d.state == cli::DaemonState::kRunning ? std::to_string(d.pid) : "-",
                    d.state == cli::DaemonState::kRunning ? (d.registered ? "yes" : "no") : "-", d.dir});
  }
  PrintTable({"NAME", "STATE", "PID", "REGISTERED", "DIR"}, rows);
  return kExitOk;
}

int Main(int argc, char** argv) {
  GlobalFlags g;
  CLI::App app{"loom: the command-line client of the Loom function-as-a-service fabric", "loom"};
  app.fallthrough();
  app.require_subcommand(1);
  app.add_option("--service", g.service, "Address of the Loom service, host:port")
      ->envname("LOOM_SERVICE")
      ->capture_default_str();
  app.add_option("--token", g.token, "Bearer token (see `loom token create`)")->envname("LOOM_TOKEN");
  app.add_option("--token-file", g.token_file, "File whose first line is the bearer token")->envname("LOOM_TOKEN_FILE");
  app.add_option("--tls-ca", g.tls_ca, "Connect over TLS, trusting the certificate authorities in this PEM file")
      ->envname("LOOM_TLS_CA");
  app.add_flag("--json", g.json, "Print protobuf JSON, one object per line");
  app.add_option("--rpc-timeout", g.rpc_timeout_s, "Seconds to wait for the service on each call")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  // The chosen command; runs after parsing, with a connected client.
  std::function<int(Client&)> action;
  std::function<int()> local_action;  // commands about this host only: no service connection

  // ---------------------------------------------------------------- function
  auto* function = app.add_subcommand("function", "Register and list functions")->require_subcommand(1);
  std::string fn_name, fn_kernel;
  FunctionOptions fn_options;
  std::vector<std::string> fn_config;
  auto* fn_register = function->add_subcommand("register", "Bind a function name to a kernel name@version");
  fn_register->add_option("NAME", fn_name, "Function name")->required();
  fn_register->add_option("--kernel", fn_kernel, "Kernel reference, name@version")->required();
  fn_register->add_option("--description", fn_options.description, "What the function does");
  fn_register->add_option("--config", fn_config, "Default configuration entry key=literal (repeatable)")
      ->allow_extra_args(false);
  fn_register
      ->add_option("--max-attempts", fn_options.max_attempts,
                   "Default attempts of its tasks when the worker or endpoint is lost (default: the service's)")
      ->check(CLI::NonNegativeNumber);
  fn_register
      ->add_option("--timeout-ms", fn_options.timeout_ms,
                   "Default walltime of one attempt of its tasks in milliseconds (default: none)")
      ->check(CLI::NonNegativeNumber);
  fn_register
      ->add_option("--requires", fn_options.required_device_classes,
                   "Device class an endpoint must have to run it (gpu, fpga, ...); repeatable. Checked at submit")
      ->allow_extra_args(false);
  fn_register->callback([&] {
    action = [&](Client& client) {
      auto config = ParseAssignments(fn_config, "--config");
      if (!config.ok()) return Fail(config.status());
      fn_options.config = std::move(*config);
      bool created = false;
      auto f = client.RegisterFunction(fn_name, fn_kernel, fn_options, &created);
      if (!f.ok()) return Fail(f.status());
      if (g.json) {
        PrintJson(*f);
      } else {
        std::printf("%s function %s -> %s\n", created ? "registered" : "already registered", f->name().c_str(),
                    f->kernel().c_str());
      }
      return kExitOk;
    };
  });
  function->add_subcommand("list", "List registered functions")->callback([&] {
    action = [&](Client& client) {
      auto fns = client.ListFunctions();
      if (!fns.ok()) return Fail(fns.status());
      if (g.json) {
        for (const auto& f : *fns) PrintJson(f);
        return kExitOk;
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& f : *fns) {
        std::string config;
        std::vector<std::string> keys;
        for (const auto& [k, unused] : f.config()) keys.push_back(k);
        std::sort(keys.begin(), keys.end());
        for (const auto& k : keys) config += (config.empty() ? "" : " ") + k + "=" + DebugString(f.config().at(k));
        rows.push_back({f.name(), f.kernel(), config.empty() ? "-" : config, f.description()});
      }
      PrintTable({"NAME", "KERNEL", "CONFIG", "DESCRIPTION"}, rows);
      return kExitOk;
    };
  });
  auto* fn_get = function->add_subcommand("get", "Show one function");
  fn_get->add_option("NAME", fn_name, "Function name")->required();
  fn_get->callback([&] {
    action = [&](Client& client) {
      auto f = client.GetFunction(fn_name);
      if (!f.ok()) return Fail(f.status());
      if (g.json) {
        PrintJson(*f);
      } else {
        std::printf("name         %s\nkernel       %s\ndescription  %s\n", f->name().c_str(), f->kernel().c_str(),
                    f->description().c_str());
        for (const auto& [k, v] : f->config()) std::printf("config       %s=%s\n", k.c_str(), DebugString(v).c_str());
        if (f->max_attempts() > 0) std::printf("max attempts %d\n", f->max_attempts());
        if (f->timeout_ms() > 0) std::printf("timeout      %lld ms\n", static_cast<long long>(f->timeout_ms()));
      }
      return kExitOk;
    };
  });

  // ---------------------------------------------------------------- endpoint
  auto* endpoint = app.add_subcommand("endpoint", "Create and inspect endpoints")->require_subcommand(1);
  std::string ep_name, ep_id;
  std::vector<std::string> ep_users, ep_functions;
  auto* ep_create = endpoint->add_subcommand("create", "Create an endpoint record (start loom-endpoint with its id)");
  ep_create->add_option("NAME", ep_name, "Endpoint name")->required();
  ep_create->add_option("--id", ep_id, "Endpoint id (default: the name)");
  ep_create->add_option("--allow-user", ep_users, "Another user who may submit to it, or * for all (repeatable)")
      ->allow_extra_args(false);
  ep_create
      ->add_option("--allow-function", ep_functions,
                   "A function it may run: NAME (yours) or USER/NAME (repeatable; default: any)")
      ->allow_extra_args(false);
  ep_create->callback([&] {
    action = [&](Client& client) {
      v1::CreateEndpointRequest request;
      request.set_name(ep_name);
      request.set_id(ep_id);
      AddAll(request.mutable_allowed_users(), ep_users);
      AddAll(request.mutable_allowed_functions(), ep_functions);
      auto e = client.CreateEndpoint(request);
      if (!e.ok()) return Fail(e.status());
      if (g.json) {
        PrintJson(*e);
      } else {
        std::printf("created endpoint %s (%s)\n", e->id().c_str(), e->name().c_str());
      }
      return kExitOk;
    };
  });
  EndpointConfigureFlags configure;
  auto* ep_configure = endpoint->add_subcommand(
      "configure",
      "Make an endpoint's CURVE key pair (or reuse it) and register its public key with the service under "
      "your token: creates the endpoint, or updates yours; writes a commented config.yaml next to the keys (kept "
      "if there) for `loom endpoint start ID`; prints the loom-endpoint flags to start it with");
  ep_configure->add_option("ID", configure.id, "Endpoint id")->required();
  ep_configure->add_option("--name", configure.name, "Display name (default: the id)");
  ep_configure->add_option("--key-dir", configure.key_dir,
                           "Where the key pair and config.yaml live: endpoint.key (secret, mode 0600) and "
                           "endpoint.pub (default: $LOOM_HOME/endpoints/ID, LOOM_HOME defaulting to ~/.loom)");
  ep_configure
      ->add_option("--allow-user", configure.allowed_users,
                   "A user besides you who may submit to it (* for every user); repeatable")
      ->allow_extra_args(false);
  ep_configure
      ->add_option("--allow-function", configure.allowed_functions,
                   "A function that may run on it: NAME (yours) or USER/NAME; repeatable (default: any)")
      ->allow_extra_args(false);
  auto* service_key =
      ep_configure->add_option("--service-public-key", configure.service_public_key,
                               "The service's CURVE public key (its ready file's curve_public_key=), for the "
                               "printed flags");
  ep_configure
      ->add_option("--service-public-key-file", configure.service_public_key_file,
                   "A file holding the service's public key, for the printed flags")
      ->excludes(service_key);
  ep_configure->add_option("--endpoint-address", configure.endpoint_address,
                           "The service's ZeroMQ address for endpoints (tcp://HOST:PORT), for the printed flags");
  ep_configure->callback(
      [&] { action = [&](Client& client) { return ConfigureEndpoint(client, configure, g.json); }; });
  bool list_local = false;
  auto* ep_list = endpoint->add_subcommand("list", "List endpoints (the service's; then the daemons on this host)");
  ep_list->add_flag("--local", list_local,
                    "Only the endpoint daemons on this host ($LOOM_HOME/endpoints), without asking the service");
  ep_list->callback([&] {
    if (list_local) {
      local_action = [&] { return PrintLocalDaemons(g.json, false); };
      return;
    }
    action = [&](Client& client) {
      auto eps = client.ListEndpoints();
      if (!eps.ok()) {
        if (!g.json) PrintLocalDaemons(false, true);
        return Fail(eps.status());
      }
      if (g.json) {
        for (const auto& e : *eps) PrintJson(e);
        return kExitOk;
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : *eps) {
        rows.push_back({e.id(), e.name(), EndpointStatusName(e.status()), std::to_string(e.worker_count()),
                        std::to_string(e.kernels_size()), std::to_string(e.queue_depth()),
                        std::to_string(e.in_flight()), e.group().empty() ? "-" : e.group()});
      }
      PrintTable({"ID", "NAME", "STATUS", "WORKERS", "KERNELS", "QUEUE", "IN-FLIGHT", "GROUP"}, rows);
      return PrintLocalDaemons(false, true);
    };
  });
  auto* ep_status = endpoint->add_subcommand("status", "Show one endpoint: state, workers, kernels, devices, load");
  ep_status->add_option("ID", ep_id, "Endpoint id")->required();
  ep_status->callback([&] {
    action = [&](Client& client) {
      if (!g.json) PrintLocalDaemon(ep_id);
      auto e = client.GetEndpoint(ep_id);
      if (!e.ok()) return Fail(e.status());
      if (g.json) {
        PrintJson(*e);
        return kExitOk;
      }
      std::printf("id           %s\n", e->id().c_str());
      std::printf("name         %s\n", e->name().c_str());
      std::printf("status       %s\n", EndpointStatusName(e->status()).c_str());
      if (!e->hostname().empty()) std::printf("hostname     %s\n", e->hostname().c_str());
      std::printf("workers      %d\n", e->worker_count());
      std::printf("queue depth  %lld\n", static_cast<long long>(e->queue_depth()));
      std::printf("in flight    %lld\n", static_cast<long long>(e->in_flight()));
      if (e->last_seen_unix_nanos() > 0) {
        std::printf("last seen    %.1f s ago\n", static_cast<double>(NowNanos() - e->last_seen_unix_nanos()) / 1e9);
      }
      std::vector<std::string> kernels;
      for (const auto& k : e->kernels()) kernels.push_back(k.name() + "@" + k.version());
      std::sort(kernels.begin(), kernels.end());
      std::string joined;
      for (const auto& k : kernels) joined += (joined.empty() ? "" : " ") + k;
      std::printf("kernels      %s\n", joined.empty() ? "-" : joined.c_str());
      if (!e->group().empty()) std::printf("group        %s\n", e->group().c_str());
      for (const auto& d : e->devices()) {
        std::string extra;
        if (d.kind() == "gpu") extra += " index " + std::to_string(d.index());
        if (!d.uuid().empty()) extra += " " + d.uuid();
        if (d.emulated()) extra += " (emulated)";
        std::printf("device       %s %s x%d (%lld bytes)%s\n", d.kind().c_str(), d.name().c_str(), d.count(),
                    static_cast<long long>(d.memory_bytes()), extra.c_str());
      }
      return kExitOk;
    };
  });

  // Endpoint daemons on this host (endpoint_daemons.h).
  std::string daemon_name;
  double start_wait_s = 30;
  std::string endpoint_binary;
  auto* ep_start = endpoint->add_subcommand(
      "start", "Start endpoint NAME's daemon on this host, detached, with its config.yaml (from `configure NAME`)");
  ep_start->add_option("NAME", daemon_name, "Endpoint name (its directory under $LOOM_HOME/endpoints)")->required();
  ep_start->add_option("--wait", start_wait_s, "Seconds to wait for it to register with the service (0: do not wait)")
      ->capture_default_str();
  ep_start
      ->add_option("--endpoint-binary", endpoint_binary, "loom-endpoint to run (default: the one next to this program)")
      ->envname("LOOM_ENDPOINT_BINARY");
  ep_start->callback([&] {
    local_action = [&] {
      cli::StartOptions o;
      o.endpoint_binary = endpoint_binary.empty() ? ExecutableDir() + "/loom-endpoint" : endpoint_binary;
      o.wait = std::chrono::milliseconds(static_cast<int64_t>(start_wait_s * 1000));
      cli::DaemonInfo info;
      Status s = cli::StartDaemon(daemon_name, o, &info);
      if (!s.ok()) {
        const int code = Fail(s);
        return s.code() == StatusCode::kDeadlineExceeded ? kExitTimeout : code;
      }
      std::printf("endpoint %s started (pid %d%s); log %s/endpoint.log\n", daemon_name.c_str(), info.pid,
                  info.registered ? ", registered" : "", info.dir.c_str());
      return kExitOk;
    };
  });
  double stop_timeout_s = 15;
  auto* ep_stop = endpoint->add_subcommand(
      "stop", "Stop endpoint NAME's daemon on this host: SIGTERM, then SIGKILL after --timeout; no worker is left");
  ep_stop->add_option("NAME", daemon_name, "Endpoint name")->required();
  ep_stop->add_option("--timeout", stop_timeout_s, "Seconds to wait after SIGTERM before SIGKILL")
      ->capture_default_str();
  ep_stop->callback([&] {
    local_action = [&] {
      auto r = cli::StopDaemon(daemon_name, std::chrono::milliseconds(static_cast<int64_t>(stop_timeout_s * 1000)));
      if (!r.ok()) return Fail(r.status());
      if (!r->was_running) {
        std::printf("endpoint %s is not running%s\n", daemon_name.c_str(),
                    r->stale_pid_file ? " (removed a stale pid file)" : "");
        return kExitOk;
      }
      std::printf("endpoint %s stopped%s", daemon_name.c_str(), r->killed ? " (SIGKILL after the timeout)" : "");
      if (r->leftovers_killed > 0) std::printf("; killed %d leftover process(es) of its group", r->leftovers_killed);
      std::printf("\n");
      return kExitOk;
    };
  });

  // ---------------------------------------------------------------- run, submit
  TaskFlags task_flags;  // one of run and submit is parsed
  double run_timeout_s = 30;
  auto* run = app.add_subcommand("run", "Submit one task, wait for it and print its result");
  AddTaskOptions(run, task_flags);
  run->add_option("--timeout", run_timeout_s, "Seconds to wait for the result")->capture_default_str();
  run->callback([&] {
    UnprotectTaskFlags(task_flags);
    action = [&](Client& client) {
      auto id = SubmitTask(client, task_flags);
      if (!id.ok()) return Fail(id.status());
      auto r = client.GetResult(*id, Seconds(run_timeout_s));
      if (!r.ok()) return Fail(r.status());
      if (!r->has_value()) return NotFinished(client, *id, run_timeout_s);
      return ReportFinished(**r, g.json);
    };
  });
  auto* submit = app.add_subcommand("submit", "Submit one task and print its id (follow it with `loom task result`)");
  AddTaskOptions(submit, task_flags);
  submit->callback([&] {
    UnprotectTaskFlags(task_flags);
    action = [&](Client& client) {
      auto id = SubmitTask(client, task_flags);
      if (!id.ok()) return Fail(id.status());
      if (g.json) {
        v1::SubmitResponse response;
        response.set_task_id(*id);
        PrintJson(response);
      } else {
        std::printf("%s\n", id->c_str());
      }
      return kExitOk;
    };
  });

  // ---------------------------------------------------------------- task
  auto* task = app.add_subcommand("task", "Inspect, wait for, cancel and delete tasks")->require_subcommand(1);
  std::string task_id;
  std::vector<std::string> task_ids;
  double wait_s = 0;
  auto* task_status = task->add_subcommand("status", "Show a task's state, attempts and timestamps (alias: get)");
  task_status->alias("get");
  task_status->add_option("ID", task_id, "Task id")->required();
  task_status->callback([&] {
    action = [&](Client& client) {
      auto r = client.GetStatus(task_id);
      if (!r.ok()) return Fail(r.status());
      if (g.json) {
        PrintJson(*r);
      } else {
        PrintTaskRecord(*r);
      }
      return kExitOk;
    };
  });
  auto* task_result = task->add_subcommand("result", "Print a task's result (exit 3 if not finished)");
  task_result->add_option("ID", task_id, "Task id")->required();
  task_result->add_option("--wait", wait_s, "Seconds to wait for the task to finish")->capture_default_str();
  task_result->callback([&] {
    action = [&](Client& client) {
      auto r = client.GetResult(task_id, Seconds(wait_s));
      if (!r.ok()) return Fail(r.status());
      if (!r->has_value()) return NotFinished(client, task_id, wait_s);
      return ReportFinished(**r, g.json);
    };
  });
  auto* task_cancel = task->add_subcommand("cancel", "Cancel a task that has not finished");
  task_cancel->add_option("ID", task_id, "Task id")->required();
  task_cancel->callback([&] {
    action = [&](Client& client) {
      auto r = client.Cancel(task_id);
      if (!r.ok()) return Fail(r.status());
      if (g.json) {
        PrintJson(*r);
      } else {
        std::printf("task %s: %s\n", r->id().c_str(), TaskStateName(r->state()));
      }
      return kExitOk;
    };
  });
  auto* task_delete = task->add_subcommand(
      "delete", "Delete finished tasks and their results before their TTL (an unfinished one fails the call)");
  task_delete->add_option("ID", task_ids, "Task ids (unknown ones are skipped)")->required();
  task_delete->callback([&] {
    action = [&](Client& client) {
      auto n = client.DeleteTasks(task_ids);
      if (!n.ok()) return Fail(n.status());
      if (g.json) {
        // Printed by hand: protobuf JSON would leave out "deleted" when it is 0.
        std::printf("{\"deleted\":%d}\n", *n);
      } else {
        std::printf("deleted %d of %zu task(s)\n", *n, task_ids.size());
      }
      return kExitOk;
    };
  });

  // share / unshare: read the lists, change them, write them back.
  for (const bool share : {true, false}) {
    auto* cmd = endpoint->add_subcommand(share ? "share" : "unshare",
                                         share ? "Let users submit to your endpoint, or let it run functions"
                                               : "Take users or functions off your endpoint's allow-lists");
    cmd->add_option("ID", ep_id, "Endpoint id")->required();
    cmd->add_option("--user", ep_users, "User name, or * for every user (repeatable)")->allow_extra_args(false);
    cmd->add_option("--function", ep_functions, "Function: NAME (yours) or USER/NAME (repeatable)")
        ->allow_extra_args(false);
    cmd->callback([&, share] {
      action = [&, share](Client& client) {
        auto e = client.GetEndpoint(ep_id);
        if (!e.ok()) return Fail(e.status());
        v1::UpdateEndpointRequest request;
        request.set_id(ep_id);
        *request.mutable_allowed_users()->mutable_items() = e->allowed_users();
        *request.mutable_allowed_functions()->mutable_items() = e->allowed_functions();
        auto* users = request.mutable_allowed_users()->mutable_items();
        auto* functions = request.mutable_allowed_functions()->mutable_items();
        if (share) {
          AddAll(users, ep_users);
          AddAll(functions, ep_functions);
        } else {
          RemoveAll(users, ep_users);
          RemoveAll(functions, ep_functions);
        }
        auto updated = client.UpdateEndpoint(request);
        if (!updated.ok()) return Fail(updated.status());
        if (g.json) {
          PrintJson(*updated);
        } else {
          auto join = [](const auto& list, const char* none) {
            std::string out;
            for (const auto& i : list) out += (out.empty() ? "" : ", ") + i;
            return out.empty() ? std::string(none) : out;
          };
          std::printf("endpoint %s: users %s; functions %s\n", updated->id().c_str(),
                      join(updated->allowed_users(), "(owner only)").c_str(),
                      join(updated->allowed_functions(), "(any)").c_str());
        }
        return kExitOk;
      };
    });
  }

  // ---------------------------------------------------------------- tokens
  auto* token = app.add_subcommand("token", "Create, list and revoke bearer tokens")->require_subcommand(1);
  v1::CreateTokenRequest token_request;
  std::string token_expires, token_user, token_id;
  bool token_admin = false;
  auto* token_create = token->add_subcommand("create", "Create a token (printed once; keep it secret)");
  token_create->add_option("--user", token_user, "Whose token (default: yours; another user's takes an admin)");
  token_create->add_flag("--admin", token_admin, "An admin token (takes an admin)");
  token_create->add_option("--expires", token_expires, "Lifetime: 3600, 15m, 12h, 30d (default: never)");
  token_create->add_option("--description", *token_request.mutable_description(), "What the token is for");
  token_create->callback([&] {
    action = [&](Client& client) {
      token_request.set_user(token_user);
      token_request.set_admin(token_admin);
      if (!token_expires.empty()) {
        auto secs = ParseDuration(token_expires);
        if (!secs.ok()) return Fail(secs.status());
        token_request.set_ttl_seconds(*secs);
      }
      auto t = client.CreateToken(token_request);
      if (!t.ok()) return Fail(t.status());
      if (g.json) {
        PrintJson(*t);
      } else {
        std::printf("%s\n", t->token().c_str());
        std::fprintf(stderr, "token %s for user %s%s%s\n", t->info().id().c_str(), t->info().user().c_str(),
                     t->info().admin() ? " (admin)" : "",
                     t->info().expires_unix_nanos() > 0
                         ? (", expires " + FormatUnixNanos(t->info().expires_unix_nanos())).c_str()
                         : "");
      }
      return kExitOk;
    };
  });
  auto* token_list = token->add_subcommand("list", "List tokens (ids, never the secrets)");
  token_list->add_option("--user", token_user, "Whose tokens (default: yours; an admin may say * for all)");
  token_list->callback([&] {
    action = [&](Client& client) {
      auto list = client.ListTokens(token_user);
      if (!list.ok()) return Fail(list.status());
      if (g.json) {
        for (const auto& t : *list) PrintJson(t);
        return kExitOk;
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& t : *list) {
        rows.push_back({t.id(), t.user(), t.admin() ? "yes" : "no", FormatUnixNanos(t.created_unix_nanos()),
                        t.expires_unix_nanos() > 0 ? FormatUnixNanos(t.expires_unix_nanos()) : "never",
                        t.description()});
      }
      PrintTable({"ID", "USER", "ADMIN", "CREATED", "EXPIRES", "DESCRIPTION"}, rows);
      return kExitOk;
    };
  });
  auto* token_revoke = token->add_subcommand("revoke", "Revoke a token at once");
  token_revoke->add_option("ID", token_id, "Token id (the 16 hex digits after loom_)")->required();
  token_revoke->callback([&] {
    action = [&](Client& client) {
      if (Status st = client.RevokeToken(token_id); !st.ok()) return Fail(st);
      if (!g.json) std::printf("revoked token %s\n", token_id.c_str());
      return kExitOk;
    };
  });
  app.add_subcommand("whoami", "Show the user the service takes you for")->callback([&] {
    action = [&](Client& client) {
      auto me = client.WhoAmI();
      if (!me.ok()) return Fail(me.status());
      if (g.json) {
        PrintJson(*me);
      } else {
        std::printf("%s%s\n", me->user().c_str(), me->admin() ? " (admin)" : "");
      }
      return kExitOk;
    };
  });

  std::vector<std::string> args(argv + 1, argv + argc);
  ProtectBracketLiterals(args);
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments reversed
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitError;
  }
  if (local_action) return local_action();
  if (!action) return kExitError;

  ClientOptions options;
  options.address = g.service;
  options.rpc_timeout = Seconds(g.rpc_timeout_s);
  options.token = g.token;
  if (options.token.empty() && !g.token_file.empty()) {
    std::ifstream in(g.token_file);
    if (!in || !std::getline(in, options.token) || options.token.empty()) {
      return Fail(InvalidArgument("cannot read a token from '" + g.token_file + "'"));
    }
  }
  options.tls_ca_file = g.tls_ca;
  auto client = Client::Connect(options);
  if (!client.ok()) return Fail(client.status());
  return action(**client);
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) { return loom::Main(argc, argv); }
