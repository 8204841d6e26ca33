#include "service/redis_task_store.h"

#include <google/protobuf/util/message_differencer.h>
#include <openssl/sha.h>

#include <cstdio>
#include <map>

#include "common/task_state.h"
#include "service/redis_keys.h"
#include "service/task_codec.h"

namespace loom::service {

namespace {

namespace f = keys::field;

std::string Sha1Hex(const std::string& s) {
  unsigned char d[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d);
  char hex[2 * SHA_DIGEST_LENGTH + 1];
  for (int i = 0; i < SHA_DIGEST_LENGTH; ++i) std::snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return std::string(hex, 2 * SHA_DIGEST_LENGTH);
}

std::string StateArg(v1::TaskState s) { return std::to_string(static_cast<int>(s)); }

// ",2,3," : the states from which `to` may be entered, for string.find in Lua.
std::string PredecessorsArg(v1::TaskState to) {
  std::string out = ",";
  for (auto s : LegalPredecessors(to)) out += StateArg(s) + ",";
  return out;
}

std::string TerminalArg() {
  return "," + StateArg(v1::TASK_STATE_SUCCESS) + "," + StateArg(v1::TASK_STATE_FAILED) + "," +
         StateArg(v1::TASK_STATE_CANCELLED) + ",";
}

// ARGV: 1 waiting state, 2 task prefix, 3 queue prefix, 4 dispatched state, 5 dispatched stamp,
// 6 in-flight prefix, 7 sequence prefix, then per task: id, owner, function, endpoint, spec,
// stamps, direct ("1"/"0"). A direct task whose queue is empty (nothing pending ahead of it) is
// dispatched at once. ARGV[8] is the most tasks an endpoint may have queued (0: no limit); a
// batch that would pass it changes nothing and returns {'full', endpoint, depth, adding}.
// Otherwise returns one 0/1 per task: dispatched.
constexpr const char* kSubmit = R"lua(
local max_depth = tonumber(ARGV[8])
if max_depth > 0 then
  local adding = {}
  for i = 9, #ARGV, 7 do adding[ARGV[i + 3]] = (adding[ARGV[i + 3]] or 0) + 1 end
  for ep, n in pairs(adding) do
    local depth = redis.call('LLEN', ARGV[3] .. ep)
    if depth + n > max_depth then return {'full', ep, depth, n} end
  end
end
local pending = {}  -- endpoint -> ids to RPUSH
local queued = {}   -- endpoint -> true once this script queued a task for it
local out = {}
for i = 9, #ARGV, 7 do
  local id, ep = ARGV[i], ARGV[i + 3]
  if ARGV[i + 6] == '1' and not queued[ep] and redis.call('LLEN', ARGV[3] .. ep) == 0 then
    redis.call('HSET', ARGV[2] .. id, 's', ARGV[4], 'o', ARGV[i + 1], 'f', ARGV[i + 2], 'e', ep,
               'a', ARGV[i + 4], 't', ARGV[i + 5] .. ARGV[5])
    redis.call('ZADD', ARGV[6] .. ep, redis.call('INCR', ARGV[7] .. ep), id)
    out[#out + 1] = 1
  else
    redis.call('HSET', ARGV[2] .. id, 's', ARGV[1], 'o', ARGV[i + 1], 'f', ARGV[i + 2], 'e', ep,
               'a', ARGV[i + 4], 't', ARGV[i + 5])
    queued[ep] = true
    local q = pending[ep]
    if not q then q = {}; pending[ep] = q end
    q[#q + 1] = id
    if #q == 1000 then redis.call('RPUSH', ARGV[3] .. ep, unpack(q)); pending[ep] = {} end
    out[#out + 1] = 0
  end
end
for ep, q in pairs(pending) do
  if #q > 0 then redis.call('RPUSH', ARGV[3] .. ep, unpack(q)) end
end
return out
)lua";

// ARGV: 1 queue key, 2 in-flight key, 3 sequence key, 4 task prefix, 5 max, 6 stamp,
// 7 waiting state, 8 dispatched state. Returns the specs.
constexpr const char* kLease = R"lua(
local out = {}
local max = tonumber(ARGV[5])
while #out < max do
  local ids = redis.call('LPOP', ARGV[1], math.min(max - #out, 1000))
  if not ids then break end
  local zargs = {}
  local seq = redis.call('INCRBY', ARGV[3], #ids) - #ids
  for _, id in ipairs(ids) do
    local k = ARGV[4] .. id
    local v = redis.call('HMGET', k, 's', 't', 'a')
    if v[1] == ARGV[7] then
      redis.call('HSET', k, 's', ARGV[8], 't', v[2] .. ARGV[6])
      seq = seq + 1
      zargs[#zargs + 1] = seq
      zargs[#zargs + 1] = id
      out[#out + 1] = v[3]
    end
  end
  if #zargs > 0 then redis.call('ZADD', ARGV[2], unpack(zargs)) end
end
return out
)lua";

// ARGV: 1 task prefix, 2 allowed-from list, 3 running state, then pairs of id, stamp.
constexpr const char* kRunning = R"lua(
for i = 4, #ARGV, 2 do
  local k = ARGV[1] .. ARGV[i]
  local v = redis.call('HMGET', k, 's', 't')
  if v[1] and string.find(ARGV[2], ',' .. v[1] .. ',', 1, true) then
    redis.call('HSET', k, 's', ARGV[3], 't', v[2] .. ARGV[i + 1])
  end
end
return 1
)lua";

// ARGV: 1 task prefix, 2 in-flight key, 3 endpoint id, 4 allowed-from (success), 5 allowed-from
// (failed), 6 success state, 7 failed state, then per result: id, ok ("1"/"0"), payload, stamps.
// Returns per committed task: id, state, owner, function, stamps.
constexpr const char* kComplete = R"lua(
local out = {}
for i = 8, #ARGV, 4 do
  local id = ARGV[i]
  local k = ARGV[1] .. id
  local v = redis.call('HMGET', k, 's', 'o', 'f', 'e', 't')
  local ok = ARGV[i + 1] == '1'
  local allowed = ok and ARGV[4] or ARGV[5]
  if v[1] and v[4] == ARGV[3] and string.find(allowed, ',' .. v[1] .. ',', 1, true) then
    local state = ok and ARGV[6] or ARGV[7]
    local stamps = v[5] .. ARGV[i + 3]
    redis.call('HSET', k, 's', state, ok and 'r' or 'x', ARGV[i + 2], 't', stamps)
    redis.call('ZREM', ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = state
    out[#out + 1] = v[2]
    out[#out + 1] = v[3]
    out[#out + 1] = stamps
  end
end
return out
)lua";

// ARGV: 1 task prefix, 2 queue prefix, 3 in-flight prefix, 4 terminal states, 5 cancelled
// state, 6 stamp, 7 id. Returns state, owner, function, endpoint, stamps, result, error.
constexpr const char* kCancel = R"lua(
local k = ARGV[1] .. ARGV[7]
local v = redis.call('HMGET', k, 's', 'o', 'f', 'e', 't', 'r', 'x')
if not v[1] then return false end
if not string.find(ARGV[4], ',' .. v[1] .. ',', 1, true) then
  v[1] = ARGV[5]
  v[5] = v[5] .. ARGV[6]
  redis.call('HSET', k, 's', v[1], 't', v[5])
  redis.call('LREM', ARGV[2] .. v[4], 1, ARGV[7])
  redis.call('ZREM', ARGV[3] .. v[4], ARGV[7])
end
return v
)lua";

// ARGV: 1 task prefix, 2 queue key, 3 in-flight key, 4 allowed-from, 5 waiting state, 6 stamp,
// then the ids to keep. Returns how many were requeued.
constexpr const char* kRequeue = R"lua(
local keep = {}
for i = 7, #ARGV do keep[ARGV[i]] = true end
local ids = redis.call('ZRANGE', ARGV[3], 0, -1)
local back = {}
for _, id in ipairs(ids) do
  if not keep[id] then
    local k = ARGV[1] .. id
    local v = redis.call('HMGET', k, 's', 't')
    if v[1] and string.find(ARGV[4], ',' .. v[1] .. ',', 1, true) then
      redis.call('HSET', k, 's', ARGV[5], 't', v[2] .. ARGV[6])
      back[#back + 1] = id
    end
    redis.call('ZREM', ARGV[3], id)
  end
end
for i = #back, 1, -1 do redis.call('LPUSH', ARGV[2], back[i]) end
return #back
)lua";

// KEYS: 1 function key, 2 function set; ARGV: 1 serialized function, 2 name, 3 the function
// without its creation time (for comparison). Returns 1 if created, 0 if identical, else the
// stored function.
constexpr const char* kPutFunction = R"lua(
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
  return 1
end
return cur
)lua";

}  // namespace

RedisTaskStore::RedisTaskStore(RedisOptions options) : pool_(std::move(options)) {
  auto make = [](const char* src) { return Script{src, Sha1Hex(src)}; };
  submit_ = make(kSubmit);
  lease_ = make(kLease);
  running_ = make(kRunning);
  complete_ = make(kComplete);
  cancel_ = make(kCancel);
  requeue_ = make(kRequeue);
  put_function_ = make(kPutFunction);
}

Result<RedisReply> RedisTaskStore::Command(const std::vector<std::string_view>& argv) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  return conn->Command(argv);
}

Result<RedisReply> RedisTaskStore::Eval(const Script& script, const std::vector<std::string_view>& args) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  std::vector<std::string_view> argv;
  argv.reserve(args.size() + 3);
  argv.push_back("EVALSHA");
  argv.push_back(script.sha);
  for (auto a : args) argv.push_back(a);
  auto r = conn->Command(argv);
  if (!r.ok() && r.status().message().find("NOSCRIPT") != std::string::npos) {
    argv[0] = "EVAL";
    argv[1] = script.source;
    return conn->Command(argv);
  }
  return r;
}

Status RedisTaskStore::Ping() {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"PING"}));
  return Status::Ok();
}

Result<bool> RedisTaskStore::PutFunction(const v1::Function& fn) {
  std::string key = keys::Function(fn.name());
  std::string body = fn.SerializeAsString();
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(put_function_, {"2", key, keys::kFunctions, body, fn.name()}));
  if (r->type == REDIS_REPLY_INTEGER) return true;
  v1::Function a, b = fn;
  a.ParseFromString(ReplyString(r.get()));
  std::string kernel = a.kernel();
  a.clear_created_unix_nanos();
  b.clear_created_unix_nanos();
  if (google::protobuf::util::MessageDifferencer::Equals(a, b)) return false;
  return AlreadyExists("function '" + fn.name() + "' is already registered with kernel '" + kernel +
                       "'; choose another name");
}

Result<std::optional<v1::Function>> RedisTaskStore::GetFunction(const std::string& name) {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"GET", keys::Function(name)}));
  if (ReplyIsNil(r.get())) return std::optional<v1::Function>();
  v1::Function fn;
  if (!fn.ParseFromString(ReplyString(r.get()))) return Internal("stored function '" + name + "' is corrupt");
  return std::optional<v1::Function>(std::move(fn));
}

