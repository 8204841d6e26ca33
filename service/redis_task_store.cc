#include "service/redis_task_store.h"

#include <google/protobuf/util/message_differencer.h>
#include <openssl/sha.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>

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

std::string TerminalArg() {
  return "," + StateArg(v1::TASK_STATE_SUCCESS) + "," + StateArg(v1::TASK_STATE_FAILED) + "," +
         StateArg(v1::TASK_STATE_CANCELLED) + ",";
}

// Every script takes its key prefixes, states and constants as ARGV (none as KEYS: one Redis
// holds all of Loom's keys). History records use "\31" between fields and "\30" after each
// (task_codec.h). The final error texts match task_codec.cc's PoisonError/ExhaustedError.

// Prepended to the scripts that finish tasks (kComplete, kCancel, kLose). A finished task is not
// given an EXPIRE (a few microseconds a task inside Redis, and a PEXPIREAT in the AOF): its id
// joins the list of its expiry bucket, one RPUSH per 1000 tasks, and the service deletes the
// bucket's tasks once its time has come (kSweep). retain_flush must run before the script returns.
constexpr const char* kRetain = R"lua(
local retained = {}
local function retain(id) retained[#retained + 1] = id end
-- set: the expiry set, list: this call's bucket, bucket: its time (unix seconds).
local function retain_flush(set, list, bucket)
  if #retained == 0 then return end
  for from = 1, #retained, 1000 do
    redis.call('RPUSH', list, unpack(retained, from, math.min(#retained, from + 999)))
  end
  redis.call('ZADD', set, bucket, bucket)
end
)lua";

// ARGV: 1 waiting state, 2 task prefix, 3 queue prefix, 4 epoch prefix, 5 dispatched stamp,
// 6 in-flight prefix, 7 sequence prefix, 8 most tasks an endpoint may have queued (0: no
// limit), 9 idempotency prefix, then per task (12): id, owner, function, endpoint, spec,
// stamps, direct ("1"/"0"), lease epoch, max attempts, idempotency key, timeout ms, failover
// kernel ("" when the task may not move).
// A task whose key is taken creates nothing and returns the earlier id. A direct task whose
// queue is empty (nothing pending ahead of it) is dispatched at once, if its lease epoch is
// still the endpoint's (else it is queued). A task in flight is in the endpoint's in-flight
// set and keeps the waiting state until it runs (see kLease). A batch that would pass the
// depth limit changes nothing and returns {'full', endpoint, depth, adding}. Otherwise returns
// per task: 1 dispatched, 0 queued, or the earlier task's id.
constexpr const char* kSubmit = R"lua(
local max_depth = tonumber(ARGV[8])
if max_depth > 0 then
  local adding = {}
  for i = 10, #ARGV, 12 do adding[ARGV[i + 3]] = (adding[ARGV[i + 3]] or 0) + 1 end
  for ep, n in pairs(adding) do
    local depth = redis.call('LLEN', ARGV[3] .. ep)
    if depth + n > max_depth then return {'full', ep, depth, n} end
  end
end
local pending = {}  -- endpoint -> ids to RPUSH
local queued = {}   -- endpoint -> true once this script queued a task for it
local empty = {}    -- endpoint -> whether its queue was empty when the script began
local sent = {}     -- endpoint -> ids dispatched at once, in order (ZADD with INCRBY's numbers, at the end)
local out = {}
for i = 10, #ARGV, 12 do
  local id, ep, key = ARGV[i], ARGV[i + 3], ARGV[i + 9]
  local earlier = false
  if key ~= '' then
    local ik = ARGV[9] .. ARGV[i + 1] .. ':' .. key
    earlier = redis.call('GET', ik)
    if not earlier then redis.call('SET', ik, id) end
  end
  if earlier then
    out[#out + 1] = earlier
  else
    local k = ARGV[2] .. id
    local direct = false
    if ARGV[i + 6] == '1' and not queued[ep] then
      if empty[ep] == nil then
        empty[ep] = redis.call('LLEN', ARGV[3] .. ep) == 0 and redis.call('GET', ARGV[4] .. ep) == ARGV[i + 7]
      end
      direct = empty[ep]
    end
    if direct then
      redis.call('HSET', k, 's', ARGV[1], 'o', ARGV[i + 1], 'f', ARGV[i + 2], 'e', ep, 'a', ARGV[i + 4],
                 't', ARGV[i + 5] .. ARGV[5], 'm', ARGV[i + 8])
      local d = sent[ep]
      if not d then d = {}; sent[ep] = d end
      d[#d + 1] = id
      out[#out + 1] = 1
    else
      redis.call('HSET', k, 's', ARGV[1], 'o', ARGV[i + 1], 'f', ARGV[i + 2], 'e', ep, 'a', ARGV[i + 4],
                 't', ARGV[i + 5], 'm', ARGV[i + 8])
      queued[ep] = true
      local q = pending[ep]
      if not q then q = {}; pending[ep] = q end
      q[#q + 1] = id
      if #q == 1000 then redis.call('RPUSH', ARGV[3] .. ep, unpack(q)); pending[ep] = {} end
      out[#out + 1] = 0
    end
    if key ~= '' then redis.call('HSET', k, 'k', key) end
    if ARGV[i + 10] ~= '0' then redis.call('HSET', k, 'w', ARGV[i + 10]) end
    if ARGV[i + 11] ~= '' then redis.call('HSET', k, 'g', ARGV[i + 11]) end
  end
end
for ep, q in pairs(pending) do
  if #q > 0 then redis.call('RPUSH', ARGV[3] .. ep, unpack(q)) end
end
for ep, d in pairs(sent) do
  local seq = redis.call('INCRBY', ARGV[7] .. ep, #d) - #d
  for from = 1, #d, 1000 do
    local z = {}
    for j = from, math.min(#d, from + 999) do
      z[#z + 1] = seq + j
      z[#z + 1] = d[j]
    end
    redis.call('ZADD', ARGV[6] .. ep, unpack(z))
  end
end
return out
)lua";

// A lease writes nothing to the task itself: its id moves from the queue to the in-flight set,
// which says that it is dispatched (to the endpoint's latest session, the epoch key's; a
// registration or a session's loss empties the set). Its hash keeps the waiting state, and its
// attempt count, until it runs (kRunning) or finishes (kComplete); readers show it as
// dispatched (kRead). Its "dispatched" stamp comes back with its result, from the endpoint.
// ARGV: 1 queue key, 2 in-flight key, 3 sequence key, 4 task prefix, 5 max, 6 epoch key,
// 7 waiting state, 8 lease epoch. Returns the specs; none when the epoch is not the endpoint's
// latest.
constexpr const char* kLease = R"lua(
local out = {}
local max = tonumber(ARGV[5])
if redis.call('GET', ARGV[6]) ~= ARGV[8] then return out end
while #out < max do
  local ids = redis.call('LPOP', ARGV[1], math.min(max - #out, 1000))
  if not ids then break end
  local zargs = {}
  local seq = redis.call('INCRBY', ARGV[3], #ids) - #ids
  for _, id in ipairs(ids) do
    local v = redis.call('HMGET', ARGV[4] .. id, 's', 'a')
    if v[1] == ARGV[7] then
      seq = seq + 1
      zargs[#zargs + 1] = seq
      zargs[#zargs + 1] = id
      out[#out + 1] = v[2]
    end
  end
  if #zargs > 0 then redis.call('ZADD', ARGV[2], unpack(zargs)) end
end
return out
)lua";

// A task in flight (kLease) starts running: its attempt is counted now. A dispatched state in
// the hash is an older service's lease, whose attempt was counted already.
// ARGV: 1 task prefix, 2 dispatched state, 3 running state, 4 waiting state, 5 in-flight prefix,
// then pairs of id, stamp.
constexpr const char* kRunning = R"lua(
for i = 6, #ARGV, 2 do
  local k = ARGV[1] .. ARGV[i]
  local v = redis.call('HMGET', k, 's', 't', 'e', 'n')
  if v[1] == ARGV[2] then
    redis.call('HSET', k, 's', ARGV[3], 't', v[2] .. ARGV[i + 1])
  elseif v[1] == ARGV[4] and v[3] and redis.call('ZSCORE', ARGV[5] .. v[3], ARGV[i]) then
    redis.call('HSET', k, 's', ARGV[3], 't', v[2] .. ARGV[i + 1], 'n', (tonumber(v[4]) or 0) + 1)
  end
end
return 1
)lua";

// A result counts when its session's lease epoch is the endpoint's latest and its task is in the
// endpoint's in-flight set; any other is rejected (fenced off). A task still in the waiting
// state (it never reported running) has its attempt counted here.
// ARGV: 1 task prefix, 2 in-flight key, 3 endpoint, 4 lease epoch, 5 success, 6 failed,
// 7 waiting, 8 queue key, 9 ttl seconds (0: none), 10 max worker deaths, 11 dispatched,
// 12 running, 13 success stamp, 14 failed stamp, 15 retry stamp, 16 now, 17 idempotency
// prefix, 18 worker-lost kind, 19 poison kind, 20 exhausted kind, 21 kernel-error kind, 22-24
// expiry set, bucket list, bucket (kRetain), 25 epoch key, then per result (5): id, ok
// ("1"/"0"), value or error, the result's stamps, failure kind.
// Returns {retried, rejected, then per finished task: for a success 7 values, {its position in
// the batch (from 1), owner, function, stamps before this result's, history, attempts, max
// attempts}; for a failure 9, {-position, owner, function, stamps, history, attempts, max
// attempts, failure, error}}. The service knows the rest (a success's id, result and last
// stamps), so they are not sent back.
constexpr const char* kComplete = R"lua(
local out = {0, 0}
local ttl = tonumber(ARGV[9])
local done = {}  -- ids to ZREM from the in-flight set, one call per 1000
local function unflight(id)
  done[#done + 1] = id
  if #done == 1000 then redis.call('ZREM', ARGV[2], unpack(done)); done = {} end
end
local function finish(id, v)
  if ttl > 0 then
    retain(id)
    if v[10] then redis.call('EXPIRE', ARGV[17] .. v[2] .. ':' .. v[10], ttl) end
  end
end
-- One finished task's reply values (no table per task); `failure` nil for a success.
local function reply(pos, owner, fn, stamps, history, n, m, failure, err)
  local o = #out
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = failure and -pos or pos, owner, fn, stamps
  out[o + 5], out[o + 6], out[o + 7] = history, n, m
  if failure then out[o + 8], out[o + 9] = failure, err end
end
local current = redis.call('GET', ARGV[25]) == ARGV[4]
local ids = {}
for i = 26, #ARGV, 5 do ids[#ids + 1] = ARGV[i] end
local leased = {}  -- per result: its task is in flight (ZMSCORE 1000 at a time: unpack's limit)
if current then
  for from = 1, #ids, 1000 do
    local part = redis.call('ZMSCORE', ARGV[2], unpack(ids, from, math.min(#ids, from + 999)))
    for j = 1, #part do leased[from + j - 1] = part[j] end
  end
end
for i = 26, #ARGV, 5 do
  local id = ARGV[i]
  local k = ARGV[1] .. id
  local v = leased[(i - 21) / 5] and redis.call('HMGET', k, 's', 'o', 'f', 'e', 't', 'n', 'm', 'd', 'h', 'k') or {}
  if v[1] and v[4] == ARGV[3] and (v[1] == ARGV[7] or v[1] == ARGV[11] or v[1] == ARGV[12]) then
    unflight(id)
    local n, m = tonumber(v[6]) or 0, tonumber(v[7]) or 1
    if v[1] == ARGV[7] then n = n + 1 end
    if ARGV[i + 1] == '1' then
      redis.call('HSET', k, 's', ARGV[5], 'r', ARGV[i + 2], 't', v[5] .. ARGV[i + 3] .. ARGV[13], 'n', n)
      finish(id, v)
      reply((i - 21) / 5, v[2], v[3], v[5], v[9] or '', n, m)
    else
      local stamps = v[5] .. ARGV[i + 3]
      local kind = ARGV[i + 4]
      if kind == '0' then kind = ARGV[21] end
      local h = (v[9] or '') .. n .. '\31' .. ARGV[3] .. '\31' .. ARGV[4] .. '\31' .. kind .. '\31' .. ARGV[16] ..
                '\31' .. ARGV[i + 2] .. '\30'
      local fail, err = kind, ARGV[i + 2]
      local d = tonumber(v[8]) or 0
      if kind == ARGV[18] then
        d = d + 1
        if d >= tonumber(ARGV[10]) then
          fail = ARGV[19]
          err = 'poison: this task killed ' .. d .. ' worker(s) (max_worker_deaths ' .. ARGV[10] ..
                '); it is not tried again'
        elseif n >= m then
          fail = ARGV[20]
          err = 'gave up after ' .. n .. ' attempt(s) lost to system failures (max_attempts ' .. m .. ')'
        else
          fail = nil
        end
      end
      if fail then
        stamps = stamps .. ARGV[14]
        redis.call('HSET', k, 's', ARGV[6], 'x', err, 't', stamps, 'h', h, 'd', d, 'u', fail, 'n', n)
        finish(id, v)
        reply((i - 21) / 5, v[2], v[3], stamps, h, n, m, fail, err)
      else
        redis.call('HSET', k, 's', ARGV[7], 't', stamps .. ARGV[15], 'h', h, 'd', d, 'n', n)
        redis.call('RPUSH', ARGV[8], id)
        out[1] = out[1] + 1
      end
    end
  else
    out[2] = out[2] + 1
  end
end
if #done > 0 then redis.call('ZREM', ARGV[2], unpack(done)) end
retain_flush(ARGV[22], ARGV[23], ARGV[24])
return out
)lua";

// ARGV: 1 task prefix, 2 queue prefix, 3 in-flight prefix, 4 terminal states, 5 cancelled
// state, 6 stamp, 7 id, 8 ttl seconds, 9 idempotency prefix, 10-12 expiry set, bucket list,
// bucket (kRetain). Returns state, owner, function,
// endpoint, stamps, result, error, history, attempts, max attempts, failure, timeout, key.
constexpr const char* kCancel = R"lua(
local k = ARGV[1] .. ARGV[7]
local v = redis.call('HMGET', k, 's', 'o', 'f', 'e', 't', 'r', 'x', 'h', 'n', 'm', 'u', 'w', 'k')
if not v[1] then return false end
if not string.find(ARGV[4], ',' .. v[1] .. ',', 1, true) then
  v[1] = ARGV[5]
  v[5] = v[5] .. ARGV[6]
  redis.call('HSET', k, 's', v[1], 't', v[5])
  redis.call('LREM', ARGV[2] .. v[4], 1, ARGV[7])
  redis.call('ZREM', ARGV[3] .. v[4], ARGV[7])
  local ttl = tonumber(ARGV[8])
  if ttl > 0 then
    retain(ARGV[7])
    if v[13] then redis.call('EXPIRE', ARGV[9] .. v[2] .. ':' .. v[13], ttl) end
  end
  retain_flush(ARGV[10], ARGV[11], ARGV[12])
end
for i = 1, 13 do v[i] = v[i] or '' end
return v
)lua";

// ARGV: 1 task prefix, 2 terminal states, 3 idempotency prefix, then ids. Deletes nothing and
// returns the id of a task that has not finished, if any; else returns how many were deleted.
constexpr const char* kDelete = R"lua(
for i = 4, #ARGV do
  local s = redis.call('HGET', ARGV[1] .. ARGV[i], 's')
  if s and not string.find(ARGV[2], ',' .. s .. ',', 1, true) then return {ARGV[i]} end
end
local n = 0
for i = 4, #ARGV do
  local k = ARGV[1] .. ARGV[i]
  local v = redis.call('HMGET', k, 'o', 'k')
  if v[2] then redis.call('DEL', ARGV[3] .. v[1] .. ':' .. v[2]) end
  n = n + redis.call('DEL', k)
end
return n
)lua";

// An endpoint session was lost ('release': ARGV[6] is its epoch) or a new one registered
// ('register': the ids after ARGV[22] are the tasks the new session still holds, which stay in
// flight under its epoch). The in-flight set belongs to the endpoint's latest epoch (ARGV[22]'s
// key; INCR on register): a release of an older epoch changes nothing. Each other task in
// flight goes back to the head of the queue in dispatch order: one that never ran keeps its
// attempt (an older service's dispatched state gives it back); a running one records an
// endpoint-lost attempt, and fails if it has no attempts left.
// ARGV: 1 task prefix, 2 in-flight key, 3 queue key, 4 endpoint, 5 mode, 6 epoch (release),
// 7 waiting, 8 running, 9 failed, 10 ttl, 11 now, 12 requeued stamp, 13 failed stamp,
// 14 reason, 15 terminal states, 16 endpoint-lost kind, 17 exhausted kind, 18 idempotency
// prefix, 19-21 expiry set, bucket list, bucket (kRetain), 22 epoch key, 23 dispatched state,
// then held ids. Returns {epoch, requeued, then per failed task: id, state, owner, function,
// stamps, history, attempts, max attempts, failure, error}.
constexpr const char* kLose = R"lua(
local epoch, lost
if ARGV[5] == 'register' then
  epoch = redis.call('INCR', ARGV[22])
  lost = epoch - 1
else
  epoch = tonumber(ARGV[6])
  lost = tonumber(redis.call('GET', ARGV[22]) or 0)
  if lost > epoch then return {epoch, 0} end
end
local keep = {}
for i = 24, #ARGV do keep[ARGV[i]] = true end
local ttl = tonumber(ARGV[10])
local back, out = {}, {}
for _, id in ipairs(redis.call('ZRANGE', ARGV[2], 0, -1)) do
  local k = ARGV[1] .. id
  local v = redis.call('HMGET', k, 's', 't', 'n', 'm', 'h', 'o', 'f', 'k')
  if not v[1] or string.find(ARGV[15], ',' .. v[1] .. ',', 1, true) then
    redis.call('ZREM', ARGV[2], id)
  elseif not keep[id] then
    redis.call('ZREM', ARGV[2], id)
    local n, m = tonumber(v[3]) or 0, tonumber(v[4]) or 1
    if v[1] == ARGV[8] then
      local h = (v[5] or '') .. n .. '\31' .. ARGV[4] .. '\31' .. lost .. '\31' .. ARGV[16] .. '\31' ..
                ARGV[11] .. '\31' .. ARGV[14] .. '\30'
      if n >= m then
        local err = 'gave up after ' .. n .. ' attempt(s) lost to system failures (max_attempts ' .. m .. ')'
        local stamps = v[2] .. ARGV[13]
        redis.call('HSET', k, 's', ARGV[9], 't', stamps, 'h', h, 'u', ARGV[17], 'x', err)
        if ttl > 0 then
          retain(id)
          if v[8] then redis.call('EXPIRE', ARGV[18] .. v[6] .. ':' .. v[8], ttl) end
        end
        for _, x in ipairs({id, ARGV[9], v[6], v[7], stamps, h, n, m, ARGV[17], err}) do out[#out + 1] = x end
      else
        redis.call('HSET', k, 's', ARGV[7], 't', v[2] .. ARGV[12], 'h', h)
        back[#back + 1] = id
      end
    elseif v[1] == ARGV[23] then
      redis.call('HSET', k, 's', ARGV[7], 't', v[2] .. ARGV[12], 'n', math.max(n - 1, 0))
      back[#back + 1] = id
    else
      redis.call('HSET', k, 't', v[2] .. ARGV[12])
      back[#back + 1] = id
    end
  end
end
for i = #back, 1, -1 do redis.call('LPUSH', ARGV[3], back[i]) end
retain_flush(ARGV[19], ARGV[20], ARGV[21])
local res = {epoch, #back}
for _, x in ipairs(out) do res[#res + 1] = x end
return res
)lua";

// Tasks leased under epoch ARGV[5] and never sent. Under a later epoch the set is no longer
// theirs: the registration that began it put them back already.
// ARGV: 1 task prefix, 2 in-flight key, 3 queue key, 4 endpoint, 5 epoch, 6 epoch key,
// 7 waiting, 8 stamp, then ids. Returns how many went back to the queue.
constexpr const char* kRelinquish = R"lua(
local back = {}
if redis.call('GET', ARGV[6]) ~= ARGV[5] then return 0 end
for i = 9, #ARGV do
  local k = ARGV[1] .. ARGV[i]
  local v = redis.call('HMGET', k, 's', 'e', 't')
  if v[1] == ARGV[7] and v[2] == ARGV[4] and redis.call('ZREM', ARGV[2], ARGV[i]) == 1 then
    redis.call('HSET', k, 't', v[3] .. ARGV[8])
    back[#back + 1] = ARGV[i]
  end
end
for i = #back, 1, -1 do redis.call('LPUSH', ARGV[3], back[i]) end
return #back
)lua";

// Reads tasks, showing one in flight (kLease) as dispatched, its attempt counted.
// ARGV: 1 task prefix, 2 in-flight prefix, 3 waiting state, 4 dispatched state, 5 "1" to read
// the spec too, then ids. Returns per id the fields ParseTaskFields reads.
constexpr const char* kRead = R"lua(
local out = {}
local fields = {'s', 'o', 'f', 'e', 't', 'r', 'x', 'h', 'n', 'm', 'u', 'w', 'k'}
if ARGV[5] == '1' then fields[#fields + 1] = 'a' end
for i = 6, #ARGV do
  local v = redis.call('HMGET', ARGV[1] .. ARGV[i], unpack(fields))
  if v[1] == ARGV[3] and v[4] and redis.call('ZSCORE', ARGV[2] .. v[4], ARGV[i]) then
    v[1] = ARGV[4]
    v[9] = (tonumber(v[9]) or 0) + 1
  end
  out[#out + 1] = v
end
return out
)lua";

// ARGV: 1 task prefix, 2 from queue, 3 to queue, 4 to endpoint, 5 offered kernels (",a@1,b@2,"),
// 6 stamp, 7 limit, 8 waiting state, 9 users admitted (",alice,bob,"; "": every user), 10
// functions admitted (",alice/f,"; "": every function), 11 device classes (",cpu,gpu,"), 12 the
// most to move (0: no limit). A task's route `g` is "kernel\31owner/function\31class,class"
// (service/routing.h; a route of an older service is the kernel alone). Returns how many moved.
constexpr const char* kFailover = R"lua(
local ids = redis.call('LRANGE', ARGV[2], 0, tonumber(ARGV[7]) - 1)
local max_moved = tonumber(ARGV[12])
local keep, moved = {}, {}
local function has(set, x) return string.find(set, ',' .. x .. ',', 1, true) ~= nil end
local function admits(route, owner)
  local kernel, fn, classes = string.match(route, '^([^\31]*)\31?([^\31]*)\31?([^\31]*)$')
  if not kernel or not has(ARGV[5], kernel) then return false end
  if ARGV[9] ~= '' and not has(ARGV[9], owner or '') then return false end
  if ARGV[10] ~= '' and (fn == '' or not has(ARGV[10], fn)) then return false end
  for c in string.gmatch(classes, '[^,]+') do
    if not has(ARGV[11], c) then return false end
  end
  return true
end
for _, id in ipairs(ids) do
  local k = ARGV[1] .. id
  local v = redis.call('HMGET', k, 's', 'g', 't', 'o')
  if (max_moved == 0 or #moved < max_moved) and v[1] == ARGV[8] and v[2] and admits(v[2], v[4]) then
    redis.call('HSET', k, 'e', ARGV[4], 't', v[3] .. ARGV[6])
    moved[#moved + 1] = id
  else
    keep[#keep + 1] = id
  end
end
if #moved == 0 then return 0 end
redis.call('LTRIM', ARGV[2], #ids, -1)
for i = #keep, 1, -1 do redis.call('LPUSH', ARGV[2], keep[i]) end
for i = #moved, 1, -1 do redis.call('LPUSH', ARGV[3], moved[i]) end
return #moved
)lua";

// ARGV: 1 expiry set, 2 bucket prefix, 3 now (unix seconds), 4 task prefix, 5 most ids to take.
// Deletes the tasks of each bucket whose time has come, oldest bucket first, and the bucket once
// empty. Returns {ids taken (a task deleted before counts too), 1 if more are due else 0}.
constexpr const char* kSweep = R"lua(
local budget = tonumber(ARGV[5])
local n = 0
local buckets = redis.call('ZRANGEBYSCORE', ARGV[1], '-inf', ARGV[3], 'LIMIT', 0, 100)
for _, b in ipairs(buckets) do
  local list = ARGV[2] .. b
  while n < budget do
    local ids = redis.call('LPOP', list, math.min(1000, budget - n))
    if not ids then break end
    for i = 1, #ids do ids[i] = ARGV[4] .. ids[i] end
    redis.call('DEL', unpack(ids))
    n = n + #ids
  end
  if n >= budget then return {n, 1} end
  redis.call('ZREM', ARGV[1], b)
end
return {n, #buckets == 100 and 1 or 0}
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

RedisTaskStore::RedisTaskStore(RedisOptions options, StoreOptions store_options)
    : pool_(std::move(options)), options_(store_options) {
  auto make = [](std::string src) {
    std::string sha = Sha1Hex(src);
    return Script{std::move(src), std::move(sha)};
  };
  submit_ = make(kSubmit);
  lease_ = make(kLease);
  read_ = make(kRead);
  running_ = make(kRunning);
  complete_ = make(std::string(kRetain) + kComplete);
  cancel_ = make(std::string(kRetain) + kCancel);
  delete_ = make(kDelete);
  lose_ = make(std::string(kRetain) + kLose);
  relinquish_ = make(kRelinquish);
  failover_ = make(kFailover);
  put_function_ = make(kPutFunction);
  sweep_ = make(kSweep);
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

Result<int64_t> RedisTaskStore::HashMaxListpackValue() {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"CONFIG", "GET", "hash-max-listpack-value"}));
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
    return Internal("CONFIG GET hash-max-listpack-value gave no value");
  }
  const std::string v = ReplyString(r->element[1]);
  int64_t n = 0;
  if (std::from_chars(v.data(), v.data() + v.size(), n).ec != std::errc()) {
    return Internal("hash-max-listpack-value '" + v + "' is not a number");
  }
  return n;
}

Result<bool> RedisTaskStore::PutFunction(const v1::Function& fn) {
  const std::string qualified = FunctionKey(fn);
  std::string key = keys::Function(qualified);
  std::string body = fn.SerializeAsString();
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(put_function_, {"2", key, keys::kFunctions, body, qualified}));
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

Result<std::optional<v1::Function>> RedisTaskStore::GetFunction(const std::string& key) {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"GET", keys::Function(key)}));
  if (ReplyIsNil(r.get())) return std::optional<v1::Function>();
  v1::Function fn;
  if (!fn.ParseFromString(ReplyString(r.get()))) return Internal("stored function '" + key + "' is corrupt");
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

Status RedisTaskStore::PutEndpointAccess(const v1::EndpointRecord& access) {
  LOOM_ASSIGN_OR_RETURN(auto r,
                        Command({"SET", keys::EndpointAccess(access.id()), AccessOf(access).SerializeAsString()}));
  return Status::Ok();
}

Result<std::optional<v1::EndpointRecord>> RedisTaskStore::GetEndpoint(const std::string& id) {
  LOOM_ASSIGN_OR_RETURN(auto r, Command({"MGET", keys::Endpoint(id), keys::EndpointAccess(id)}));
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return Internal("unexpected reply to MGET of an endpoint");
  if (ReplyIsNil(r->element[0])) return std::optional<v1::EndpointRecord>();
  v1::EndpointRecord e;
  if (!e.ParseFromString(ReplyString(r->element[0]))) return Internal("stored endpoint '" + id + "' is corrupt");
  if (!ReplyIsNil(r->element[1])) {
    v1::EndpointRecord access;
    if (!access.ParseFromString(ReplyString(r->element[1]))) {
      return Internal("stored access of endpoint '" + id + "' is corrupt");
    }
    OverlayAccess(access, &e);
  }
  return std::optional<v1::EndpointRecord>(std::move(e));
}

Result<std::vector<v1::EndpointRecord>> RedisTaskStore::ListEndpoints() {
  LOOM_ASSIGN_OR_RETURN(auto eps, ListAll<v1::EndpointRecord>(pool_, keys::kEndpoints, keys::kEndpointPrefix));
  if (eps.empty()) return eps;
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  for (const auto& e : eps) conn->Append({"GET", keys::EndpointAccess(e.id())});
  for (auto& e : eps) {
    LOOM_ASSIGN_OR_RETURN(auto r, conn->GetReply());
    v1::EndpointRecord access;
    if (!ReplyIsNil(r.get()) && access.ParseFromString(ReplyString(r.get()))) OverlayAccess(access, &e);
  }
  return eps;
}

namespace {
std::string Num(int64_t v) { return std::to_string(v); }

// The bucket (kRetain) of the tasks that finish at `now_ns`: the first multiple of
// ExpiryGranularitySeconds at or after now + ttl, in unix seconds.
struct ExpiryArgs {
  ExpiryArgs(int64_t now_ns, int64_t ttl_seconds) {
    const int64_t g = ExpiryGranularitySeconds(ttl_seconds);
    const int64_t due = (now_ns + 999'999'999) / 1'000'000'000 + ttl_seconds;
    const int64_t at = (due + g - 1) / g * g;
    bucket = Num(at);
    list = keys::ExpiryBucket(at);
  }
  std::string bucket, list;
};

// Reads the 10 fields per failed task that kLose returns, from index `from`.
std::vector<v1::TaskRecord> FinishedRecords(const redisReply* r, size_t from, const std::string& endpoint) {
  std::vector<v1::TaskRecord> out;
  for (size_t i = from; i + 9 < r->elements; i += 10) {
    auto s = [&](size_t k) { return ReplyString(r->element[i + k]); };
    StoredTask t;
    t.state = std::stoi(s(1));
    t.owner = s(2);
    t.function = s(3);
    t.endpoint = endpoint;
    t.stamps = s(4);
    t.history = s(5);
    t.attempts = std::stoi(s(6));
    t.max_attempts = std::stoi(s(7));
    t.failure = std::stoi(s(8));
    t.error = s(9);
    out.push_back(MakeRecord(s(0), t));
  }
  return out;
}
}  // namespace

// The fields GetTasks and kCancel read, in this order: state, owner, function, endpoint,
// stamps, result, error, history, attempts, max attempts, failure, timeout, idempotency key,
// and (optionally) the spec.
namespace {
StoredTask ParseTaskFields(const redisReply* r) {
  auto s = [&](size_t i) { return i < r->elements ? ReplyString(r->element[i]) : std::string(); };
  auto n = [&](size_t i) -> int64_t {
    std::string v = s(i);
    return v.empty() ? 0 : std::stoll(v);
  };
  StoredTask t;
  t.state = static_cast<int>(n(0));
  t.owner = s(1);
  t.function = s(2);
  t.endpoint = s(3);
  t.stamps = s(4);
  t.result = s(5);
  t.error = s(6);
  t.history = s(7);
  t.attempts = static_cast<int>(n(8));
  t.max_attempts = static_cast<int>(n(9));
  t.failure = static_cast<int>(n(10));
  t.timeout_ms = n(11);
  t.idempotency_key = s(12);
  t.spec = s(13);
  return t;
}
}  // namespace

Status RedisTaskStore::SubmitTasks(const std::vector<NewTask>& tasks, int64_t now_ns, SubmitOutcome* outcome,
                                   int64_t max_queue_depth) {
  if (outcome) {
    outcome->dispatched.assign(tasks.size(), false);
    outcome->existing_ids.assign(tasks.size(), "");
  }
  if (tasks.empty()) return Status::Ok();
  std::string dispatched_stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_DISPATCHED), now_ns);
  std::string waiting_stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_WAITING_FOR_ENDPOINT), now_ns);
  std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  std::vector<std::string> specs, stamps, numbers;
  specs.reserve(tasks.size());
  stamps.reserve(tasks.size());
  numbers.reserve(tasks.size() * 3);
  for (const auto& t : tasks) {
    specs.push_back(t.spec.SerializeAsString());
    stamps.push_back(EncodeStamp(TaskStateName(v1::TASK_STATE_RECEIVED), t.received_ns) + waiting_stamp);
    numbers.push_back(Num(t.lease_epoch));
    numbers.push_back(Num(t.max_attempts));
    numbers.push_back(Num(t.spec.timeout_ms()));
  }
  std::string max_depth = Num(std::max<int64_t>(0, max_queue_depth));
  std::vector<std::string_view> args = {"0",
                                        waiting,
                                        keys::kTaskPrefix,
                                        keys::kQueuePrefix,
                                        keys::kEpochPrefix,
                                        dispatched_stamp,
                                        keys::kInFlightPrefix,
                                        keys::kSeqPrefix,
                                        max_depth,
                                        keys::kIdempotencyPrefix};
  args.reserve(args.size() + tasks.size() * 12);
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& t = tasks[i];
    args.insert(args.end(),
                {t.id, t.owner, t.function, t.endpoint, specs[i], stamps[i], t.direct ? "1" : "0", numbers[3 * i],
                 numbers[3 * i + 1], t.idempotency_key, numbers[3 * i + 2], t.failover_kernel});
  }
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(submit_, args));
  if (r->elements == 4 && r->element[0]->type == REDIS_REPLY_STRING && ReplyString(r->element[0]) == "full") {
    return ResourceExhausted(
        QueueFullMessage(ReplyString(r->element[1]), r->element[2]->integer, r->element[3]->integer, max_queue_depth));
  }
  if (outcome) {
    for (size_t i = 0; i < r->elements && i < tasks.size(); ++i) {
      const redisReply* e = r->element[i];
      if (e->type == REDIS_REPLY_STRING) {
        outcome->existing_ids[i] = ReplyString(e);
      } else {
        outcome->dispatched[i] = e->integer == 1;
      }
    }
  }
  return Status::Ok();
}

Result<std::vector<v1::TaskSpec>> RedisTaskStore::LeaseTasks(const std::string& endpoint, int64_t lease_epoch, int max,
                                                             int64_t /*now_ns*/) {
  std::string q = keys::Queue(endpoint), inflight = keys::InFlight(endpoint), seq = keys::Seq(endpoint);
  std::string max_s = Num(max), epoch = Num(lease_epoch), epoch_key = keys::Epoch(endpoint);
  std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  LOOM_ASSIGN_OR_RETURN(auto r,
                        Eval(lease_, {"0", q, inflight, seq, keys::kTaskPrefix, max_s, epoch_key, waiting, epoch}));
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
  std::string dispatched = StateArg(v1::TASK_STATE_DISPATCHED);
  std::string running = StateArg(v1::TASK_STATE_RUNNING);
  std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  std::vector<std::string> stamps;
  stamps.reserve(started.size());
  for (const auto& s : started) stamps.push_back(EncodeStamp(TaskStateName(v1::TASK_STATE_RUNNING), s.unix_nanos()));
  std::vector<std::string_view> args = {"0", keys::kTaskPrefix, dispatched, running, waiting, keys::kInFlightPrefix};
  for (size_t i = 0; i < started.size(); ++i) args.insert(args.end(), {started[i].task_id(), stamps[i]});
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(running_, args));
  return Status::Ok();
}

namespace {

// The arguments of one kComplete call, with the strings they point into.
struct CompleteCall {
  explicit CompleteCall(int64_t now_ns, int64_t ttl_seconds) : expiry(now_ns, ttl_seconds) {}
  ExpiryArgs expiry;
  std::string endpoint, inflight, queue, epoch, epoch_key, success, failed, waiting, dispatched, running, ttl, deaths;
  std::string ok_stamp, fail_stamp, retry_stamp, now, lost, poison, exhausted, kernel_error;
  const std::vector<v1::TaskResult>* results = nullptr;
  std::vector<std::string> payloads, stamps, kinds;
  std::vector<std::string_view> args;
};

std::unique_ptr<CompleteCall> PrepareComplete(const std::string& endpoint, int64_t lease_epoch,
                                              const std::vector<v1::TaskResult>& results, int64_t now_ns,
                                              const StoreOptions& options) {
  auto c = std::make_unique<CompleteCall>(now_ns, options.result_ttl_seconds);
  c->endpoint = endpoint;
  c->inflight = keys::InFlight(endpoint);
  c->queue = keys::Queue(endpoint);
  c->epoch = Num(lease_epoch);
  c->epoch_key = keys::Epoch(endpoint);
  c->success = StateArg(v1::TASK_STATE_SUCCESS);
  c->failed = StateArg(v1::TASK_STATE_FAILED);
  c->waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  c->dispatched = StateArg(v1::TASK_STATE_DISPATCHED);
  c->running = StateArg(v1::TASK_STATE_RUNNING);
  c->ttl = Num(options.result_ttl_seconds);
  c->deaths = Num(options.max_worker_deaths);
  c->ok_stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_SUCCESS), now_ns);
  c->fail_stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_FAILED), now_ns);
  c->retry_stamp = EncodeStamp("retry", now_ns);
  c->now = Num(now_ns);
  c->lost = Num(v1::FAILURE_KIND_WORKER_LOST);
  c->poison = Num(v1::FAILURE_KIND_POISON);
  c->exhausted = Num(v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED);
  c->kernel_error = Num(v1::FAILURE_KIND_KERNEL_ERROR);
  c->payloads.reserve(results.size());
  c->stamps.reserve(results.size());
  c->kinds.reserve(results.size());
  for (const auto& r : results) {
    c->payloads.push_back(r.ok() ? r.value().SerializeAsString() : SanitizeForHistory(r.error()));
    c->stamps.push_back(EncodeResultStamps(r));
    c->kinds.push_back(Num(r.failure()));
  }
  c->results = &results;
  c->args = {"0",
             keys::kTaskPrefix,
             c->inflight,
             c->endpoint,
             c->epoch,
             c->success,
             c->failed,
             c->waiting,
             c->queue,
             c->ttl,
             c->deaths,
             c->dispatched,
             c->running,
             c->ok_stamp,
             c->fail_stamp,
             c->retry_stamp,
             c->now,
             keys::kIdempotencyPrefix,
             c->lost,
             c->poison,
             c->exhausted,
             c->kernel_error,
             keys::kExpiry,
             c->expiry.list,
             c->expiry.bucket,
             c->epoch_key};
  c->args.reserve(c->args.size() + results.size() * 5);
  for (size_t i = 0; i < results.size(); ++i) {
    c->args.insert(c->args.end(),
                   {results[i].task_id(), results[i].ok() ? "1" : "0", c->payloads[i], c->stamps[i], c->kinds[i]});
  }
  return c;
}

Result<CompleteOutcome> ParseComplete(const CompleteCall& c, const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) return Internal("unexpected reply from the complete script");
  CompleteOutcome outcome;
  outcome.retried = r->element[0]->integer;
  outcome.rejected = r->element[1]->integer;
  const auto& results = *c.results;
  outcome.finished.reserve(results.size());
  for (size_t i = 2; i < r->elements;) {
    const int64_t pos = r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : 0;
    const bool ok = pos > 0;
    const size_t index = static_cast<size_t>(ok ? pos : -pos) - 1;
    const size_t width = ok ? 7 : 9;
    if (pos == 0 || index >= results.size() || i + width > r->elements) {
      return Internal("unexpected reply from the complete script");
    }
    auto s = [&](size_t k) { return ReplyString(r->element[i + k]); };
    auto view = [&](size_t k) {
      const redisReply* e = r->element[i + k];
      return e->type == REDIS_REPLY_STRING ? std::string_view(e->str, e->len) : std::string_view("");
    };
    auto n = [&](size_t k) {
      const redisReply* e = r->element[i + k];
      return e->type == REDIS_REPLY_INTEGER ? static_cast<int>(e->integer) : std::atoi(ReplyString(e).c_str());
    };
    if (ok) {
      // A success's record is built here, from the reply's bytes (no StoredTask in between):
      // thousands a second go this way. A success has the head and its result only.
      v1::TaskRecord& rec = outcome.finished.emplace_back();
      std::string stamps;
      stamps.reserve(view(3).size() + c.stamps[index].size() + c.ok_stamp.size());
      stamps.append(view(3)).append(c.stamps[index]).append(c.ok_stamp);
      FillRecordHead(
          {results[index].task_id(), view(1), view(2), c.endpoint, stamps, view(4), v1::TASK_STATE_SUCCESS, n(5), n(6)},
          &rec);
      *rec.mutable_result() = results[index].value();
      i += width;
      continue;
    }
    StoredTask t;
    t.owner = s(1);
    t.function = s(2);
    t.endpoint = c.endpoint;
    t.history = s(4);
    t.attempts = n(5);
    t.max_attempts = n(6);
    t.state = v1::TASK_STATE_FAILED;
    t.stamps = s(3);
    t.failure = n(7);
    t.error = s(8);
    outcome.finished.push_back(MakeRecord(results[index].task_id(), t));
    i += width;
  }
  return outcome;
}

}  // namespace

Result<CompleteOutcome> RedisTaskStore::CompleteTasks(const std::string& endpoint, int64_t lease_epoch,
                                                      const std::vector<v1::TaskResult>& results, int64_t now_ns) {
  if (results.empty()) return CompleteOutcome();
  auto call = PrepareComplete(endpoint, lease_epoch, results, now_ns, options_);
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(complete_, call->args));
  return ParseComplete(*call, r.get());
}

std::vector<Result<CompleteOutcome>> RedisTaskStore::CompleteTasksMany(const std::vector<CompleteBatch>& batches,
                                                                       int64_t now_ns) {
  std::vector<Result<CompleteOutcome>> out;
  out.reserve(batches.size());
  if (batches.size() <= 1) return TaskStore::CompleteTasksMany(batches, now_ns);
  std::vector<std::unique_ptr<CompleteCall>> calls;
  calls.reserve(batches.size());
  for (const auto& b : batches) {
    calls.push_back(b.results->empty() ? nullptr
                                       : PrepareComplete(*b.endpoint, b.lease_epoch, *b.results, now_ns, options_));
  }
  auto conn = pool_.Acquire();
  if (!conn.ok()) {
    for (size_t i = 0; i < batches.size(); ++i) out.push_back(conn.status());
    return out;
  }
  // One round trip for all: every EVALSHA goes out, then every reply is read, in order.
  for (const auto& c : calls) {
    if (c == nullptr) continue;
    std::vector<std::string_view> argv;
    argv.reserve(c->args.size() + 2);
    argv.push_back("EVALSHA");
    argv.push_back(complete_.sha);
    argv.insert(argv.end(), c->args.begin(), c->args.end());
    (*conn)->Append(argv);
  }
  Status broken = Status::Ok();  // once the connection fails, the remaining replies are lost
  for (const auto& c : calls) {
    if (c == nullptr) {
      out.push_back(CompleteOutcome());
      continue;
    }
    if (!broken.ok()) {
      out.push_back(broken);
      continue;
    }
    auto r = (*conn)->GetReply();
    if (!r.ok()) {
      if (r.status().message().find("NOSCRIPT") != std::string::npos) {
        // Redis lost its script cache (it restarted): this one again, with the source.
        auto again = Eval(complete_, c->args);
        out.push_back(again.ok() ? ParseComplete(*c, again->get()) : Result<CompleteOutcome>(again.status()));
        continue;
      }
      if (r.status().code() != StatusCode::kInternal) broken = r.status();  // not a script error: the link
      out.push_back(r.status());
      continue;
    }
    out.push_back(ParseComplete(*c, r->get()));
  }
  return out;
}

Result<std::vector<std::optional<v1::TaskRecord>>> RedisTaskStore::GetTasks(const std::vector<std::string>& ids,
                                                                            bool include_args) {
  std::vector<std::optional<v1::TaskRecord>> out;
  if (ids.empty()) return out;
  const std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  const std::string dispatched = StateArg(v1::TASK_STATE_DISPATCHED);
  std::vector<std::string_view> args = {"0",     keys::kTaskPrefix, keys::kInFlightPrefix,
                                        waiting, dispatched,        include_args ? "1" : "0"};
  args.insert(args.end(), ids.begin(), ids.end());
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(read_, args));
  if (r->type != REDIS_REPLY_ARRAY || r->elements != ids.size())
    return Internal("unexpected reply from the read script");
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const redisReply* e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 13 || ReplyIsNil(e->element[0])) {
      out.emplace_back();
      continue;
    }
    out.emplace_back(MakeRecord(ids[i], ParseTaskFields(e)));
  }
  return out;
}

Result<std::vector<std::optional<TaskStore::TaskBrief>>> RedisTaskStore::GetTaskBriefs(
    const std::vector<std::string>& ids) {
  LOOM_ASSIGN_OR_RETURN(auto conn, pool_.Acquire());
  std::string key;
  for (const auto& id : ids) {
    key = keys::Task(id);
    conn->Append({"HMGET", key, f::kState, f::kOwner});
  }
  std::vector<std::optional<TaskBrief>> out(ids.size());
  for (auto& brief : out) {
    LOOM_ASSIGN_OR_RETURN(auto r, conn->GetReply());
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || ReplyIsNil(r->element[0])) continue;
    const std::string state = ReplyString(r->element[0]);
    int code = 0;
    if (std::from_chars(state.data(), state.data() + state.size(), code).ec != std::errc()) {
      return Internal("task state '" + state + "' is not a number");
    }
    brief = TaskBrief{static_cast<v1::TaskState>(code), ReplyString(r->element[1])};
  }
  return out;
}

Result<std::optional<v1::TaskRecord>> RedisTaskStore::CancelTask(const std::string& id, int64_t now_ns) {
  std::string terminal = TerminalArg();
  std::string cancelled = StateArg(v1::TASK_STATE_CANCELLED);
  std::string stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_CANCELLED), now_ns);
  std::string ttl = Num(options_.result_ttl_seconds);
  const ExpiryArgs expiry(now_ns, options_.result_ttl_seconds);
  LOOM_ASSIGN_OR_RETURN(
      auto r, Eval(cancel_, {"0", keys::kTaskPrefix, keys::kQueuePrefix, keys::kInFlightPrefix, terminal, cancelled,
                             stamp, id, ttl, keys::kIdempotencyPrefix, keys::kExpiry, expiry.list, expiry.bucket}));
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 13) return std::optional<v1::TaskRecord>();
  return std::optional<v1::TaskRecord>(MakeRecord(id, ParseTaskFields(r.get())));
}

Result<int64_t> RedisTaskStore::DeleteTasks(const std::vector<std::string>& ids) {
  if (ids.empty()) return 0;
  std::string terminal = TerminalArg();
  std::vector<std::string_view> args = {"0", keys::kTaskPrefix, terminal, keys::kIdempotencyPrefix};
  for (const auto& id : ids) args.push_back(id);
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(delete_, args));
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
    return FailedPrecondition(DeleteUnfinishedMessage(ReplyString(r->element[0])));
  }
  return static_cast<int64_t>(r->integer);
}

Result<LostOutcome> RedisTaskStore::Lose(const std::string& endpoint, const std::string& mode, const std::string& epoch,
                                         const std::vector<std::string>& held, const std::string& reason,
                                         int64_t now_ns) {
  const std::string inflight = keys::InFlight(endpoint), queue = keys::Queue(endpoint),
                    epoch_key = keys::Epoch(endpoint);
  const std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  const std::string dispatched = StateArg(v1::TASK_STATE_DISPATCHED);
  const std::string running = StateArg(v1::TASK_STATE_RUNNING), failed = StateArg(v1::TASK_STATE_FAILED);
  const std::string ttl = Num(options_.result_ttl_seconds), now = Num(now_ns);
  const std::string requeued = EncodeStamp("requeued", now_ns);
  const std::string fail_stamp = EncodeStamp(TaskStateName(v1::TASK_STATE_FAILED), now_ns);
  const std::string why = SanitizeForHistory(reason), terminal = TerminalArg();
  const std::string lost = Num(v1::FAILURE_KIND_ENDPOINT_LOST), exhausted = Num(v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED);
  const ExpiryArgs expiry(now_ns, options_.result_ttl_seconds);
  std::vector<std::string_view> args = {"0",
                                        keys::kTaskPrefix,
                                        inflight,
                                        queue,
                                        endpoint,
                                        mode,
                                        epoch,
                                        waiting,
                                        running,
                                        failed,
                                        ttl,
                                        now,
                                        requeued,
                                        fail_stamp,
                                        why,
                                        terminal,
                                        lost,
                                        exhausted,
                                        keys::kIdempotencyPrefix,
                                        keys::kExpiry,
                                        expiry.list,
                                        expiry.bucket,
                                        epoch_key,
                                        dispatched};
  for (const auto& id : held) args.push_back(id);
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(lose_, args));
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) return Internal("unexpected reply from the requeue script");
  LostOutcome out;
  out.lease_epoch = r->element[0]->integer;
  out.requeued = r->element[1]->integer;
  out.finished = FinishedRecords(r.get(), 2, endpoint);
  return out;
}

