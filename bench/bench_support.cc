#include "bench/bench_support.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/redis.h"
#include "common/util.h"

namespace loom::bench {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

const std::vector<std::pair<std::string, std::pair<std::string, std::string>>>& TaskHops() {
  static const std::vector<std::pair<std::string, std::pair<std::string, std::string>>> kHops = {
      {"client -> service", {"client_sent", "received"}},
      {"service: check, wait to commit", {"received", "waiting-for-endpoint"}},
      {"service: queue -> dispatch", {"waiting-for-endpoint", "dispatched"}},
      {"service: Redis commit", {"dispatched", "service_committed"}},
      {"service: hand-off, send", {"service_committed", "service_sent"}},
      {"service -> endpoint", {"service_sent", "endpoint_received"}},
      {"endpoint -> worker", {"endpoint_received", "worker_started"}},
      {"kernel", {"worker_started", "kernel_finished"}},
      {"worker -> endpoint", {"kernel_finished", "endpoint_result"}},
      {"endpoint -> service", {"endpoint_result", "success"}},
      {"service: Redis commit (result)", {"success", "result_committed"}},
      {"service -> client", {"result_committed", "client_received"}},
  };
  return kHops;
}

void AddHops(const v1::TaskRecord& r, int64_t sent_ns, int64_t received_ns,
             std::map<std::string, std::vector<double>>* hops_us) {
  // The stages the hops name, and each hop as two indices into them: built once, so that a
  // record costs no allocation here (the scale scenario times every task).
  struct Plan {
    std::vector<std::string> stages;
    std::vector<std::pair<size_t, size_t>> hops;
  };
  static const Plan plan = [] {
    Plan p;
    auto index = [&p](const std::string& stage) {
      auto it = std::find(p.stages.begin(), p.stages.end(), stage);
      if (it != p.stages.end()) return static_cast<size_t>(it - p.stages.begin());
      p.stages.push_back(stage);
      return p.stages.size() - 1;
    };
    for (const auto& [name, stages] : TaskHops()) p.hops.emplace_back(index(stages.first), index(stages.second));
    return p;
  }();
  std::array<int64_t, 32> at{};  // per stage of the plan; 0: not stamped
  auto stamp = [&](std::string_view stage, int64_t unix_nanos) {
    for (size_t i = 0; i < plan.stages.size() && i < at.size(); ++i) {
      if (plan.stages[i] == stage) {
        at[i] = unix_nanos;  // a stage stamped twice (a retried task) counts its last time
        return;
      }
    }
  };
  if (sent_ns > 0) stamp("client_sent", sent_ns);
  if (received_ns > 0) stamp("client_received", received_ns);
  for (const auto& t : r.timestamps()) stamp(t.stage(), t.unix_nanos());
  const auto& hops = TaskHops();
  for (size_t h = 0; h < hops.size(); ++h) {
    const auto [a, b] = plan.hops[h];
    if (a < at.size() && b < at.size() && at[a] > 0 && at[b] > 0) {
      (*hops_us)[hops[h].first].push_back(static_cast<double>(at[b] - at[a]) / 1000.0);
    }
  }
}

Result<BenchFabric> StartBenchFabric(const BenchFabricOptions& options) {
  BenchFabric out;
  std::string service = options.service;
  if (service.empty()) {
    LocalFabricOptions o;
    o.bin_dir = ExecutableDir();
    o.state_dir = (std::filesystem::temp_directory_path() / (options.name + "-" + std::to_string(::getpid()))).string();
    o.appendfsync = options.appendfsync;
    o.remove_state_dir = true;
    o.metrics = options.metrics;
    o.service_args = options.service_args;
    out.fabric = std::make_unique<LocalFabric>(o);
    if (options.endpoint.empty()) {
      spdlog::info("starting a local fabric: redis (appendonly, appendfsync {}), service{}", options.appendfsync,
                   options.metrics ? ", metrics on" : "");
    } else {
      spdlog::info("starting a local fabric: redis (appendonly, appendfsync {}), service, endpoint with {} workers{}",
                   options.appendfsync, options.workers, options.metrics ? ", metrics on" : "");
    }
    LOOM_RETURN_IF_ERROR(out.fabric->StartRedis());
    LOOM_RETURN_IF_ERROR(out.fabric->StartService());
    if (!options.endpoint.empty()) {
      LOOM_RETURN_IF_ERROR(out.fabric->StartEndpoint(options.endpoint, options.workers, options.endpoint_args));
    }
    service = out.fabric->grpc_address();
  }
  ClientOptions co;
  co.address = service;
  if (out.fabric) co.token = out.fabric->token();  // else LOOM_TOKEN / LOOM_TOKEN_FILE
  if (options.client_max_message_bytes > 0) co.max_message_bytes = options.client_max_message_bytes;
  LOOM_ASSIGN_OR_RETURN(out.client, Client::Connect(co));
  return out;
}

namespace {

// The value in kB of `key` ("VmRSS:") in a /proc file of "Key:   value kB" lines, in bytes.
int64_t ProcKbField(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      long long kb = -1;
      if (std::sscanf(line.c_str() + key.size(), "%lld", &kb) == 1 && kb >= 0) return kb * 1024;
    }
  }
  return -1;
}