namespace {
// Reads every member of a set and then the serialized message under prefix+member.
template <typename T>
Result<std::vector<T>> ListAll(RedisPool& pool, std::string_view set, std::string_view prefix) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool.Acquire());
  LOOM_ASSIGN_OR_RETURN(auto members, conn->Command({"SMEMBERS", set}));
  std::vector<std::string> names;
  for (size_t i = 0; i < members->elements; ++i) names.push_back(ReplyString(members->element[i]));
  std::sort(names.begin(), names.end());
  for (const auto& n : names) conn->Append({"GET", std::string(prefix) + n});
  std::vector<T> out;
  for (size_t i = 0; i < names.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(auto r, conn->GetReply());
    T msg;
    if (!ReplyIsNil(r.get()) && msg.ParseFromString(ReplyString(r.get()))) out.push_back(std::move(msg));
  }
  return out;
}
}  // namespace

Result<std::vector<v1::Function>> RedisTaskStore::ListFunctions() {
  return ListAll<v1::Function>(pool_, keys::kFunctions, keys::kFunctionPrefix);
}

Status RedisTaskStore::PutEndpoint(const v1::EndpointRecord& e) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  std::string key = keys::Endpoint(e.id());
  std::string body = e.SerializeAsString();
  conn->Append({"MULTI"});
  conn->Append({"SET", key, body});
  conn->Append({"SADD", keys::kEndpoints, e.id()});
  conn->Append({"EXEC"});
  for (int i = 0; i < 4; ++i) {
    LOOM_ASSIGN_OR_RETURN(auto r, conn->GetReply());
  }
  return Status::Ok();
}

