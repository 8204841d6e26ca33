#include "endpoint/endpoint.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <thread>

#include "common/allocator.h"
#include "common/util.h"
#include "common/wire.h"

namespace loom::endpoint {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

Endpoint::Endpoint(EndpointConfig config, EndpointMetrics* metrics)
    : config_(std::move(config)),
      metrics_(metrics),
      session_id_(NewId()),
      service_(ctx_, zmq::socket_type::dealer),
      workers_sock_(ctx_, zmq::socket_type::router),
      pacer_(std::chrono::microseconds(config_.pack_tasks_under_us)),
      window_(config_.queue_bytes, config_.max_message_bytes) {
  if (config_.name.empty()) config_.name = config_.id;
  if (config_.worker_binary.empty()) config_.worker_binary = ExecutableDir() + "/loom-worker";
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  LOOM_CHECK(stop_fd_ >= 0);
}

Endpoint::~Endpoint() {
  StopMonitor();
  for (auto& [id, w] : workers_) w.process.Stop(std::chrono::milliseconds(2000));
  if (owns_run_dir_) {
    std::error_code ec;
    fs::remove_all(config_.run_dir, ec);
  }
  ::close(stop_fd_);
  if (child_fd_ >= 0) ::close(child_fd_);
}

void Endpoint::RequestStop() {
  uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof(one));
}

Status Endpoint::Start() {
  if (config_.id.empty()) return InvalidArgument("an endpoint needs an id (--id)");
  if (config_.workers < 1) return InvalidArgument("an endpoint needs at least one worker (--workers)");
  LOOM_RETURN_IF_ERROR(ValidateLaunchConfig(config_.container, config_.sandbox));
  LOOM_RETURN_IF_ERROR(LoadSecurity());
  if (config_.run_dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "loom-endpoint-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return Internal("cannot create a run directory under /tmp");
    config_.run_dir = tmpl;
    owns_run_dir_ = true;
  } else {
    std::error_code ec;
    fs::create_directories(config_.run_dir, ec);
  }
  worker_address_ = "ipc://" + config_.run_dir + "/workers.sock";
  // SIGCHLD through a signalfd, so worker deaths wake the poll loop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  child_fd_ = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (child_fd_ < 0) return Internal("signalfd failed");
  try {
    const int64_t max_msg = config_.max_message_bytes + (1 << 20);
    workers_sock_.set(zmq::sockopt::router_mandatory, 1);
    workers_sock_.set(zmq::sockopt::maxmsgsize, max_msg);
    workers_sock_.set(zmq::sockopt::linger, 0);
    workers_sock_.set(zmq::sockopt::sndhwm, 0);
    workers_sock_.set(zmq::sockopt::rcvhwm, 0);
    workers_sock_.bind(worker_address_);
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("endpoint worker socket: ") + e.what());
  }
  LOOM_RETURN_IF_ERROR(OpenSpool());
  DiscoverDevices();  // before anything is advertised: the devices and the worker count
  LOOM_RETURN_IF_ERROR(Reconnect());
  if (config_.uses_blocks()) return StartBlocks();
  for (int i = 0; i < config_.workers; ++i) LOOM_RETURN_IF_ERROR(SpawnWorker("w" + std::to_string(i)));
  spdlog::info("endpoint {} starting {} worker(s); service {}; malloc {}", config_.id, config_.workers, config_.service,
               AllocatorName());
  return Status::Ok();
}

Status Endpoint::LoadSecurity() {
  const bool have_service_key = !config_.service_public_key.empty() || !config_.service_public_key_file.empty();
  if (have_service_key != !config_.curve_secret_key_file.empty()) {
    return InvalidArgument(
        "CURVE needs both this endpoint's key pair (--curve-secret-key-file) and the service's public key "
        "(--service-public-key or --service-public-key-file); `loom endpoint configure` prints both");
  }
  if (!config_.service_public_key.empty() && !config_.service_public_key_file.empty()) {
    return InvalidArgument("give the service's public key once: --service-public-key or --service-public-key-file");
  }
  if (have_service_key) {
    if (!config_.service_public_key_file.empty()) {
      LOOM_ASSIGN_OR_RETURN(service_public_key_, curve::ReadPublicKeyFile(config_.service_public_key_file));
    } else {
      LOOM_RETURN_IF_ERROR(curve::CheckKey(config_.service_public_key, "--service-public-key"));
      service_public_key_ = config_.service_public_key;
    }
    auto keys = curve::ReadSecretKeyFile(config_.curve_secret_key_file);
    if (!keys.ok()) {
      return Status(keys.status().code(), "this endpoint's CURVE key: " + keys.status().message() +
                                              " (`loom endpoint configure " + config_.id + "` makes it)");
    }
    curve_keys_ = std::move(keys).value();
  }
  if (config_.owner.empty()) {
    if (!config_.allowed_users.empty() || !config_.allowed_functions.empty()) {
      return InvalidArgument("--allow-user and --allow-function need --owner (whose endpoint this is)");
    }
  } else {
    LOOM_RETURN_IF_ERROR(ValidateAllowList(config_.allowed_users, config_.allowed_functions));
    allow_ = AllowList{config_.id, config_.owner, config_.allowed_users, config_.allowed_functions};
  }
  return Status::Ok();
}

Status Endpoint::OpenSpool() {
  if (config_.spool_dir.empty()) {
    const char* state = std::getenv("XDG_STATE_HOME");
    const char* home = std::getenv("HOME");
    fs::path base = state != nullptr && *state != '\0' ? fs::path(state)
                    : home != nullptr                  ? fs::path(home) / ".local" / "state"
                                                       : fs::temp_directory_path();
    config_.spool_dir = (base / "loom" / ("endpoint-" + config_.id) / "spool").string();
  }
  SpoolOptions o;
  o.dir = config_.spool_dir;
  o.fsync = config_.spool_fsync;
  LOOM_ASSIGN_OR_RETURN(spool_, ResultSpool::Open(o));
  for (auto& r : spool_->Pending()) unacked_[r.task_id()] = Unacked{r.SerializeAsString(), {}};
  if (!unacked_.empty()) {
    spdlog::info("{} result(s) from before a restart wait in {} for the service", unacked_.size(), o.dir);
  }
  return Status::Ok();
}