// /proc/PID/stat from field 3 (state) on: "pid (comm) state ppid ...", where comm may hold
// spaces and parentheses, so it is what follows the last ')'. Empty when unreadable.
std::string StatAfterComm(const std::string& pid_dir) {
  std::ifstream in(pid_dir + "/stat");
  std::string stat;
  std::getline(in, stat);
  const size_t close = stat.rfind(')');
  return close == std::string::npos ? std::string() : stat.substr(close + 1);
}

// The parent pid from /proc/PID/stat; -1 when unreadable.
pid_t ParentPid(const std::string& pid_dir) {
  const std::string fields = StatAfterComm(pid_dir);
  char state = 0;
  int ppid = -1;
  if (std::sscanf(fields.c_str(), " %c %d", &state, &ppid) != 2) return -1;
  if (state == 'Z') return -1;  // a zombie is not running
  return ppid;
}

template <typename F>
void ForEachProcess(F&& f) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    f(static_cast<pid_t>(std::stol(name)), e.path().string());
  }
}

Result<RedisReply> RedisCommand(const LocalFabric& fabric, const std::vector<std::string>& argv) {
  RedisOptions ro;
  ro.unix_socket = fabric.RedisSocket();
  ro.command_timeout = std::chrono::milliseconds(30000);
  LOOM_ASSIGN_OR_RETURN(auto conn, RedisConnection::Connect(ro));
  std::vector<std::string_view> views(argv.begin(), argv.end());
  return conn->Command(views);
}

}  // namespace

int64_t ProcessRssBytes(pid_t pid) { return ProcKbField("/proc/" + std::to_string(pid) + "/status", "VmRSS:"); }

int64_t ProcessPeakRssBytes(pid_t pid) { return ProcKbField("/proc/" + std::to_string(pid) + "/status", "VmHWM:"); }

int64_t ProcessPssBytes(pid_t pid) { return ProcKbField("/proc/" + std::to_string(pid) + "/smaps_rollup", "Pss:"); }

double ProcessCpuSeconds(pid_t pid, bool reaped_children) {
  // state (field 3) ... cmajflt (13), utime (14), stime, cutime, cstime (17).
  std::istringstream fields(StatAfterComm("/proc/" + std::to_string(pid)));
  std::string skip;
  for (int i = 3; i <= 13; ++i) fields >> skip;
  long long utime = 0, stime = 0, cutime = 0, cstime = 0;
  if (!(fields >> utime >> stime >> cutime >> cstime)) return -1;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  long long total = utime + stime;
  if (reaped_children) total += cutime + cstime;
  return static_cast<double>(total) / ticks;
}

double SelfCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

std::vector<pid_t> ChildPids(pid_t pid) {
  std::vector<pid_t> out;
  ForEachProcess([&](pid_t p, const std::string& dir) {
    if (ParentPid(dir) == pid) out.push_back(p);
  });
  return out;
}

std::map<pid_t, std::vector<pid_t>> ChildPids(const std::vector<pid_t>& parents) {
  std::map<pid_t, std::vector<pid_t>> out;
  for (pid_t p : parents) out[p];
  ForEachProcess([&](pid_t p, const std::string& dir) {
    if (auto it = out.find(ParentPid(dir)); it != out.end()) it->second.push_back(p);
  });
  return out;
}

std::vector<pid_t> ProcessesRunningFrom(const std::string& dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  const auto want = std::filesystem::weakly_canonical(dir, ec);
  ForEachProcess([&](pid_t p, const std::string& pdir) {
    if (p == ::getpid()) return;
    std::error_code e2;
    const auto exe = std::filesystem::read_symlink(pdir + "/exe", e2);
    if (e2 || exe.parent_path() != want) return;
    if (ParentPid(pdir) < 0) return;  // a zombie waiting to be reaped
    out.push_back(p);
  });
  return out;
}