Result<std::optional<v1::EndpointRecord>> RedisTaskStore::GetEndpoint(const std::string& id) {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"GET", keys::Endpoint(id)}));
  if (ReplyIsNil(r.get())) return std::optional<v1::EndpointRecord>();
  v1::EndpointRecord e;
  if (!e.ParseFromString(ReplyString(r.get()))) return Internal("stored endpoint '" + id + "' is corrupt");
  return std::optional<v1::EndpointRecord>(std::move(e));
}

Result<std::vector<v1::EndpointRecord>> RedisTaskStore::ListEndpoints() {
  return ListAll<v1::EndpointRecord>(pool_, keys::kEndpoints, keys::kEndpointPrefix);
}

Status RedisTaskStore::SubmitTasks(const std::vector<NewTask>& tasks, int64_t now_ns,
                                   std::vector<bool>* dispatched, int64_t max_queue_depth) {
  if (dispatched) dispatched->assign(tasks.size(), false);
  if (tasks.empty()) return Status::Ok();
  std::string dispatched_state = StateArg(v1::TASK_STATE_DISPATCHED);
  std::string dispatched_stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_DISPATCHED), now_ns);
  std::string waiting_stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_WAITING_FOR_ENDPOINT), now_ns);
  std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  std::vector<std::string> specs, stamps;
  specs.reserve(tasks.size());
  stamps.reserve(tasks.size());
  for (const auto& t : tasks) {
    specs.push_back(t.spec.SerializeAsString());
    stamps.push_back(EncodeStamp(TaskStateName(v1::TASK_STATE_RECEIVED), t.received_ns) + waiting_stamp);
  }
  std::string max_depth = std::to_string(std::max<int64_t>(0, max_queue_depth));
  std::vector<std::string_view> args = {"0",           waiting,          keys::kTaskPrefix,    keys::kQueuePrefix,
                                        dispatched_state, dispatched_stamp, keys::kInFlightPrefix, keys::kSeqPrefix,
                                        max_depth};
  args.reserve(args.size() + tasks.size() * 7);
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& t = tasks[i];
    args.insert(args.end(), {t.id, t.owner, t.function, t.endpoint, specs[i], stamps[i], t.direct ? "1" : "0"});
  }
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(submit_, args));
  if (r->elements == 4 && r->element[0]->type == REDIS_REPLY_STRING && ReplyString(r->element[0]) == "full") {
    return ResourceExhausted(QueueFullMessage(ReplyString(r->element[1]), r->element[2]->integer,
                                              r->element[3]->integer, max_queue_depth));
  }
  if (dispatched) {
    for (size_t i = 0; i < r->elements && i < tasks.size(); ++i) (*dispatched)[i] = r->element[i]->integer == 1;
  }
  return Status::Ok();
}

