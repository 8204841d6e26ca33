#include "service/broker.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <string_view>
#include <unordered_set>

#include "common/util.h"
#include "common/wire.h"

namespace loom::service {

using Clock = std::chrono::steady_clock;

Broker::Broker(TaskStore* store, CompletionHub* hub, CreditBook* credit, BrokerOptions options,
               EndpointListener on_endpoint, ServiceMetrics* metrics)
    : store_(store),
      hub_(hub),
      credit_(credit),
      options_(std::move(options)),
      on_endpoint_(std::move(on_endpoint)),
      metrics_(metrics),
      router_(ctx_, zmq::socket_type::router) {
  if (options_.curve) {
    keys_ = std::make_unique<EndpointKeyDirectory>(store_, options_.key_directory);
    zap_ = std::make_unique<ZapHandler>(ctx_, keys_.get(), kLoomZapDomain, &stats_.zap);
  }
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  LOOM_CHECK(wake_fd_ >= 0);
}

Broker::~Broker() {
  Stop();
  if (zap_) zap_->Stop();
  ::close(wake_fd_);
}

Status Broker::Bind() {
  if (curve()) {
    // Keys known now; one created later is learnt from the API, or read on the first miss.
    if (Status s = keys_->Refresh(); !s.ok()) {
      spdlog::warn("cannot load the endpoints' CURVE keys yet ({}); they are read when endpoints connect",
                   s.ToString());
    }
    LOOM_RETURN_IF_ERROR(zap_->Start());
    LOOM_RETURN_IF_ERROR(
        curve::MakeServer(router_, *options_.curve, kLoomZapDomain, options_.enforce_zap, &zap_enforced_));
    if (options_.enforce_zap && !zap_enforced_) {
      spdlog::warn(
          "this libzmq ignores ZMQ_ZAP_ENFORCE_DOMAIN: should the ZAP handler stop, connections get in "
          "unauthenticated, and the broker refuses every message of theirs");
    }
  }
  try {
    router_.set(zmq::sockopt::router_mandatory, 1);
    router_.set(zmq::sockopt::maxmsgsize, options_.max_message_bytes + (1 << 20));
    router_.set(zmq::sockopt::sndhwm, options_.high_water_mark);
    router_.set(zmq::sockopt::rcvhwm, options_.high_water_mark);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind(options_.bind);
    bound_address_ = router_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot bind the endpoint socket on '" + options_.bind + "': " + e.what());
  }
  return Status::Ok();
}

void Broker::Start() {
  LoadInFlightEndpoints();
  thread_ = std::thread([this] { Run(); });
}

void Broker::LoadInFlightEndpoints() {
  auto eps = store_->ListEndpoints();
  if (!eps.ok()) {
    CountStoreError(eps.status());
    spdlog::warn("cannot list endpoints to reconcile their tasks: {}", eps.status().ToString());
    return;
  }
  const auto deadline = Clock::now() + options_.heartbeat_period * options_.heartbeat_misses;
  for (const auto& e : *eps) {
    auto n = store_->InFlightCount(e.id());
    if (n.ok() && *n > 0) {
      unclaimed_[e.id()] = deadline;
      spdlog::info("endpoint {} had {} task(s) in flight; waiting for it to register again", e.id(), *n);
    }
  }
}

void Broker::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  Wake();
  thread_.join();
}

void Broker::StopZapHandler() {
  if (zap_) zap_->Stop();
}

Status Broker::StartZapHandler() {
  if (!zap_) return FailedPrecondition("the broker does not authenticate endpoints (no CURVE keys)");
  return zap_->Start();
}

void Broker::EndpointChanged(const v1::EndpointRecord& e) {
  if (keys_) keys_->Update(e);
  {
    std::lock_guard lock(mu_);
    changed_.push_back(e);
  }
  Wake();
}