int64_t MemAvailableBytes() { return ProcKbField("/proc/meminfo", "MemAvailable:"); }

Result<int64_t> RedisInfoInt(const LocalFabric& fabric, const std::string& field) {
  LOOM_ASSIGN_OR_RETURN(auto reply, RedisCommand(fabric, {"INFO"}));
  if (reply->type != REDIS_REPLY_STRING) return Internal("INFO did not answer with text");
  std::istringstream in(std::string(reply->str, reply->len));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return static_cast<int64_t>(std::stoll(line.substr(field.size() + 1)));
  }
  return NotFound("Redis INFO has no field '" + field + "'");
}

Status RewriteAofAndWait(const LocalFabric& fabric, std::chrono::seconds timeout) {
  // Refused while a rewrite runs ("already in progress"); then only the wait matters.
  (void)RedisCommand(fabric, {"BGREWRITEAOF"});
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    LOOM_ASSIGN_OR_RETURN(int64_t running, RedisInfoInt(fabric, "aof_rewrite_in_progress"));
    LOOM_ASSIGN_OR_RETURN(int64_t scheduled, RedisInfoInt(fabric, "aof_rewrite_scheduled"));
    if (running == 0 && scheduled == 0) return Status::Ok();
    if (std::chrono::steady_clock::now() >= deadline) {
      return DeadlineExceeded("Redis's AOF rewrite did not end within " + std::to_string(timeout.count()) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<int64_t> RedisInt(const LocalFabric& fabric, const std::vector<std::string>& argv) {
  LOOM_ASSIGN_OR_RETURN(auto reply, RedisCommand(fabric, argv));
  if (reply->type != REDIS_REPLY_INTEGER) return Internal("'" + argv[0] + "' did not answer with an integer");
  return static_cast<int64_t>(reply->integer);
}

std::map<std::string, RedisCommandStat> ParseCommandStats(std::string_view info) {
  std::map<std::string, RedisCommandStat> out;
  std::istringstream in{std::string(info)};
  std::string line;
  // cmdstat_hset:calls=101024,usec=100391,usec_per_call=0.99,...
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("cmdstat_", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    RedisCommandStat st;
    std::istringstream fields(line.substr(colon + 1));
    std::string kv;
    while (std::getline(fields, kv, ',')) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos) continue;
      const std::string key = kv.substr(0, eq);
      if (key == "calls") st.calls = std::strtoll(kv.c_str() + eq + 1, nullptr, 10);
      if (key == "usec") st.usec = std::strtoll(kv.c_str() + eq + 1, nullptr, 10);
    }
    out[line.substr(8, colon - 8)] = st;
  }
  return out;
}

Result<std::map<std::string, RedisCommandStat>> RedisCommandStats(const LocalFabric& fabric) {
  LOOM_ASSIGN_OR_RETURN(auto reply, RedisCommand(fabric, {"INFO", "commandstats"}));
  if (reply->type != REDIS_REPLY_STRING) return Internal("INFO commandstats did not answer with text");
  return ParseCommandStats(std::string_view(reply->str, reply->len));
}

Status RedisResetStats(const LocalFabric& fabric) {
  return RedisCommand(fabric, {"CONFIG", "RESETSTAT"}).status();  // an error reply is an error status
}

double JainIndex(const std::vector<double>& x) {
  double sum = 0, sq = 0;
  for (double v : x) {
    sum += v;
    sq += v * v;
  }
  if (x.empty() || sq == 0) return 1;
  return sum * sum / (static_cast<double>(x.size()) * sq);
}

void JsonLine::Key(const std::string& key) {
  if (!body_.empty()) body_ += ",";
  body_ += "\"" + key + "\":";
}

JsonLine& JsonLine::Str(const std::string& key, const std::string& value) {
  Key(key);
  body_ += "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') {
      body_ += '\\';
      body_ += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      body_ += buf;
    } else {
      body_ += c;
    }
  }
  body_ += "\"";
  return *this;
}

JsonLine& JsonLine::Int(const std::string& key, int64_t value) {
  Key(key);
  body_ += std::to_string(value);
  return *this;
}

JsonLine& JsonLine::Num(const std::string& key, double value, int decimals) {
  Key(key);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  body_ += buf;
  return *this;
}

JsonLine& JsonLine::Bool(const std::string& key, bool value) {
  Key(key);
  body_ += value ? "true" : "false";
  return *this;
}

}  // namespace loom::bench