Result<std::vector<v1::TaskSpec>> RedisTaskStore::LeaseTasks(const std::string& endpoint, int max, int64_t now_ns) {
  std::string q = keys::Queue(endpoint), inflight = keys::InFlight(endpoint), seq = keys::Seq(endpoint);
  std::string max_s = std::to_string(max);
  std::string stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_DISPATCHED), now_ns);
  std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  std::string dispatched = StateArg(v1::TASK_STATE_DISPATCHED);
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(lease_, {"0", q, inflight, seq, keys::kTaskPrefix, max_s, stamp, waiting,
                                              dispatched}));
  std::vector<v1::TaskSpec> out;
  out.reserve(r->elements);
  for (size_t i = 0; i < r->elements; ++i) {
    v1::TaskSpec spec;
    const redisReply* e = r->element[i];
    if (!spec.ParseFromArray(e->str, static_cast<int>(e->len))) return Internal("stored task spec is corrupt");
    out.push_back(std::move(spec));
  }
  return out;
}

Status RedisTaskStore::MarkRunning(const std::vector<v1::TaskStarted>& started) {
  if (started.empty()) return Status::Ok();
  std::string allowed = PredecessorsArg(v1::TASK_STATE_RUNNING);
  std::string running = StateArg(v1::TASK_STATE_RUNNING);
  std::vector<std::string> stamps;
  stamps.reserve(started.size());
  for (const auto& s : started) stamps.push_back(EncodeStamp(TaskStateName(v1::TASK_STATE_RUNNING), s.unix_nanos()));
  std::vector<std::string_view> args = {"0", keys::kTaskPrefix, allowed, running};
  for (size_t i = 0; i < started.size(); ++i) args.insert(args.end(), {started[i].task_id(), stamps[i]});
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(running_, args));
  return Status::Ok();
}