// A fresh connection to the service: after a silence, the old one may be dead in a way TCP
// does not notice (a black-holed route). The routing id stays the session id, and the service
// lets a reconnecting peer take it over.
Status Endpoint::Reconnect() {
  // Stop monitoring the old socket before closing anything: libzmq sends monitor events with a
  // blocking send, so an event for a socket whose monitor reader is gone would block its I/O
  // thread, and with it every connection of this endpoint.
  StopMonitor();
  try {
    const int64_t max_msg = config_.max_message_bytes + (1 << 20);
    service_ = zmq::socket_t(ctx_, zmq::socket_type::dealer);
    // A routing id per connection: messages still in flight on an old connection can never be
    // mistaken for the new one's. The session id travels in the messages.
    service_.set(zmq::sockopt::routing_id, session_id_ + "-" + std::to_string(monitor_generation_ + 1));
    service_.set(zmq::sockopt::maxmsgsize, max_msg);
    service_.set(zmq::sockopt::linger, 0);
    // Bounded: credit keeps the steady state far below this; a service that stops reading
    // makes sends fail (and results wait for their resend) instead of growing memory.
    service_.set(zmq::sockopt::sndhwm, 100000);
    service_.set(zmq::sockopt::rcvhwm, 0);
    service_.set(zmq::sockopt::reconnect_ivl, 100);
    service_.set(zmq::sockopt::reconnect_ivl_max, 2000);
    if (curve_keys_) LOOM_RETURN_IF_ERROR(curve::MakeClient(service_, *curve_keys_, service_public_key_));
    const std::string events = "inproc://service-events-" + std::to_string(++monitor_generation_);
    if (zmq_socket_monitor(service_.handle(), events.c_str(),
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
      return Internal("cannot monitor the service socket: " + std::string(zmq_strerror(zmq_errno())));
    }
    monitor_ = zmq::socket_t(ctx_, zmq::socket_type::pair);
    monitor_.set(zmq::sockopt::linger, 0);
    monitor_.connect(events);
    recheck_quiet_sockets_ = true;
    service_.connect(config_.service);
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("endpoint service socket: ") + e.what());
  }
  connected_ = false;
  registered_ = false;
  last_connect_ = Clock::now();
  return Status::Ok();
}

void Endpoint::StopMonitor() {
  if (service_.handle() != nullptr) (void)zmq_socket_monitor(service_.handle(), nullptr, 0);
  if (monitor_.handle() != nullptr) monitor_.close();
}

void Endpoint::HandleMonitorEvents() {
  while (true) {
    zmq::message_t head, addr;
    try {
      if (!monitor_.recv(head, zmq::recv_flags::dontwait)) return;
      if (head.more()) (void)monitor_.recv(addr);
    } catch (const zmq::error_t&) {
      return;
    }
    if (head.size() < sizeof(uint16_t)) continue;
    uint16_t event = 0;
    std::memcpy(&event, head.data(), sizeof(event));
    uint32_t value = 0;
    if (head.size() >= sizeof(event) + sizeof(value)) {
      std::memcpy(&value, static_cast<const char*>(head.data()) + sizeof(event), sizeof(value));
    }
    if (event & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)) {
      // ZeroMQ retries by itself; say why once, until a handshake succeeds.
      if (metrics_ != nullptr) metrics_->HandshakeFailed();
      std::string why = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                            ? "the service refused this endpoint's CURVE key (ZAP status " + std::to_string(value) +
                                  "): is it registered for endpoint '" + config_.id + "'? `loom endpoint configure " +
                                  config_.id + "` registers it"
                        : curve_keys_
                            ? "the CURVE handshake failed (" + std::to_string(value) +
                                  "): check --service-public-key, and that the service runs with --endpoint-auth curve"
                            : "the handshake failed (" + std::to_string(value) +
                                  "): the service may require CURVE (--endpoint-auth curve); give this endpoint "
                                  "--curve-secret-key-file and --service-public-key";
      if (!handshake_failure_logged_) {
        spdlog::error("cannot connect to the service at {}: {}", config_.service, why);
        handshake_failure_logged_ = true;
      } else {
        spdlog::debug("handshake with the service failed again: {}", why);
      }
      continue;
    }
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      connected_ = true;
      handshake_failure_logged_ = false;
      // Whatever was in flight on a dropped connection may be lost: register again, so the
      // service requeues what we do not hold, and resend what it has not acknowledged.
      if (registered_) spdlog::info("reconnected to the service; registering again");
      registered_ = false;
      register_backoff_ = std::chrono::milliseconds(100);
      if (!kernels_.empty()) SendRegister();
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
      if (connected_) spdlog::warn("connection to the service dropped; ZeroMQ reconnects");
      if (connected_ && metrics_ != nullptr) metrics_->ConnectionDropped();
      connected_ = false;
      registered_ = false;
    }
  }
}

void Endpoint::DiscoverDevices() {
  devices_ = {HostCpu()};
  std::vector<v1::Device> gpus;
  if (!config_.nvidia_smi.empty() && config_.nvidia_smi != "none") {
    std::string warning;
    gpus = DiscoverGpus(config_.nvidia_smi, &warning);
    if (!warning.empty()) spdlog::warn("no GPUs advertised: {}", warning);
  }
  devices_.insert(devices_.end(), gpus.begin(), gpus.end());
  for (const auto& d : config_.devices) devices_.push_back(ToDevice(d));
  for (const auto& d : devices_) {
    if (d.kind() != "cpu") {
      spdlog::info("device {} '{}'{}{}", d.kind(), d.name(), d.kind() == "gpu" ? " #" + std::to_string(d.index()) : "",
                   d.emulated() ? " (emulated)" : "");
    }
  }
  if (const int pinned = PinnedWorkerCount(devices_, config_.workers_per_gpu); pinned > 0) {
    spdlog::info("{} worker(s) per GPU, pinned with CUDA_VISIBLE_DEVICES: {} worker(s) in place of {}",
                 config_.workers_per_gpu, pinned, config_.workers);
    config_.workers = pinned;
  }
  worker_env_ = WorkerEnvironments(devices_, config_.workers_per_gpu, config_.workers);
}

Status Endpoint::SpawnWorker(const std::string& slot) {
  std::string id = slot + "." + std::to_string(++worker_generation_);
  // Outside a container, a socket of its own (worker_link "socket"): the child's end is
  // inherited at the same number, ours closes with the worker. Otherwise the ROUTER socket.
  std::unique_ptr<FrameLink> link;
  int child_end = -1;
  if (config_.worker_link == "socket" && !config_.container.enabled()) {
    int ends[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) {
      return Internal(std::string("cannot make a socket for worker ") + id + ": " + std::strerror(errno));
    }
    link = std::make_unique<FrameLink>(ends[0], config_.max_message_bytes + (1 << 20));
    child_end = ends[1];
  }
  struct CloseAtExit {
    int fd;
    ~CloseAtExit() {
      if (fd >= 0) ::close(fd);
    }
  } close_child_end{child_end};
  std::vector<std::string> argv = {config_.worker_binary,
                                   link ? "--endpoint-fd" : "--endpoint",
                                   link ? std::to_string(child_end) : worker_address_,
                                   "--worker-id",
                                   id,
                                   "--max-message-bytes",
                                   std::to_string(config_.max_message_bytes + (1 << 20)),
                                   "--log-level",
                                   config_.log_level};
  for (const auto& p : config_.plugins) argv.insert(argv.end(), {"--plugin", p});
  for (const auto& d : config_.plugin_dirs) argv.insert(argv.end(), {"--plugin-dir", d});
  // Slot "w<i>" keeps its GPU across restarts of its worker.
  std::vector<std::string> slot_env;
  const size_t slot_index = static_cast<size_t>(std::atoi(slot.c_str() + 1));
  if (slot_index < worker_env_.size()) slot_env = worker_env_[slot_index];
  // The worker's running slot (common/running_slot.h) says which task a death is charged to. A
  // container does not inherit descriptors, so workers in one go without (the oldest task is charged).
  std::optional<RunningSlot> running;
  if (!config_.container.enabled()) {
    if (auto made = RunningSlot::Create(); made.ok()) {
      running = std::move(made).value();
      argv.insert(argv.end(), {"--status-fd", std::to_string(running->fd())});
    } else if (!running_slot_warned_) {
      // Still correct, less exact: a death is charged to the oldest task the worker holds.
      spdlog::warn("workers run without a running slot ({}): a worker's death is charged to its oldest task",
                   made.status().ToString());
      running_slot_warned_ = true;
    }
  }
  LOOM_ASSIGN_OR_RETURN(LaunchCommand launch,
                        WrapForLaunch(id, LaunchCommand{std::move(argv), std::move(slot_env), {}}));
  SpawnOptions options;
  options.env = launch.env;
  if (running) options.inherit_fds = {running->fd()};
  if (child_end >= 0) options.inherit_fds.push_back(child_end);
  LOOM_ASSIGN_OR_RETURN(auto proc, Subprocess::Spawn(launch.argv, options));
  if (running) running->CloseFd();  // the child has its own; the mapping stays
  Worker w;
  w.id = id;
  w.process = std::move(proc);
  w.cleanup = std::move(launch.cleanup);
  w.slot = std::move(running);
  w.link = std::move(link);
  workers_.emplace(id, std::move(w));
  return Status::Ok();
}