void Broker::ApplyEndpointChanges(std::vector<v1::EndpointRecord> changed) {
  for (auto& e : changed) {
    auto it = by_endpoint_.find(e.id());
    Session* s = it == by_endpoint_.end() ? nullptr : SessionFor(it->second);
    if (s == nullptr) continue;
    // The API owns these fields; this session's copy of the record is written back on every
    // liveness check, and must not put the old ones back.
    s->record.set_owner(e.owner());
    *s->record.mutable_allowed_users() = e.allowed_users();
    *s->record.mutable_allowed_functions() = e.allowed_functions();
    s->record.set_curve_public_key(e.curve_public_key());
    if (curve() && s->key != e.curve_public_key()) {
      // A replaced key revokes the old one, also on connections it already opened.
      const std::string rid = s->routing_id;
      RefuseAuth(rid, "endpoint '" + e.id() + "' has a new CURVE key; this connection holds the old one", true);
      DropSession(rid, "its CURVE key was replaced");
      continue;
    }
    if (Status put = store_->PutEndpoint(s->record); !put.ok()) CountStoreError(put);
  }
}

void Broker::RefuseAuth(const std::string& routing_id, const std::string& why, bool fence) {
  ++stats_.auth_refused;
  uint64_t held = 0;
  if (log_refusals_.Allow(Clock::now(), &held)) {
    spdlog::warn("refused a message from an endpoint connection: {}{}", why,
                 held > 0 ? " (" + std::to_string(held) + " more refused, not logged)" : "");
  }
  if (fence) {
    v1::Envelope fenced;
    fenced.mutable_fenced()->set_reason("the service refused this endpoint: " + why);
    Send(routing_id, fenced);
  }
}

void Broker::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
}

void Broker::TasksQueued(const std::vector<std::string>& endpoints) {
  {
    std::lock_guard lock(mu_);
    queued_.insert(endpoints.begin(), endpoints.end());
  }
  Wake();
}

void Broker::TasksDispatched(const std::string& endpoint, const std::string&, int64_t lease_epoch,
                             std::vector<v1::TaskSpec> specs, int64_t committed_ns) {
  {
    std::lock_guard lock(mu_);
    direct_.push_back({endpoint, lease_epoch, std::move(specs), committed_ns});
  }
  Wake();
}

void Broker::TasksCancelled(const std::string& endpoint, const std::vector<std::string>& task_ids) {
  {
    std::lock_guard lock(mu_);
    for (const auto& id : task_ids) cancelled_.emplace_back(endpoint, id);
  }
  Wake();
}