Result<std::vector<v1::TaskRecord>> RedisTaskStore::CompleteTasks(const std::string& endpoint,
                                                                  const std::vector<v1::TaskResult>& results,
                                                                  int64_t now_ns) {
  if (results.empty()) return std::vector<v1::TaskRecord>();
  std::string inflight = keys::InFlight(endpoint);
  std::string ok_from = PredecessorsArg(v1::TASK_STATE_SUCCESS), fail_from = PredecessorsArg(v1::TASK_STATE_FAILED);
  std::string success = StateArg(v1::TASK_STATE_SUCCESS), failed = StateArg(v1::TASK_STATE_FAILED);
  std::vector<std::string> payloads, stamps;
  payloads.reserve(results.size());
  stamps.reserve(results.size());
  std::map<std::string_view, const v1::TaskResult*> by_id;
  for (const auto& r : results) {
    payloads.push_back(r.ok() ? r.value().SerializeAsString() : r.error());
    std::string s;
    for (const auto& t : r.timestamps()) s += EncodeStamp(t.stage(), t.unix_nanos());
    s += EncodeStamp(TaskStateName(r.ok() ? v1::TASK_STATE_SUCCESS : v1::TASK_STATE_FAILED), now_ns);
    stamps.push_back(std::move(s));
    by_id[r.task_id()] = &r;
  }
  std::vector<std::string_view> args = {"0",     keys::kTaskPrefix, inflight, endpoint, ok_from,
                                        fail_from, success,          failed};
  args.reserve(args.size() + results.size() * 4);
  for (size_t i = 0; i < results.size(); ++i) {
    args.insert(args.end(), {results[i].task_id(), results[i].ok() ? "1" : "0", payloads[i], stamps[i]});
  }
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(complete_, args));
  std::vector<v1::TaskRecord> out;
  out.reserve(r->elements / 5);
  for (size_t i = 0; i + 4 < r->elements; i += 5) {
    std::string id = ReplyString(r->element[i]);
    const v1::TaskResult* res = by_id[id];
    v1::TaskRecord rec = MakeRecord(id, std::stoi(ReplyString(r->element[i + 1])), ReplyString(r->element[i + 2]),
                                    ReplyString(r->element[i + 3]), endpoint, ReplyString(r->element[i + 4]), "",
                                    res->ok() ? "" : res->error(), "");
    if (res->ok()) *rec.mutable_result() = res->value();
    out.push_back(std::move(rec));
  }
  return out;
}

Result<std::vector<std::optional<v1::TaskRecord>>> RedisTaskStore::GetTasks(const std::vector<std::string>& ids,
                                                                            bool include_args) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  for (const auto& id : ids) {
    std::string key = keys::Task(id);
    if (include_args) {
      conn->Append({"HMGET", key, f::kState, f::kOwner, f::kFunction, f::kEndpoint, f::kTimestamps, f::kResult,
                    f::kError, f::kSpec});
    } else {
      conn->Append({"HMGET", key, f::kState, f::kOwner, f::kFunction, f::kEndpoint, f::kTimestamps, f::kResult,
                    f::kError});
    }
  }
  std::vector<std::optional<v1::TaskRecord>> out;
  out.reserve(ids.size());
  for (const auto& id : ids) {
    LOOM_ASSIGN_OR_RETURN(auto r, conn->GetReply());
    if (r->elements < 7 || ReplyIsNil(r->element[0])) {
      out.emplace_back();
      continue;
    }
    auto s = [&](size_t i) { return i < r->elements ? ReplyString(r->element[i]) : std::string(); };
    out.emplace_back(MakeRecord(id, std::stoi(s(0)), s(1), s(2), s(3), s(4), s(5), s(6), s(7)));
  }
  return out;
}

Result<std::optional<v1::TaskRecord>> RedisTaskStore::CancelTask(const std::string& id, int64_t now_ns) {
  std::string terminal = TerminalArg();
  std::string cancelled = StateArg(v1::TASK_STATE_CANCELLED);
  std::string stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_CANCELLED), now_ns);
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(cancel_, {"0", keys::kTaskPrefix, keys::kQueuePrefix, keys::kInFlightPrefix,
                                               terminal, cancelled, stamp, id}));
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 7) return std::optional<v1::TaskRecord>();
  auto s = [&](size_t i) { return ReplyString(r->element[i]); };
  return std::optional<v1::TaskRecord>(MakeRecord(id, std::stoi(s(0)), s(1), s(2), s(3), s(4), s(5), s(6), ""));
}

Result<int64_t> RedisTaskStore::RequeueInFlight(const std::string& endpoint, const std::vector<std::string>& keep,
                                                int64_t now_ns) {
  std::string q = keys::Queue(endpoint), inflight = keys::InFlight(endpoint);
  std::string allowed = PredecessorsArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  std::string stamp = EncodeStamp("requeued", now_ns);
  std::vector<std::string_view> args = {"0", keys::kTaskPrefix, q, inflight, allowed, waiting, stamp};
  for (const auto& k : keep) args.push_back(k);
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(requeue_, args));
  return static_cast<int64_t>(r->integer);
}

Result<int64_t> RedisTaskStore::QueueDepth(const std::string& endpoint) {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"LLEN", keys::Queue(endpoint)}));
  return static_cast<int64_t>(r->integer);
}

Result<int64_t> RedisTaskStore::InFlightCount(const std::string& endpoint) {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"ZCARD", keys::InFlight(endpoint)}));
  return static_cast<int64_t>(r->integer);
}

}  // namespace loom::service