Result<LaunchCommand> Endpoint::WrapForLaunch(const std::string& worker_id, LaunchCommand worker) const {
  if (!config_.container.enabled() && !config_.sandbox.enabled()) return worker;
  // Unique on the host, also across restarts of this endpoint (a container left by a killed
  // endpoint must not block the new one's names); only the characters container names allow.
  const std::string name = ContainerName("loom-" + config_.id + "-" + session_id_.substr(0, 8) + "-" + worker_id);
  LaunchContext ctx;
  ctx.name = name;
  ctx.shared_dirs = {config_.run_dir};
  ctx.uid = static_cast<int>(::getuid());
  ctx.gid = static_cast<int>(::getgid());
  ctx.program_paths = WorkerProgramPaths(config_.worker_binary, config_.plugins, config_.plugin_dirs);
  return WrapWorkerCommand(worker, ctx, config_.container, config_.sandbox);
}

void Endpoint::RunCleanup(const std::vector<std::string>& cleanup) {
  if (cleanup.empty()) return;
  // Quiet: it usually finds nothing to do (`docker run --rm` removed a container that ended).
  SpawnOptions quiet;
  quiet.log_path = "/dev/null";
  auto proc = Subprocess::Spawn(cleanup, quiet);
  if (!proc.ok()) {
    spdlog::warn("worker clean-up '{}' did not start: {}", cleanup[0], proc.status().message());
    return;
  }
  cleanups_.push_back(std::move(proc).value());
}

// Credit covers what the workers hold plus a local buffer, so the pipe from the service never
// runs dry while results travel back.
int Endpoint::Capacity() const { return WorkerSlots() * config_.prefetch + config_.queue_capacity; }

int64_t Endpoint::CreditRoom() const {
  return window_.Room(Capacity() - Outstanding() - requested_, held_bytes_, requested_);
}

int Endpoint::WorkerSlots() const { return blocks_ ? static_cast<int>(workers_.size()) : config_.workers; }

void Endpoint::UpdateMetrics() {
  EndpointMetrics::State st;
  for (const auto& [id, w] : workers_) {
    if (!w.ready && w.kill_task.empty()) {
      ++st.starting;
    } else if (!w.assigned.empty()) {
      ++st.busy;
    } else if (w.ready) {
      ++st.idle;
    }
  }
  st.held = static_cast<int64_t>(held_.size());
  st.queued = static_cast<int64_t>(queue_.size());
  st.unacked = static_cast<int64_t>(unacked_.size());
  st.spool_bytes = spool_->stats().disk_bytes;
  st.registered = registered_;
  metrics_->SetState(st);
  metrics_->FlushRound();
}

// Results waiting for their acknowledgement are free up to one capacity's worth (the normal
// pipeline: they are acknowledged a round trip later); beyond that each one takes the place of
// a task, so an endpoint whose results are not acknowledged (Redis down) stops asking for work
// and holds at most two capacities of results.
int Endpoint::Outstanding() const {
  const int64_t unacked_over = std::max<int64_t>(0, static_cast<int64_t>(unacked_.size()) - Capacity());
  return static_cast<int>(static_cast<int64_t>(held_.size()) + unacked_over);
}