Result<LostOutcome> RedisTaskStore::RegisterSession(const std::string& endpoint, const std::vector<std::string>& held,
                                                    const std::string& reason, int64_t now_ns) {
  return Lose(endpoint, "register", "", held, reason, now_ns);
}

Result<LostOutcome> RedisTaskStore::ReleaseSession(const std::string& endpoint, int64_t lease_epoch,
                                                   const std::string& reason, int64_t now_ns) {
  return Lose(endpoint, "release", Num(lease_epoch), {}, reason, now_ns);
}

Result<int64_t> RedisTaskStore::RelinquishTasks(const std::string& endpoint, int64_t lease_epoch,
                                                const std::vector<std::string>& ids, int64_t now_ns) {
  if (ids.empty()) return 0;
  const std::string inflight = keys::InFlight(endpoint), queue = keys::Queue(endpoint), epoch = Num(lease_epoch);
  const std::string epoch_key = keys::Epoch(endpoint);
  const std::string waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT);
  const std::string stamp = EncodeStamp("requeued", now_ns);
  std::vector<std::string_view> args = {"0",   keys::kTaskPrefix, inflight, queue, endpoint,
                                        epoch, epoch_key,         waiting,  stamp};
  for (const auto& id : ids) args.push_back(id);
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(relinquish_, args));
  return static_cast<int64_t>(r->integer);
}