bool Broker::Send(const std::string& routing_id, const v1::Envelope& env) {
  try {
    if (!router_.send(zmq::buffer(routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
    return router_.send(ToMessage(env), zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH: the peer is gone (ROUTER_MANDATORY).
    spdlog::debug("send to {} failed: {}", routing_id, e.what());
    return false;
  }
}

void Broker::SendReregister(const std::string& routing_id, const std::string& reason) {
  v1::Envelope env;
  env.mutable_reregister()->set_reason(reason);
  Send(routing_id, env);
}

Broker::Session* Broker::SessionFor(const std::string& routing_id) {
  auto it = sessions_.find(routing_id);
  return it == sessions_.end() ? nullptr : &it->second;
}

void Broker::CountStoreError(const Status& s) {
  ++stats_.store_errors;
  const auto code = static_cast<size_t>(s.code());
  if (code < stats_.store_errors_by_code.size()) ++stats_.store_errors_by_code[code];
}

void Broker::Finished(std::vector<v1::TaskRecord> records) {
  if (records.empty()) return;
  if (metrics_ != nullptr) metrics_->TasksFinished(records);
  hub_->Publish(std::move(records));
}

void Broker::Run() {
  zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  auto next_liveness = Clock::now() + options_.heartbeat_period;
  auto next_ack = Clock::time_point::max();  // when the oldest held ack is due
  while (!stop_) {
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(std::min(next_liveness, next_ack) - Clock::now());
    // A held ack due within the next millisecond still waits one: poll's unit.
    if (next_ack != Clock::time_point::max()) wait = std::max(wait, std::chrono::milliseconds(1));
    try {
      zmq::poll(items, 2, std::max(wait, std::chrono::milliseconds(0)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::error("poll failed: {}", e.what());
      continue;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      (void)!::read(wake_fd_, &v, sizeof(v));
    }
    // Drain what arrived (bounded, so timers still run under load), then act on it in bulk.
    for (int n = 0; n < 10000; ++n) {
      zmq::message_t id, body;
      try {
        if (!router_.recv(id, zmq::recv_flags::dontwait)) break;
        if (!id.more()) {
          ++stats_.garbage_frames;
          continue;
        }
        (void)router_.recv(body);
        bool extra = false;
        for (bool more = body.more(); more;) {  // an envelope is exactly one frame: drop the rest
          zmq::message_t rest;
          (void)router_.recv(rest);
          more = rest.more();
          extra = true;
        }
        if (extra) {
          ++stats_.garbage_frames;
          continue;
        }
      } catch (const zmq::error_t& e) {
        spdlog::warn("receive failed: {}", e.what());
        break;
      }
      HandleMessage(id.to_string(), body);
    }
    CommitResults();
    std::set<std::string> queued;
    std::vector<std::pair<std::string, std::string>> cancelled;
    std::vector<DirectBatch> direct;
    std::vector<v1::EndpointRecord> changed;
    {
      std::lock_guard lock(mu_);
      queued.swap(queued_);
      cancelled.swap(cancelled_);
      direct.swap(direct_);
      changed.swap(changed_);
    }
    if (!changed.empty()) ApplyEndpointChanges(std::move(changed));
    for (auto& batch : direct) SendDirect(batch);
    want_dispatch_.insert(queued.begin(), queued.end());
    std::map<std::string, v1::Envelope> cancels;
    for (const auto& [ep, task] : cancelled) cancels[ep].mutable_cancel()->add_task_ids(task);
    for (const auto& [ep, env] : cancels) {
      auto it = by_endpoint_.find(ep);
      if (it != by_endpoint_.end()) Send(it->second, env);
    }
    std::set<std::string> want;
    want.swap(want_dispatch_);
    for (const auto& ep : want) Dispatch(ep);
    next_ack = FlushAcks(Clock::now());
    if (Clock::now() >= next_liveness) {
      CheckLiveness();
      next_liveness = Clock::now() + options_.heartbeat_period;
    }
  }
}

// Tasks the submit path already leased against a session's credit. If that session is no
// longer the endpoint's current one, they were never sent: they go back to the queue, so the
// current session gets them under its own lease and no result of theirs is fenced off.
void Broker::SendDirect(DirectBatch& batch) {
  auto it = by_endpoint_.find(batch.endpoint);
  Session* s = it == by_endpoint_.end() ? nullptr : SessionFor(it->second);
  if (s != nullptr && s->lease_epoch == batch.lease_epoch) {
    const std::string rid = s->routing_id;
    if (SendTasks(rid, batch.specs, batch.committed_ns)) {
      stats_.tasks_dispatched += batch.specs.size();
    } else {
      DropSession(rid, "cannot send to it");
    }
    return;
  }
  std::vector<std::string> ids;
  for (const auto& spec : batch.specs) ids.push_back(spec.task_id());
  auto back = store_->RelinquishTasks(batch.endpoint, batch.lease_epoch, ids, NowNanos());
  if (!back.ok()) {
    // They stay leased to the old epoch; the endpoint's next registration requeues them.
    CountStoreError(back.status());
    return;
  }
  stats_.tasks_requeued += static_cast<uint64_t>(*back);
  want_dispatch_.insert(batch.endpoint);
}

void Broker::HandleForTesting(const std::string& routing_id, std::string_view payload) {
  zmq::message_t msg(payload.data(), payload.size());
  HandleMessage(routing_id, msg);
  CommitResults();
  FlushAcks();
}

void Broker::HandleMessage(const std::string& routing_id, const zmq::message_t& payload) {
  v1::Envelope env;
  if (!FromMessage(payload, &env) || env.body_case() == v1::Envelope::BODY_NOT_SET) {
    ++stats_.garbage_frames;
    return;
  }
  Peer peer;
  if (curve()) {
    // libzmq attaches the ZAP reply's User-Id and metadata to every message of the connection.
    const char* user = zmq_msg_gets(payload.handle(), "User-Id");
    const char* key = zmq_msg_gets(payload.handle(), kKeyProperty);
    if (user == nullptr || key == nullptr || *user == '\0' || *key == '\0') {
      // Only possible if a handshake got through without a ZAP handler's answer: say nothing.
      RefuseAuth(routing_id, "its connection is not authenticated (no ZAP handler answered its CURVE handshake)",
                 false);
      return;
    }
    peer = {user, key};
  }
  if (env.has_register_()) {
    HandleRegister(routing_id, env.register_(), peer);
    return;
  }
  Session* s = SessionFor(routing_id);
  if (s != nullptr && curve() && (s->endpoint_id != peer.endpoint_id || s->key != peer.key)) {
    // Another connection took over this routing id after the session's own one went away.
    RefuseAuth(routing_id,
               "a connection authenticated as endpoint '" + peer.endpoint_id + "' sent on the session of endpoint '" +
                   s->endpoint_id + "'",
               true);
    return;
  }
  if (s == nullptr) {
    // Typically: this service restarted, or dropped the session for missed heartbeats, and the
    // endpoint's socket reconnected by itself. Results sent on a dead session are fenced off
    // (the endpoint sends them again once registered, under its new lease).
    if (env.has_results() && env.results().results_size() > 0) {
      stats_.results_rejected += env.results().results_size();
      spdlog::info("rejected {} result(s) sent on an unknown or expired session (fenced off)",
                   env.results().results_size());
    }
    SendReregister(routing_id, "unknown session");
    return;
  }
  s->last_seen = Clock::now();
  switch (env.body_case()) {
    case v1::Envelope::kHeartbeat: {
      v1::Envelope reply;
      reply.mutable_heartbeat()->set_session_id(s->session_id);
      reply.mutable_heartbeat()->set_unix_nanos(NowNanos());
      Send(routing_id, reply);
      break;
    }
    case v1::Envelope::kCredit:
      credit_->Add(s->endpoint_id, routing_id, env.credit().credit());
      want_dispatch_.insert(s->endpoint_id);
      break;
    case v1::Envelope::kResults: {
      auto& pending = results_[routing_id];
      pending.endpoint_id = s->endpoint_id;
      pending.lease_epoch = s->lease_epoch;
      auto& out = pending.results;
      for (auto& r : *env.mutable_results()->mutable_results()) out.push_back(std::move(r));
      for (auto& st : *env.mutable_results()->mutable_started()) started_.push_back(std::move(st));
      break;
    }
    default:
      ++stats_.garbage_frames;
      break;
  }
}

void Broker::HandleRegister(const std::string& routing_id, const v1::EndpointRegister& reg, const Peer& peer) {
  if (reg.endpoint_id().empty() || reg.session_id().empty()) {
    ++stats_.garbage_frames;
    return;
  }
  if (curve() && peer.endpoint_id != reg.endpoint_id()) {
    RefuseAuth(routing_id,
               "a connection authenticated as endpoint '" + peer.endpoint_id +
                   "' (by its CURVE key) tried to register as '" + reg.endpoint_id() + "'",
               true);
    return;
  }
  auto existing = store_->GetEndpoint(reg.endpoint_id());
  if (!existing.ok()) {
    CountStoreError(existing.status());
    spdlog::warn("endpoint {} cannot register: {}", reg.endpoint_id(), existing.status().ToString());
    return;  // it retries registering until it hears back
  }
  if (curve() && (!existing->has_value() || (**existing).curve_public_key() != peer.key)) {
    // Its key was replaced or its record deleted since the handshake.
    RefuseAuth(routing_id,
               !existing->has_value()
                   ? "endpoint '" + reg.endpoint_id() + "' has no record; create it with `loom endpoint configure`"
                   : "endpoint '" + reg.endpoint_id() + "' has a new CURVE key; this connection holds the old one",
               true);
    return;
  }
  // The new session takes the next lease epoch: the tasks it still holds move to it, the
  // others were lost with earlier sessions. Results of earlier sessions are fenced off.
  std::vector<std::string> held(reg.held_task_ids().begin(), reg.held_task_ids().end());
  auto session = store_->RegisterSession(reg.endpoint_id(), held, "endpoint session replaced", NowNanos());
  if (!session.ok()) {
    CountStoreError(session.status());
    spdlog::warn("endpoint {} cannot register: {}", reg.endpoint_id(), session.status().ToString());
    return;
  }
  PublishLost(reg.endpoint_id(), session, "registration");
  unclaimed_.erase(reg.endpoint_id());
  // One live session per endpoint id. The same endpoint process on a new connection (same
  // session id, new routing id) simply moves; another process (another session id) fences
  // the first, which stops.
  if (auto it = by_endpoint_.find(reg.endpoint_id()); it != by_endpoint_.end() && it->second != routing_id) {
    Session* old = SessionFor(it->second);
    if (old != nullptr && old->session_id != reg.session_id()) {
      spdlog::warn("endpoint {} registered from another process (session {}); fencing session {}", reg.endpoint_id(),
                   reg.session_id(), old->session_id);
      v1::Envelope fenced;
      fenced.mutable_fenced()->set_reason("another loom-endpoint registered with id '" + reg.endpoint_id() +
                                          "' (session " + reg.session_id() + ")");
      Send(it->second, fenced);
      ++stats_.sessions_fenced;
    }
    credit_->Close(reg.endpoint_id(), it->second);
    sessions_.erase(it->second);
  }
  v1::EndpointRecord rec;
  if (existing->has_value()) {
    rec = **existing;
  } else {
    rec.set_id(reg.endpoint_id());
    rec.set_owner(kLocalUser);
    rec.set_created_unix_nanos(NowNanos());
  }
  rec.set_name(reg.name().empty() ? reg.endpoint_id() : reg.name());
  rec.set_status(v1::ENDPOINT_STATUS_ONLINE);
  *rec.mutable_kernels() = reg.kernels();
  *rec.mutable_devices() = reg.devices();
  rec.set_worker_count(reg.worker_count());
  rec.set_hostname(reg.hostname());
  rec.set_group(reg.group());
  rec.set_session_id(reg.session_id());
  rec.set_last_seen_unix_nanos(NowNanos());
  if (Status put = store_->PutEndpoint(rec); !put.ok()) {
    CountStoreError(put);
    spdlog::warn("endpoint {}: cannot store its record: {}", reg.endpoint_id(), put.ToString());
  }
  Session& s = sessions_[routing_id];
  s.endpoint_id = reg.endpoint_id();
  s.key = peer.key;
  s.session_id = reg.session_id();
  s.routing_id = routing_id;
  s.lease_epoch = session->lease_epoch;
  credit_->Open(reg.endpoint_id(), routing_id, s.lease_epoch, reg.credit());
  s.last_seen = Clock::now();
  s.record = rec;
  by_endpoint_[reg.endpoint_id()] = routing_id;
  stats_.endpoints_online = static_cast<int64_t>(sessions_.size());
  on_endpoint_(rec);
  spdlog::info(
      "endpoint {} online: session {} (lease epoch {}), {} workers, {} kernels, holds {} task(s), "
      "{} requeued, {} failed",
      rec.id(), reg.session_id(), s.lease_epoch, reg.worker_count(), reg.kernels_size(), held.size(), session->requeued,
      session->finished.size());
  v1::Envelope reply;
  auto* ok = reply.mutable_registered();
  ok->set_session_id(reg.session_id());
  ok->set_heartbeat_period_ms(static_cast<int32_t>(options_.heartbeat_period.count()));
  ok->set_heartbeat_misses(options_.heartbeat_misses);
  ok->set_max_message_bytes(options_.max_message_bytes);
  ok->set_lease_epoch(s.lease_epoch);
  Send(routing_id, reply);
  want_dispatch_.insert(reg.endpoint_id());
}

void Broker::PublishLost(const std::string& endpoint_id, const Result<LostOutcome>& lost, const char* what) {
  if (!lost.ok()) return;
  stats_.tasks_requeued += static_cast<uint64_t>(lost->requeued);
  if (!lost->finished.empty()) {
    spdlog::warn("endpoint {}: {} task(s) failed for good at {} (no attempts left)", endpoint_id, lost->finished.size(),
                 what);
    Finished(lost->finished);
  }
}

void Broker::CommitResults() {
  const int64_t now = NowNanos();
  if (!started_.empty()) {
    if (Status s = store_->MarkRunning(started_); !s.ok()) CountStoreError(s);
    started_.clear();
  }
  // Every session's results in one store call (one Redis round trip for many endpoints).
  std::vector<TaskStore::CompleteBatch> batches;
  std::vector<std::pair<const std::string*, PendingResults*>> from;
  for (auto& [rid, pending] : results_) {
    if (pending.results.empty()) continue;
    batches.push_back({&pending.endpoint_id, pending.lease_epoch, &pending.results});
    from.emplace_back(&rid, &pending);
  }
  auto outcomes = store_->CompleteTasksMany(batches, now);
  const int64_t committed = NowNanos();
  // Published together: a stream waiting for tasks of many endpoints gets them in one burst
  // (one message), not one per endpoint.
  std::vector<v1::TaskRecord> finished;
  for (size_t i = 0; i < from.size(); ++i) {
    const std::string& rid = *from[i].first;
    PendingResults& pending = *from[i].second;
    auto& done = outcomes[i];
    if (!done.ok()) {
      // Not acknowledged: the endpoint keeps these results and sends them again.
      CountStoreError(done.status());
      spdlog::warn("cannot commit {} result(s) from endpoint {}: {}", pending.results.size(), pending.endpoint_id,
                   done.status().ToString());
    } else {
      stats_.results_committed += done->finished.size();
      stats_.results_retried += done->retried;
      stats_.results_rejected += done->rejected;
      if (done->rejected > 0) {
        spdlog::info("endpoint {}: rejected {} result(s) not leased to its session (lease epoch {})",
                     pending.endpoint_id, done->rejected, pending.lease_epoch);
      }
      // Traced tasks: the time their result's write returned, on the records handed out now
      // (it cannot be in the store).
      std::unordered_set<std::string_view> traced;
      for (const auto& r : pending.results) {
        if (r.trace()) traced.insert(r.task_id());
      }
      for (auto& r : done->finished) {
        if (traced.empty() || !traced.contains(r.id())) continue;
        v1::Timestamp* t = r.add_timestamps();
        t->set_stage("result_committed");
        t->set_unix_nanos(committed);
      }
      if (finished.empty()) {
        finished = std::move(done->finished);
      } else {
        std::move(done->finished.begin(), done->finished.end(), std::back_inserter(finished));
      }
      if (done->retried > 0) want_dispatch_.insert(pending.endpoint_id);
      // Done with every one of them (committed, retried or refused for good): the endpoint may
      // forget them.
      auto [held, fresh] = acks_.try_emplace(rid);
      if (fresh) held->second.since = Clock::now();
      auto* ids = held->second.ack.mutable_task_ids();
      ids->Reserve(ids->size() + static_cast<int>(pending.results.size()));
      for (const auto& r : pending.results) ids->Add(std::string(r.task_id()));
      if (ids->size() >= options_.max_held_acks) SendHeldAcks(held);  // enough to be worth a message now
    }
  }
  Finished(std::move(finished));
  results_.clear();
}

Clock::time_point Broker::FlushAcks(Clock::time_point before) {
  auto next = Clock::time_point::max();
  for (auto it = acks_.begin(); it != acks_.end();) {
    const auto due = it->second.since + options_.ack_hold;
    if (due > before) {
      next = std::min(next, due);
      ++it;
      continue;
    }
    it = SendHeldAcks(it);
  }
  return next;
}

Broker::HeldAcksMap::iterator Broker::SendHeldAcks(HeldAcksMap::iterator it) {
  v1::Envelope env;
  env.mutable_ack()->Swap(&it->second.ack);
  Send(it->first, env);
  return acks_.erase(it);
}

bool Broker::SendTasks(const std::string& routing_id, std::vector<v1::TaskSpec>& specs, int64_t committed_ns,
                       int64_t leased_ns) {
  v1::Envelope env;
  int64_t bytes = 0;
  bool ok = true;
  // The first message takes along the peer's pending acknowledgements.
  if (auto it = acks_.find(routing_id); it != acks_.end() && !specs.empty()) {
    env.mutable_tasks()->mutable_ack()->Swap(&it->second.ack);
    bytes = static_cast<int64_t>(env.tasks().ack().ByteSizeLong());
    acks_.erase(it);
  }
  for (auto& spec : specs) {
    int64_t size = static_cast<int64_t>(spec.ByteSizeLong());
    if ((env.tasks().tasks_size() > 0 || env.tasks().has_ack()) && bytes + size > options_.max_message_bytes) {
      env.mutable_tasks()->set_committed_unix_nanos(committed_ns);
      env.mutable_tasks()->set_leased_unix_nanos(leased_ns);
      env.mutable_tasks()->set_sent_unix_nanos(NowNanos());
      ok = ok && Send(routing_id, env);
      env.Clear();
      bytes = 0;
    }
    bytes += size;
    *env.mutable_tasks()->add_tasks() = std::move(spec);
  }
  if (env.tasks().tasks_size() > 0) {
    env.mutable_tasks()->set_committed_unix_nanos(committed_ns);
    env.mutable_tasks()->set_leased_unix_nanos(leased_ns);
    env.mutable_tasks()->set_sent_unix_nanos(NowNanos());
    ok = ok && Send(routing_id, env);
  }
  return ok;
}

void Broker::Dispatch(const std::string& endpoint_id) {
  auto it = by_endpoint_.find(endpoint_id);
  if (it == by_endpoint_.end()) return;
  const std::string routing_id = it->second;
  while (true) {
    const CreditGrant grant = credit_->Take(endpoint_id, options_.max_dispatch_batch);
    const std::string& session = grant.session;
    const int64_t want = grant.n;
    if (want == 0) return;
    const int64_t leased_ns = NowNanos();
    auto specs = store_->LeaseTasks(endpoint_id, grant.lease_epoch, static_cast<int>(want), leased_ns);
    const int64_t committed_ns = NowNanos();
    if (!specs.ok()) {
      credit_->Return(endpoint_id, session, want);
      CountStoreError(specs.status());
      spdlog::warn("cannot lease tasks for endpoint {}: {}", endpoint_id, specs.status().ToString());
      want_dispatch_.insert(endpoint_id);  // try again on the next round
      return;
    }
    const int64_t got = static_cast<int64_t>(specs->size());
    if (got < want) credit_->Return(endpoint_id, session, want - got);
    if (got == 0) return;
    if (!SendTasks(routing_id, *specs, committed_ns, leased_ns)) {
      DropSession(routing_id, "cannot send to it");
      return;
    }
    stats_.tasks_dispatched += got;
    if (got < want) return;
  }
}

void Broker::DropSession(const std::string& routing_id, const char* why) {
  auto it = sessions_.find(routing_id);
  if (it == sessions_.end()) return;
  Session s = std::move(it->second);
  sessions_.erase(it);
  stats_.endpoints_online = static_cast<int64_t>(sessions_.size());
  ++stats_.sessions_lost;
  credit_->Close(s.endpoint_id, routing_id);
  if (auto e = by_endpoint_.find(s.endpoint_id); e != by_endpoint_.end() && e->second == routing_id) {
    by_endpoint_.erase(e);
  }
  auto lost = store_->ReleaseSession(s.endpoint_id, s.lease_epoch, std::string("endpoint lost: ") + why, NowNanos());
  PublishLost(s.endpoint_id, lost, "session loss");
  if (lost.ok() && !s.record.group().empty()) FailOver(s.endpoint_id, s.record.group());
  s.record.set_status(v1::ENDPOINT_STATUS_OFFLINE);
  Status put = store_->PutEndpoint(s.record);
  if (!lost.ok() || !put.ok()) {
    CountStoreError(!lost.ok() ? lost.status() : put);
    // Not requeued now: the endpoint's next registration, or this check after a restart,
    // will do it.
    if (!lost.ok()) unclaimed_[s.endpoint_id] = Clock::now();
  }
  on_endpoint_(s.record);
  spdlog::warn("endpoint {} offline ({}); {} task(s) back in its queue", s.endpoint_id, why,
               lost.ok() ? lost->requeued : -1);
}

void Broker::FailOver(const std::string& lost, const std::string& group) {
  // The live members, least loaded (tasks per worker) first; each takes its share of what
  // waits, and the last whatever is left that it admits.
  struct Candidate {
    const Session* session;
    int64_t waiting;
  };
  std::vector<Candidate> members;
  for (const auto& [rid, other] : sessions_) {
    if (other.record.group() != group || other.endpoint_id == lost) continue;
    auto depth = store_->QueueDepth(other.endpoint_id);
    auto inflight = store_->InFlightCount(other.endpoint_id);
    if (!depth.ok() || !inflight.ok()) {
      CountStoreError(!depth.ok() ? depth.status() : inflight.status());
      continue;
    }
    members.push_back({&other, *depth + *inflight});
  }
  std::stable_sort(members.begin(), members.end(), [](const Candidate& a, const Candidate& b) {
    return a.waiting * std::max(1, b.session->record.worker_count()) <
           b.waiting * std::max(1, a.session->record.worker_count());
  });
  auto waiting = store_->QueueDepth(lost);
  int64_t left = waiting.ok() ? *waiting : 0;
  for (size_t i = 0; i < members.size(); ++i) {
    const Session& other = *members[i].session;
    FailoverTarget target = MakeFailoverTarget(other.record);
    const int64_t share = static_cast<int64_t>(members.size() - i);
    target.max_moved = i + 1 == members.size() ? 0 : std::max<int64_t>(1, (left + share - 1) / share);
    auto moved = store_->FailoverQueued(lost, target, options_.max_failover_scan, NowNanos());
    if (!moved.ok()) {
      CountStoreError(moved.status());
      continue;
    }
    if (*moved > 0) {
      left -= *moved;
      spdlog::warn("endpoint {} lost: {} task(s) of group {} moved to endpoint {}", lost, *moved, group,
                   other.endpoint_id);
      want_dispatch_.insert(other.endpoint_id);
    }
  }
}

void Broker::CheckLiveness() {
  const auto limit = options_.heartbeat_period * options_.heartbeat_misses;
  const auto now = Clock::now();
  std::vector<std::string> dead;
  for (auto& [rid, s] : sessions_) {
    if (now - s.last_seen > limit) {
      dead.push_back(rid);
    } else {
      s.record.set_last_seen_unix_nanos(NowNanos());
      if (Status put = store_->PutEndpoint(s.record); !put.ok()) CountStoreError(put);
    }
  }
  for (const auto& rid : dead) DropSession(rid, "missed heartbeats");
  // Endpoints that held tasks before this service started (or whose release failed) and have
  // not come back within the threshold: their tasks go back to the queue.
  for (auto it = unclaimed_.begin(); it != unclaimed_.end();) {
    if (by_endpoint_.contains(it->first) || now < it->second) {
      it = by_endpoint_.contains(it->first) ? unclaimed_.erase(it) : std::next(it);
      continue;
    }
    auto lost = store_->ReleaseSession(it->first, std::numeric_limits<int64_t>::max(),
                                       "endpoint lost: did not come back after a service restart", NowNanos());
    if (!lost.ok()) {
      CountStoreError(lost.status());
      ++it;
      continue;
    }
    PublishLost(it->first, lost, "reconciliation");
    spdlog::warn("endpoint {} did not come back; {} task(s) back in its queue", it->first, lost->requeued);
    it = unclaimed_.erase(it);
  }
}

}  // namespace loom::service