void Endpoint::SendToService(const v1::Envelope& env) {
  try {
    (void)service_.send(ToMessage(env), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    spdlog::warn("send to service failed: {}", e.what());
  }
}

void Endpoint::SendRegister() {
  const auto now = Clock::now();
  v1::Envelope env;
  auto* r = env.mutable_register_();
  r->set_endpoint_id(config_.id);
  r->set_name(config_.name);
  r->set_group(config_.group);
  r->set_session_id(session_id_);
  for (const auto& k : kernels_) *r->add_kernels() = k;
  for (const auto& d : devices_) *r->add_devices() = d;
  r->set_worker_count(WorkerSlots());
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  r->set_hostname(host);
  for (const auto& [id, h] : held_) r->add_held_task_ids(id);
  for (const auto& [id, u] : unacked_) r->add_held_task_ids(id);
  // A fresh session starts with no credit at the service: ask for everything we can take.
  requested_ = 0;
  requested_ = std::max<int64_t>(0, CreditRoom());
  r->set_credit(static_cast<int32_t>(requested_));
  SendToService(env);
  last_register_sent_ = now;
}

void Endpoint::SendCreditIfNeeded() {
  if (!registered_) return;
  const int64_t room = CreditRoom();
  // Top up in chunks, or at once when nothing at all is on its way.
  if (room >= std::max<int64_t>(1, window_.Limit(Capacity()) / 4) || (room > 0 && requested_ == 0)) {
    v1::Envelope env;
    env.mutable_credit()->set_credit(static_cast<int32_t>(room));
    requested_ += room;
    SendToService(env);
  }
}

void Endpoint::ObservePace(const std::string& kernel, const v1::TaskResult& r) {
  int64_t started = 0, finished = 0;
  for (const auto& t : r.timestamps()) {
    if (t.stage() == "worker_started") started = t.unix_nanos();
    if (t.stage() == "kernel_finished") finished = t.unix_nanos();
  }
  // Results made here (timeouts, refusals, lost workers) carry no worker stamps: not timed.
  if (started > 0 && finished > 0) pacer_.Observe(kernel, finished - started);
}

void Endpoint::AddResult(v1::TaskResult result) {
  if (cancelled_.erase(result.task_id()) > 0) return;  // the service no longer wants it
  auto it = held_.find(result.task_id());
  if (it != held_.end()) {
    ObservePace(it->second.spec.kernel(), result);
    auto* ts = result.mutable_timestamps();
    const int from_worker = ts->size();
    // The service's lease wrote no stamp: the store records this as the task's "dispatched".
    if (it->second.leased_ns > 0) result.set_leased_unix_nanos(it->second.leased_ns);
    if (it->second.spec.trace()) {
      result.set_trace(true);
      if (it->second.service_committed_ns > 0) {
        v1::Timestamp* c = ts->Add();
        c->set_stage("service_committed");
        c->set_unix_nanos(it->second.service_committed_ns);
      }
    }
    if (it->second.service_sent_ns > 0) {
      v1::Timestamp* sent = ts->Add();
      sent->set_stage("service_sent");
      sent->set_unix_nanos(it->second.service_sent_ns);
    }
    v1::Timestamp* t = ts->Add();
    t->set_stage("endpoint_received");
    t->set_unix_nanos(it->second.received_ns);
    // Ahead of the worker's own stamps, so that the record's stamps come in time order and the
    // service need not sort them.
    std::rotate(ts->pointer_begin(), ts->pointer_begin() + from_worker, ts->pointer_end());
    held_bytes_ -= it->second.bytes;
    held_.erase(it);
  }
  auto* t = result.add_timestamps();
  t->set_stage("endpoint_result");
  t->set_unix_nanos(NowNanos());
  std::string payload = result.SerializeAsString();
  if (static_cast<int64_t>(payload.size()) > config_.max_message_bytes) {
    const int64_t size = static_cast<int64_t>(payload.size());
    std::string id = result.task_id();
    auto stamps = result.timestamps();
    result.Clear();
    result.set_task_id(id);
    result.set_ok(false);
    result.set_failure(v1::FAILURE_KIND_REJECTED);
    result.set_error("the result takes " + std::to_string(size) + " bytes, over the limit of " +
                     std::to_string(config_.max_message_bytes) + " (max_message_bytes)");
    *result.mutable_timestamps() = stamps;
    payload = result.SerializeAsString();
  }
  if (metrics_ != nullptr) metrics_->ResultAdded(result);
  to_spool_.push_back(result.task_id());
  const auto size = static_cast<int64_t>(payload.size());
  unacked_[result.task_id()] = Unacked{std::move(payload), {}};
  QueueToSend(std::move(result), size);
}

void Endpoint::QueueToSend(v1::TaskResult result, int64_t size) {
  if (outgoing_bytes_ + size > config_.max_message_bytes) Flush();
  outgoing_bytes_ += size;
  *outgoing_.add_results() = std::move(result);
}

void Endpoint::Flush() {
  if (!to_spool_.empty()) {
    // One write for the batch, before the results leave: a result the service may have seen
    // is on disk. (A task answered twice since the last flush has its latest result written
    // twice; the spool keeps one per task.)
    std::vector<std::pair<std::string_view, std::string_view>> results;
    results.reserve(to_spool_.size());
    for (const auto& id : to_spool_) {
      auto it = unacked_.find(id);
      if (it != unacked_.end()) results.emplace_back(it->first, it->second.payload);
    }
    Status s = spool_->AppendSerialized(results);
    if (!s.ok()) spdlog::error("cannot spool {} result(s): {}", results.size(), s.ToString());
    if (s.ok() && metrics_ != nullptr) metrics_->ResultsSpooled(static_cast<int64_t>(results.size()));
    to_spool_.clear();
  }
  if (outgoing_.results_size() == 0 && outgoing_.started_size() == 0) return;
  if (registered_) {
    const auto now = Clock::now();
    for (const auto& r : outgoing_.results()) {
      auto it = unacked_.find(r.task_id());
      if (it != unacked_.end()) it->second.sent = now;
    }
    v1::Envelope env;
    env.mutable_results()->Swap(&outgoing_);
    SendToService(env);
  }
  // While unregistered nothing is sent: the results wait in unacked_ and go out again once
  // registered.
  outgoing_.Clear();
  outgoing_bytes_ = 0;
}

void Endpoint::ResendUnacked(Clock::time_point before) {
  int n = 0;
  for (const auto& [id, u] : unacked_) {
    if (u.sent < before) {
      v1::TaskResult r;
      if (!r.ParseFromString(u.payload)) {  // this process serialized it
        spdlog::error("unacknowledged result of task {} does not parse; not sent again", id);
        continue;
      }
      QueueToSend(std::move(r), static_cast<int64_t>(u.payload.size()));
      ++n;
    }
  }
  if (n > 0) spdlog::info("sending {} unacknowledged result(s) again", n);
  Flush();
}

void Endpoint::HandleAck(const v1::ResultAck& ack) {
  std::vector<std::string> ids;
  ids.reserve(ack.task_ids_size());
  for (const auto& id : ack.task_ids()) {
    if (unacked_.erase(id) > 0) ids.push_back(id);
  }
  if (ids.empty()) return;
  Status s = spool_->Ack(ids);
  if (!s.ok()) spdlog::warn("cannot record {} ack(s) in the spool: {}", ids.size(), s.ToString());
}

void Endpoint::KillWorker(Worker& w, v1::FailureKind reason) {
  if (w.kill_task.empty() && !w.assigned.empty()) {
    w.kill_reason = reason;
    w.kill_task = w.assigned.front();
  }
  w.ready = false;  // no more tasks for it
  // A block's worker is not our child: give up on it (ReapWorkers); if it speaks again it comes
  // back as a fresh worker (AdmitBlockWorker).
  if (!w.block.empty()) w.lost = true;
  w.process.Signal(SIGKILL);
}

void Endpoint::HandleCancel(const v1::CancelTasks& cancel) {
  for (const auto& id : cancel.task_ids()) {
    auto it = held_.find(id);
    if (it == held_.end()) continue;
    held_bytes_ -= it->second.bytes;
    held_.erase(it);  // not yet with a worker: AssignTasks skips it
    for (auto& [wid, w] : workers_) {
      auto pos = std::find(w.assigned.begin(), w.assigned.end(), id);
      if (pos == w.assigned.end()) continue;
      if (pos == w.assigned.begin()) {
        // Running: stop the worker; ReapWorkers starts another and requeues the rest.
        spdlog::info("task {} cancelled while running: stopping worker {}", id, wid);
        KillWorker(w, v1::FAILURE_KIND_UNSPECIFIED);
      } else {
        cancelled_.insert(id);  // waiting in the worker: its result is dropped
      }
      break;
    }
  }
}

int64_t Endpoint::EnforceDeadlines() {
  const int64_t now = NowNanos();
  int64_t next_ms = std::numeric_limits<int64_t>::max();
  for (auto& [wid, w] : workers_) {
    if (w.assigned.empty() || w.started_ns == 0 || !w.kill_task.empty()) continue;
    auto it = held_.find(w.assigned.front());
    if (it == held_.end() || it->second.spec.timeout_ms() <= 0) continue;
    const int64_t timeout_ns = it->second.spec.timeout_ms() * 1000000;
    const int64_t left = w.started_ns + timeout_ns - now;
    if (left <= 0) {
      spdlog::info("task {} ran past its deadline of {} ms: stopping worker {}", it->first,
                   it->second.spec.timeout_ms(), wid);
      KillWorker(w, v1::FAILURE_KIND_TIMEOUT);
    } else {
      next_ms = std::min(next_ms, left / 1000000 + 1);
    }
  }
  return next_ms;
}

void Endpoint::NoteHeadStarted(Worker& w) {
  if (w.assigned.empty() || w.started_ns != 0) return;
  w.started_ns = NowNanos();
  w.head_started_sent = false;
}

bool Endpoint::ReportLongRunning() {
  // A task that finishes within the delay never costs the service a "running" write; one that
  // runs longer is reported with the time it really started.
  const int64_t now = NowNanos();
  const int64_t delay = static_cast<int64_t>(kRunningReportDelay.count()) * 1000;
  bool waiting = false;
  for (auto& [id, w] : workers_) {
    if (w.assigned.empty() || w.started_ns == 0 || w.head_started_sent) continue;
    if (now - w.started_ns >= delay) {
      auto* s = outgoing_.add_started();
      s->set_task_id(w.assigned.front());
      s->set_unix_nanos(w.started_ns);
      w.head_started_sent = true;
    } else {
      waiting = true;
    }
  }
  return waiting;
}

void Endpoint::AssignTasks() {
  while (!queue_.empty()) {
    // The ready worker with the fewest tasks in hand.
    Worker* best = nullptr;
    int ready = 0;
    for (auto& [id, w] : workers_) {
      if (!w.ready) continue;
      ++ready;
      if (best == nullptr || w.assigned.size() < best->assigned.size()) best = &w;
    }
    // A worker holds up to `prefetch` tasks, or up to `pack_prefetch` of short kernels' tasks.
    const size_t prefetch = static_cast<size_t>(config_.prefetch);
    const size_t pack = std::max(prefetch, static_cast<size_t>(config_.pack_prefetch));
    if (best == nullptr || best->assigned.size() >= pack) return;
    // Spread a burst over the workers instead of filling the first one; but past its share a
    // worker takes tasks of short kernels too, up to `pack`: running them here costs less than
    // waking another worker for each (task_pacer.h).
    const size_t share = (queue_.size() + ready - 1) / ready;
    const size_t room = pack - best->assigned.size();
    const size_t queued = queue_.size();
    v1::WorkerEnvelope env;
    auto* batch = env.mutable_tasks();
    // The specs are lent to the message, not copied: swapped in, and back once it is sent.
    std::vector<v1::TaskSpec*> lent;
    int64_t bytes = 0;
    while (static_cast<size_t>(batch->tasks_size()) < room && !queue_.empty()) {
      auto it = held_.find(queue_.front());
      // Gone: cancelled while queued here. Lent to this message already: the id was queued
      // twice (cancelled, then sent again by the service); it goes once.
      if (it == held_.end() || it->second.spec.task_id().empty()) {
        queue_.pop_front();
        continue;
      }
      if (!pacer_.IsShort(it->second.spec.kernel()) &&
          (static_cast<size_t>(batch->tasks_size()) >= share || best->assigned.size() >= prefetch)) {
        break;
      }
      // One message stays within max_message_bytes (the worker accepts that plus 1 MiB of
      // envelope): a burst of large tasks goes over in several batches. A single task always
      // goes; the service already refused any task over the limit.
      const int64_t size = it->second.bytes;
      if (batch->tasks_size() > 0 && bytes + size > config_.max_message_bytes) break;
      bytes += size;
      batch->add_tasks()->Swap(&it->second.spec);
      lent.push_back(&it->second.spec);
      best->assigned.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    if (batch->tasks_size() == 0) {
      // Only cancelled ids went: look again. Else the head is a task no worker may take now (a
      // long one, and the worker holding fewest holds a prefetch of short ones).
      if (queue_.size() < queued) continue;
      return;
    }
    bool sent = true;
    if (best->link != nullptr) {
      // Serialized into the link's buffer now; written as far as the socket takes it.
      sent = best->link->Send(env.ByteSizeLong(),
                              [&](char* p) { env.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(p)); });
      if (!sent) {
        spdlog::warn("cannot hand {} task(s) to worker {}: {}; requeued", batch->tasks_size(), best->id,
                     best->link->error().message());
      }
    } else {
      try {
        recheck_workers_sock_ = true;
        workers_sock_.send(zmq::buffer(best->id), zmq::send_flags::sndmore);
        workers_sock_.send(ToMessage(env), zmq::send_flags::none);
      } catch (const zmq::error_t& e) {
        // The worker is not reachable (it exited, or its connection dropped): its tasks go back
        // to the head of the queue for the other workers, and it gets none until it says hello
        // again. ReapWorkers replaces it if it exited.
        spdlog::warn("cannot hand {} task(s) to worker {}: {}; requeued", batch->tasks_size(), best->id, e.what());
        sent = false;
      }
    }
    for (size_t i = 0; i < lent.size(); ++i) batch->mutable_tasks(static_cast<int>(i))->Swap(lent[i]);
    if (!sent) {
      if (best->link != nullptr) LinkBroke(*best);
      best->ready = false;
      const auto first = best->assigned.end() - batch->tasks_size();
      queue_.insert(queue_.begin(), std::make_move_iterator(first), std::make_move_iterator(best->assigned.end()));
      best->assigned.erase(first, best->assigned.end());
      continue;
    }
    if (metrics_ != nullptr) metrics_->HandedToWorker();
    NoteHeadStarted(*best);
  }
}

void Endpoint::HandleServiceMessage(const zmq::message_t& msg) {
  v1::Envelope env;
  if (!FromMessage(msg, &env)) {
    spdlog::warn("dropping an unreadable message from the service");
    return;
  }
  last_heard_from_service_ = Clock::now();
  switch (env.body_case()) {
    case v1::Envelope::kRegistered: {
      const auto& reg = env.registered();
      if (!registered_) {
        spdlog::info("registered with the service (session {}, lease epoch {})", session_id_, reg.lease_epoch());
        if (metrics_ != nullptr) metrics_->Registered();
      }
      registered_ = true;
      register_backoff_ = std::chrono::milliseconds(100);
      // The service's liveness settings win, so both sides judge silence alike.
      if (reg.heartbeat_period_ms() > 0) config_.heartbeat_period_ms = reg.heartbeat_period_ms();
      if (reg.heartbeat_misses() > 0) config_.heartbeat_misses = reg.heartbeat_misses();
      // Results sent before (or under an earlier session) may not have arrived: send every
      // unacknowledged one now; the service commits each at most once.
      outgoing_.clear_results();
      outgoing_bytes_ = 0;
      ResendUnacked(Clock::now() + std::chrono::hours(1));
      if (!config_.ready_file.empty() && !ready_file_written_) {
        std::string tmp = config_.ready_file + ".tmp";
        {
          std::ofstream out(tmp);
          out << "endpoint=" << config_.id << "\npid=" << ::getpid() << "\n" << ready_info_;
        }
        std::rename(tmp.c_str(), config_.ready_file.c_str());
        ready_file_written_ = true;
      }
      break;
    }
    case v1::Envelope::kAck:
      HandleAck(env.ack());
      break;
    case v1::Envelope::kFenced:
      spdlog::error("fenced off by the service: {}; stopping", env.fenced().reason());
      fenced_ = true;
      RequestStop();
      break;
    case v1::Envelope::kReregister:
      // Several may arrive at once (one per stale message): the loop registers once, with backoff.
      if (registered_) spdlog::info("service asks to register again: {}", env.reregister().reason());
      registered_ = false;
      break;
    case v1::Envelope::kHeartbeat:
      break;
    case v1::Envelope::kTasks:
      if (env.tasks().has_ack()) {
        auto* ids = env.mutable_tasks()->mutable_ack()->mutable_task_ids();
        for (auto& id : *ids) riding_acks_.add_task_ids(std::move(id));
      }
      AcceptTasks(*env.mutable_tasks());
      break;
    case v1::Envelope::kCancel:
      HandleCancel(env.cancel());
      break;
    default:
      spdlog::warn("unexpected message from the service (case {})", static_cast<int>(env.body_case()));
  }
}

void Endpoint::AcceptTasks(v1::TaskBatch& batch) {
  const int64_t now = NowNanos();
  const int64_t sent = batch.sent_unix_nanos();
  const int64_t committed = batch.committed_unix_nanos();
  const int64_t leased = batch.leased_unix_nanos();
  auto* tasks = batch.mutable_tasks();
  requested_ = std::max<int64_t>(0, requested_ - tasks->size());
  if (metrics_ != nullptr) metrics_->TasksReceived(tasks->size());
  int64_t largest = 0;
  for (auto& spec : *tasks) {
    std::string id = spec.task_id();
    if (held_.contains(id)) continue;  // a duplicate after a requeue race: we already have it
    if (allow_) {
      if (auto no = CheckAllowList(*allow_, spec.owner(), spec.function(), spec.function_owner())) {
        // Refused here whatever the service decided: it never reaches a worker.
        if (metrics_ != nullptr) metrics_->TaskRefused(no->kind == AllowRefusal::Kind::kUser);
        uint64_t held = 0;
        if (log_refusals_.Allow(Clock::now(), &held)) {
          spdlog::warn("refused task {}: {}{}", id, no->message,
                       held > 0 ? " (" + std::to_string(held) + " more refused, not logged)" : "");
        }
        v1::TaskResult r;
        r.set_task_id(id);
        r.set_ok(false);
        r.set_failure(v1::FAILURE_KIND_REJECTED);
        r.set_error(no->message);
        AddResult(std::move(r));
        continue;
      }
    }
    const auto bytes = static_cast<int64_t>(spec.ByteSizeLong());
    largest = std::max(largest, bytes);
    held_bytes_ += bytes;
    held_.emplace(id, Held{std::move(spec), now, sent, bytes, committed, leased});
    queue_.push_back(std::move(id));
  }
  if (largest > 0) window_.Received(largest);  // duplicates and refused tasks tell nothing
}

void Endpoint::ReadWorkerLink(Worker& w) {
  if (w.link == nullptr) return;
  if (!w.link->Read([&](std::string_view frame) { HandleWorkerMessage(w.id, frame); })) LinkBroke(w);
}

void Endpoint::LinkBroke(Worker& w) {
  if (w.link == nullptr || !w.link->broken()) return;
  // Its process is ending (it closed its end as it exited), or is of no use without the link:
  // it is stopped, and ReapWorkers charges its tasks and starts a replacement as for any other
  // exit, and says so.
  if (w.link->error().code() == StatusCode::kUnavailable && w.link->error().message() == FrameLink::kClosedByPeer) {
    spdlog::debug("worker {}: {}", w.id, w.link->error().message());
  } else {
    spdlog::warn("worker {}: {}; stopping it", w.id, w.link->error().message());
  }
  w.link.reset();
  w.ready = false;
  w.process.Signal(SIGKILL);
}

void Endpoint::HandleWorkerMessage(const std::string& worker_id, std::string_view msg) {
  auto wit = workers_.find(worker_id);
  Worker* known = wit != workers_.end() && !wit->second.lost ? &wit->second : nullptr;
  if (known == nullptr && blocks_) known = AdmitBlockWorker(worker_id);
  if (known == nullptr) return;
  Worker& w = *known;
  v1::WorkerEnvelope env;
  if (!env.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) {
    spdlog::warn("dropping an unreadable message from worker {}", worker_id);
    return;
  }
  if (env.has_hello()) {
    w.ready = true;
    w.greeted = true;
    if (kernels_.empty()) kernels_.assign(env.hello().kernels().begin(), env.hello().kernels().end());
    for (const auto& e : env.hello().load_errors()) spdlog::error("worker {}: {}", worker_id, e);
    spdlog::debug("worker {} ready (pid {})", worker_id, env.hello().pid());
    if (!registered_ && connected_ && last_register_sent_ == Clock::time_point{}) SendRegister();
    return;
  }
  if (env.has_results()) {
    for (auto& r : *env.mutable_results()->mutable_results()) {
      // Results arrive in the order the worker ran its tasks.
      if (!w.assigned.empty() && w.assigned.front() == r.task_id()) {
        w.assigned.pop_front();
        w.started_ns = 0;
      } else if (!w.block.empty()) {
        continue;  // a task this endpoint gave up on with the worker: already answered or re-run
      }
      AddResult(std::move(r));
    }
    NoteHeadStarted(w);
  }
}

void Endpoint::HandleWorkerLoss(Worker& w, const std::string& how) {
  if (metrics_ != nullptr) {
    metrics_->WorkerRestarted(w.kill_task.empty()                         ? WorkerExit::kCrash
                              : w.kill_reason == v1::FAILURE_KIND_TIMEOUT ? WorkerExit::kTimeout
                                                                          : WorkerExit::kCancel);
  }
  if (!w.assigned.empty()) {
    // The task whose kernel was running, from the worker's slot. Not simply the head: the
    // worker may have finished that one and died in the next before its result got out.
    std::optional<RunningSlot::Reading> reading;
    if (w.slot) reading = w.slot->Read();
    std::optional<size_t> running = RunningTaskIndex(w.assigned, reading);
    if (!running && w.kill_task.empty() && uncharged_deaths_.Record(w.assigned.front())) {
      // Its workers keep dying with it first in line and no kernel running: it is charged.
      spdlog::warn("worker {} died between tasks, again with task {} first in line: it is charged", w.id,
                   w.assigned.front());
      running = 0;
    } else if (!running) {
      spdlog::info("worker {} died between tasks: none is charged, all {} run again", w.id, w.assigned.size());
    } else if (*running > 0) {
      spdlog::info("worker {} died in task {}; the {} before it finished, their results lost: they run again", w.id,
                   w.assigned[*running], *running);
    }
    if (!w.kill_task.empty() && (!running || w.assigned[*running] != w.kill_task)) {
      // The task we killed it for finished first: the one running, if any, is blameless.
      running.reset();
    } else if (!w.kill_task.empty() && w.kill_reason == v1::FAILURE_KIND_UNSPECIFIED) {
      // Cancelled: the service already recorded that; nothing to report.
    } else if (!w.kill_task.empty()) {
      auto h = held_.find(w.kill_task);
      const int64_t timeout_ms = h == held_.end() ? 0 : h->second.spec.timeout_ms();
      v1::TaskResult r;
      r.set_task_id(w.kill_task);
      r.set_ok(false);
      r.set_failure(v1::FAILURE_KIND_TIMEOUT);
      r.set_error("ran past its deadline of " + std::to_string(timeout_ms) +
                  " ms (timeout_ms); the worker was stopped");
      AddResult(std::move(r));
    } else if (running) {
      // The task it was running died with it (the service retries it or calls it poison).
      v1::TaskResult r;
      r.set_task_id(w.assigned[*running]);
      r.set_ok(false);
      r.set_failure(v1::FAILURE_KIND_WORKER_LOST);
      r.set_error("the worker process died while running this task (" + how + ")");
      AddResult(std::move(r));
    }
    // All the others go back to this endpoint's queue, in order: those waiting behind the
    // running one, and those that finished before it but whose results were lost with it.
    for (size_t k = w.assigned.size(); k > 0; --k) {
      if (running && k - 1 == *running) continue;
      const std::string& t = w.assigned[k - 1];
      if (cancelled_.erase(t) == 0) queue_.push_front(t);
    }
  }
}

void Endpoint::ReapWorkers() {
  signalfd_siginfo info;
  while (::read(child_fd_, &info, sizeof(info)) == sizeof(info)) {
  }
  std::vector<std::string> dead;
  for (auto& [id, w] : workers_) {
    if (w.block.empty() ? !w.process.Running() : w.lost) {
      // What it wrote before it exited counts before its exit does (Run: a result, then the
      // death its next task caused).
      ReadWorkerLink(w);
      dead.push_back(id);
    }
  }
  // Clean-up commands of containers that ended are reaped here too (they share SIGCHLD).
  std::erase_if(cleanups_, [](Subprocess& p) { return !p.Running(); });
  for (const auto& id : dead) {
    Worker w = std::move(workers_.at(id));
    workers_.erase(id);
    RunCleanup(w.cleanup);
    if (!w.block.empty()) {
      HandleWorkerLoss(w, "given up on by the endpoint");
      continue;  // its manager (or the block's replacement) starts another
    }
    std::string how = w.process.exit_status() ? DescribeWaitStatus(*w.process.exit_status()) : "unknown status";
    HandleWorkerLoss(w, how);
    const std::string slot = id.substr(0, id.find('.'));
    Restart& r = restarts_[slot];
    if (w.greeted) {
      spdlog::warn("worker {} exited ({}); {} task(s) in hand; starting a replacement", id, how, w.assigned.size());
      r.backoff = std::chrono::milliseconds(0);
      r.at = Clock::now();
    } else {
      r.backoff = NextStartBackoff(r.backoff);
      r.at = Clock::now() + r.backoff;
      spdlog::warn("worker {} exited ({}) before it connected; starting slot {} again in {} ms", id, how, slot,
                   r.backoff.count());
    }
  }
  RestartDueWorkers();
}

void Endpoint::RestartDueWorkers() {
  const auto now = Clock::now();
  for (auto& [slot, r] : restarts_) {
    if (r.at == Clock::time_point{} || now < r.at) continue;
    r.at = {};
    Status s = SpawnWorker(slot);
    if (!s.ok()) {
      r.backoff = NextStartBackoff(r.backoff);
      r.at = now + r.backoff;
      spdlog::error("cannot start a worker for slot {} ({}); trying again in {} ms", slot, s.ToString(),
                    r.backoff.count());
    }
  }
}

void Endpoint::Run() {
  // One poll(2) a round, on the ZeroMQ sockets' notification fds (ZMQ_FD) and the plain fds,
  // rather than zmq_poll, which asks every ZeroMQ socket for its state before and after polling
  // (in libzmq a getpid and a poll(2) each, when nothing waits: most of this loop's system calls
  // with 100 endpoints on one host). A socket's fd becomes readable when its state changes, and
  // a send on it may take that signal, so before blocking the loop asks the two sockets it sends
  // on whether input waits (ZMQ_EVENTS), and reads a socket only when that said so or its fd is
  // readable; the workers' ROUTER socket only after a round that used it (workers on links of
  // their own leave it quiet). The monitor and ZAP sockets get no sends between rounds
  // (ServeWorkerZap answers before the read that ends it): once asked after they are made, they
  // are read only when their fd is readable. The workers this endpoint started itself each have
  // a socket of their own (FrameLink), polled with the rest.
  auto fd_of = [](zmq::socket_t& s) -> int { return s.handle() == nullptr ? -1 : s.get(zmq::sockopt::fd); };
  auto has_input = [](zmq::socket_t& s) { return (s.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0; };
  last_heard_from_service_ = Clock::now();
  auto last_reap = Clock::now();
  auto last_resend_check = Clock::now();
  auto last_spool_flush = Clock::now();
  bool head_waiting = false;
  int64_t next_deadline_ms = std::numeric_limits<int64_t>::max();
  std::mt19937 rng(std::random_device{}());
  std::vector<pollfd> fds;
  std::vector<Worker*> linked;  // the workers of fds[6...], in order
  while (true) {
    const auto period = std::chrono::milliseconds(config_.heartbeat_period_ms);
    const auto threshold = period * config_.heartbeat_misses;
    int64_t wait_ms = std::max(10, config_.heartbeat_period_ms / 4);
    if (head_waiting) wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(kRunningReportDelay).count();
    wait_ms = std::min(wait_ms, next_deadline_ms);
    bool service_ready = false, workers_ready = false, monitor_ready = false, zap_ready = false;
    // Six fixed descriptors, then one socket per worker with a link of its own.
    constexpr size_t kFixed = 6;
    fds.resize(kFixed);
    linked.clear();
    for (auto& [id, w] : workers_) {
      if (w.link == nullptr) continue;
      fds.push_back({w.link->fd(), static_cast<short>(POLLIN | (w.link->wants_write() ? POLLOUT : 0)), 0});
      linked.push_back(&w);
    }
    try {
      service_ready = has_input(service_);  // Reconnect() replaces service_ and monitor_
      workers_ready = recheck_workers_sock_ && has_input(workers_sock_);
      recheck_workers_sock_ = false;
      if (recheck_quiet_sockets_) {
        monitor_ready = monitor_.handle() != nullptr && has_input(monitor_);
        zap_ready = worker_zap_.handle() != nullptr && has_input(worker_zap_);
        recheck_quiet_sockets_ = false;
      }
      fds[0] = {fd_of(service_), POLLIN, 0};
      fds[1] = {fd_of(workers_sock_), POLLIN, 0};
      fds[4] = {fd_of(monitor_), POLLIN, 0};
      fds[5] = {fd_of(worker_zap_), POLLIN, 0};  // blocks: ZAP requests for the TCP worker socket
    } catch (const zmq::error_t& e) {
      spdlog::error("cannot read a socket's state: {}", e.what());
      continue;
    }
    fds[2] = {stop_fd_, POLLIN, 0};
    fds[3] = {child_fd_, POLLIN, 0};
    const bool ready = service_ready || workers_ready || monitor_ready || zap_ready;
    const int timeout = ready ? 0 : static_cast<int>(std::max<int64_t>(wait_ms, 0));
    if (::poll(fds.data(), fds.size(), timeout) < 0) {
      if (errno != EINTR) spdlog::error("poll failed: {}", std::strerror(errno));
      continue;
    }
    if (fds[2].revents & POLLIN) break;
    if (monitor_ready || (fds[4].revents & POLLIN)) HandleMonitorEvents();
    if (zap_ready || (fds[5].revents & POLLIN)) ServeWorkerZap();
    try {
      for (int n = 0; n < 10000 && !fenced_ && (service_ready || fds[0].revents != 0); ++n) {
        zmq::message_t msg;
        if (!service_.recv(msg, zmq::recv_flags::dontwait)) break;
        HandleServiceMessage(msg);
      }
      // Workers' messages before their deaths: a worker that finished a task and then died
      // (killed by its next one) must have that result counted, so that the death is charged to
      // the task it was running, not to the one whose result was still in the socket.
      for (int n = 0; n < 10000 && (workers_ready || fds[1].revents != 0); ++n) {
        zmq::message_t id, body;
        if (!workers_sock_.recv(id, zmq::recv_flags::dontwait)) break;
        recheck_workers_sock_ = true;
        if (!id.more()) continue;
        (void)workers_sock_.recv(body);
        HandleWorkerMessage(id.to_string(), std::string_view(body.data<char>(), body.size()));
      }
    } catch (const zmq::error_t& e) {
      spdlog::warn("receive failed: {}", e.what());
    }
    for (size_t i = 0; i < linked.size(); ++i) {
      Worker& w = *linked[i];
      const short ev = fds[kFixed + i].revents;
      if (ev & (POLLIN | POLLHUP | POLLERR)) ReadWorkerLink(w);
      if (w.link != nullptr && (ev & POLLOUT) && !w.link->Flush()) LinkBroke(w);
    }
    // SIGCHLD wakes us; the periodic check covers a signal that went to another thread.
    if ((fds[3].revents & POLLIN) || Clock::now() - last_reap >= std::chrono::milliseconds(250)) {
      ReapWorkers();
      last_reap = Clock::now();
    }
    if (fenced_) break;
    if (blocks_) TickBlocks();
    AssignTasks();
    head_waiting = ReportLongRunning();
    next_deadline_ms = EnforceDeadlines();
    Flush();
    if (riding_acks_.task_ids_size() > 0) {
      HandleAck(riding_acks_);
      riding_acks_.Clear();
    }
    SendCreditIfNeeded();
    const auto now = Clock::now();
    if (!registered_ && kernels_.empty() &&
        now - last_connect_ >= std::max<std::chrono::milliseconds>(threshold, register_backoff_)) {
      // Registration waits for the first worker's hello (it names the kernels): the service is
      // not the one to blame, and a fresh connection would not help.
      spdlog::warn(
          "no worker has said hello yet ({}); registering with the service once one does",
          blocks_ ? "a block's workers start once its job runs: see the block's log" : "see their exits above");
      last_connect_ = now;  // this warning, once a threshold
    } else if (!registered_ &&
               now - last_connect_ >= std::max<std::chrono::milliseconds>(threshold, register_backoff_)) {
      // No handshake, or registrations unanswered, for a whole threshold: the connection may
      // be dead in a way TCP does not notice (a black-holed route). Start a fresh one.
      spdlog::warn("no answer from the service at {}; opening a new connection", config_.service);
      if (metrics_ != nullptr) metrics_->Reconnected();
      Status s = Reconnect();
      if (!s.ok()) spdlog::warn("{}", s.ToString());
    }
    // Registration goes out when the handshake succeeds (HandleMonitorEvents) and then with
    // backoff until answered; a message sent before the connection is up waits in the socket.
    if (!kernels_.empty() && !registered_ && now - last_register_sent_ >= register_backoff_) {
      SendRegister();
      // Back off while the service does not answer: 100 ms doubling to 5 s, with jitter.
      auto next = std::min<std::chrono::milliseconds>(register_backoff_ * 2, std::chrono::milliseconds(5000));
      std::uniform_int_distribution<int64_t> jitter(-next.count() / 5, next.count() / 5);
      register_backoff_ = next + std::chrono::milliseconds(jitter(rng));
    }
    if (registered_ && now - last_heartbeat_sent_ >= period) {
      // The last heartbeat got no answer, nor anything else from the service, in a whole period.
      if (metrics_ != nullptr && last_heartbeat_sent_ != Clock::time_point{} &&
          last_heard_from_service_ < last_heartbeat_sent_) {
        metrics_->HeartbeatMissed();
      }
      v1::Envelope hb;
      hb.mutable_heartbeat()->set_session_id(session_id_);
      hb.mutable_heartbeat()->set_unix_nanos(NowNanos());
      SendToService(hb);
      last_heartbeat_sent_ = now;
    }
    if (now - last_spool_flush >= period) {
      if (Status st = spool_->FlushAcks(); !st.ok()) spdlog::warn("cannot record acks in the spool: {}", st.ToString());
      last_spool_flush = now;
    }
    if (registered_ && now - last_resend_check >= period) {
      // Results whose ack did not come within the threshold are sent again.
      ResendUnacked(now - threshold);
      last_resend_check = now;
    }
    if (registered_ && now - last_heard_from_service_ > threshold) {
      spdlog::warn("no word from the service for {} ms; reconnecting and registering again",
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard_from_service_).count());
      last_heard_from_service_ = now;
      register_backoff_ = std::chrono::milliseconds(100);
      if (metrics_ != nullptr) metrics_->Reconnected();
      Status s = Reconnect();  // registers again once the new connection's handshake succeeds
      if (!s.ok()) spdlog::warn("{}", s.ToString());
    }
    if (metrics_ != nullptr) UpdateMetrics();
  }
  spdlog::info("endpoint {} stopping", config_.id);
  for (auto& [id, w] : workers_) w.process.Signal(SIGTERM);
  for (auto& [id, w] : workers_) w.process.Stop(std::chrono::milliseconds(2000));
  for (auto& [id, w] : workers_) RunCleanup(w.cleanup);
  for (auto& p : cleanups_) {
    if (!p.Wait(std::chrono::milliseconds(5000))) spdlog::warn("a worker clean-up command did not end in 5 s");
  }
  if (blocks_) StopBlocks();
}

}  // namespace loom::endpoint