Result<int64_t> RedisTaskStore::FailoverQueued(const std::string& from, const FailoverTarget& to, int limit,
                                               int64_t now_ns) {
  auto set = [](const std::vector<std::string>& items, bool empty_means_all) {
    if (empty_means_all && items.empty()) return std::string();
    std::string out = ",";
    for (const auto& x : items) out += x + ",";
    return out;
  };
  const std::string offered = set(to.kernels, false), users = set(to.users, true), functions = set(to.functions, true),
                    classes = set(to.device_classes, false);
  const std::string qf = keys::Queue(from), qt = keys::Queue(to.endpoint), stamp = EncodeStamp("failover", now_ns);
  const std::string lim = Num(limit), waiting = StateArg(v1::TASK_STATE_WAITING_FOR_ENDPOINT),
                    max_moved = Num(std::max<int64_t>(0, to.max_moved));
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(failover_, {"0", keys::kTaskPrefix, qf, qt, to.endpoint, offered, stamp, lim,
                                                 waiting, users, functions, classes, max_moved}));
  return static_cast<int64_t>(r->integer);
}

Result<SweepOutcome> RedisTaskStore::SweepExpired(int64_t now_ns, int max) {
  const std::string now = Num(now_ns / 1'000'000'000), most = Num(std::max(1, max));
  LOOM_ASSIGN_OR_RETURN(auto r, Eval(sweep_, {"0", keys::kExpiry, keys::kExpiryPrefix, now, keys::kTaskPrefix, most}));
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return Internal("unexpected reply from the sweep script");
  return SweepOutcome{r->element[0]->integer, r->element[1]->integer != 0};
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
