#include "endpoint/endpoint.h"

#include <limits.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/util.h"
#include "common/wire.h"

namespace loom::endpoint {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

Endpoint::Endpoint(EndpointConfig config)
    : config_(std::move(config)), session_id_(NewId()), service_(ctx_, zmq::socket_type::dealer),
      workers_sock_(ctx_, zmq::socket_type::router) {
  if (config_.name.empty()) config_.name = config_.id;
  if (config_.worker_binary.empty()) config_.worker_binary = ExecutableDir() + "/loom-worker";
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  LOOM_CHECK(stop_fd_ >= 0);
}

Endpoint::~Endpoint() {
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
    service_.set(zmq::sockopt::routing_id, session_id_);
    service_.set(zmq::sockopt::maxmsgsize, max_msg);
    service_.set(zmq::sockopt::linger, 0);
    service_.set(zmq::sockopt::sndhwm, 0);
    service_.set(zmq::sockopt::rcvhwm, 0);
    service_.set(zmq::sockopt::reconnect_ivl, 100);
    service_.set(zmq::sockopt::reconnect_ivl_max, 2000);
    service_.connect(config_.service);
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("endpoint sockets: ") + e.what());
  }
  for (int i = 0; i < config_.workers; ++i) LOOM_RETURN_IF_ERROR(SpawnWorker("w" + std::to_string(i)));
  spdlog::info("endpoint {} starting {} worker(s); service {}", config_.id, config_.workers, config_.service);
  return Status::Ok();
}

Status Endpoint::SpawnWorker(const std::string& slot) {
  std::string id = slot + "." + std::to_string(++worker_generation_);
  std::vector<std::string> argv = {config_.worker_binary,      "--endpoint", worker_address_, "--worker-id", id,
                                   "--max-message-bytes",      std::to_string(config_.max_message_bytes + (1 << 20)),
                                   "--log-level",              config_.log_level};
  for (const auto& p : config_.plugins) argv.insert(argv.end(), {"--plugin", p});
  for (const auto& d : config_.plugin_dirs) argv.insert(argv.end(), {"--plugin-dir", d});
  LOOM_ASSIGN_OR_RETURN(auto proc, Subprocess::Spawn(argv));
  Worker w;
  w.id = id;
  w.process = std::move(proc);
  workers_.emplace(id, std::move(w));
  return Status::Ok();
}

// Credit covers what the workers hold plus a local buffer, so the pipe from the service never
// runs dry while results travel back.
int Endpoint::Capacity() const { return config_.workers * config_.prefetch + config_.queue_capacity; }
int Endpoint::Outstanding() const { return static_cast<int>(held_.size()); }

void Endpoint::SendToService(const v1::Envelope& env) {
  try {
    (void)service_.send(ToMessage(env), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    spdlog::warn("send to service failed: {}", e.what());
  }
}

void Endpoint::SendRegister() {
  v1::Envelope env;
  auto* r = env.mutable_register_();
  r->set_endpoint_id(config_.id);
  r->set_name(config_.name);
  r->set_session_id(session_id_);
  for (const auto& k : kernels_) *r->add_kernels() = k;
  auto* cpu = r->add_devices();
  cpu->set_kind("cpu");
  cpu->set_name("host");
  cpu->set_count(static_cast<int32_t>(std::thread::hardware_concurrency()));
  cpu->set_memory_bytes(static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGE_SIZE));
  r->set_worker_count(config_.workers);
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  r->set_hostname(host);
  for (const auto& [id, h] : held_) r->add_held_task_ids(id);
  for (const auto& res : outgoing_.results()) r->add_held_task_ids(res.task_id());
  // A fresh session starts with no credit at the service: ask for everything we can take.
  requested_ = std::max(0, Capacity() - Outstanding());
  r->set_credit(static_cast<int32_t>(requested_));
  SendToService(env);
  last_register_sent_ = Clock::now();
}

void Endpoint::SendCreditIfNeeded() {
  if (!registered_) return;
  const int64_t room = Capacity() - Outstanding() - requested_;
  // Top up in chunks, or at once when nothing at all is on its way.
  if (room >= std::max(1, Capacity() / 4) || (room > 0 && requested_ == 0)) {
    v1::Envelope env;
    env.mutable_credit()->set_credit(static_cast<int32_t>(room));
    requested_ += room;
    SendToService(env);
  }
}

void Endpoint::AddResult(v1::TaskResult result) {
  auto it = held_.find(result.task_id());
  if (it != held_.end()) {
    auto* ts = result.mutable_timestamps();
    v1::Timestamp t;
    t.set_stage("endpoint_received");
    t.set_unix_nanos(it->second.received_ns);
    ts->Add(std::move(t));
    held_.erase(it);
  }
  auto* t = result.add_timestamps();
  t->set_stage("endpoint_result");
  t->set_unix_nanos(NowNanos());
  int64_t size = static_cast<int64_t>(result.ByteSizeLong());
  if (size > config_.max_message_bytes) {
    std::string id = result.task_id();
    auto stamps = result.timestamps();
    result.Clear();
    result.set_task_id(id);
    result.set_ok(false);
    result.set_error("the result takes " + std::to_string(size) + " bytes, over the limit of " +
                     std::to_string(config_.max_message_bytes) + " (max_message_bytes)");
    *result.mutable_timestamps() = stamps;
    size = static_cast<int64_t>(result.ByteSizeLong());
  }
  if (outgoing_bytes_ + size > config_.max_message_bytes) Flush();
  outgoing_bytes_ += size;
  *outgoing_.add_results() = std::move(result);
}

void Endpoint::Flush() {
  if (outgoing_.results_size() == 0 && outgoing_.started_size() == 0) return;
  if (registered_) {
    v1::Envelope env;
    env.mutable_results()->Swap(&outgoing_);
    SendToService(env);
    outgoing_.Clear();
    outgoing_bytes_ = 0;
  }
  // While unregistered, results wait here and are reported as held when registering.
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
    if (best == nullptr || static_cast<int>(best->assigned.size()) >= config_.prefetch) return;
    // Spread a burst over the workers instead of filling the first one.
    size_t share = (queue_.size() + ready - 1) / ready;
    size_t n = std::min(share, static_cast<size_t>(config_.prefetch) - best->assigned.size());
    v1::WorkerEnvelope env;
    auto* batch = env.mutable_tasks();
    for (size_t i = 0; i < n && !queue_.empty(); ++i) {
      std::string id = std::move(queue_.front());
      queue_.pop_front();
      auto it = held_.find(id);
      if (it == held_.end()) continue;  // cancelled while queued here
      *batch->add_tasks() = it->second.spec;
      best->assigned.push_back(std::move(id));
    }
    if (batch->tasks_size() == 0) continue;
    try {
      workers_sock_.send(zmq::buffer(best->id), zmq::send_flags::sndmore);
      workers_sock_.send(ToMessage(env), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      // The worker vanished; ReapWorkers will put its tasks back.
      spdlog::warn("cannot hand tasks to worker {}: {}", best->id, e.what());
      best->ready = false;
    }
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
    case v1::Envelope::kRegistered:
      if (!registered_) spdlog::info("registered with the service (session {})", session_id_);
      registered_ = true;
      if (!config_.ready_file.empty() && !ready_file_written_) {
        std::string tmp = config_.ready_file + ".tmp";
        {
          std::ofstream out(tmp);
          out << "endpoint=" << config_.id << "\npid=" << ::getpid() << "\n";
        }
        std::rename(tmp.c_str(), config_.ready_file.c_str());
        ready_file_written_ = true;
      }
      break;
    case v1::Envelope::kReregister:
      spdlog::info("service asks to register again: {}", env.reregister().reason());
      registered_ = false;
      SendRegister();
      break;
    case v1::Envelope::kHeartbeat:
      break;
    case v1::Envelope::kTasks: {
      const int64_t now = NowNanos();
      auto* tasks = env.mutable_tasks()->mutable_tasks();
      requested_ = std::max<int64_t>(0, requested_ - tasks->size());
      for (auto& spec : *tasks) {
        std::string id = spec.task_id();
        if (held_.contains(id)) continue;  // a duplicate after a requeue race: we already have it
        held_.emplace(id, Held{std::move(spec), now});
        queue_.push_back(std::move(id));
      }
      break;
    }
    case v1::Envelope::kCancel:
      for (const auto& id : env.cancel().task_ids()) {
        // Not yet with a worker: drop it. With a worker: its result will be ignored by the service.
        auto it = held_.find(id);
        if (it == held_.end()) continue;
        bool with_worker = false;
        for (const auto& [wid, w] : workers_) {
          for (const auto& a : w.assigned) with_worker = with_worker || a == id;
        }
        if (!with_worker) held_.erase(it);
      }
      break;
    default:
      spdlog::warn("unexpected message from the service (case {})", static_cast<int>(env.body_case()));
  }
}

void Endpoint::HandleWorkerMessage(const std::string& worker_id, const zmq::message_t& msg) {
  auto wit = workers_.find(worker_id);
  if (wit == workers_.end()) return;
  Worker& w = wit->second;
  v1::WorkerEnvelope env;
  if (!FromMessage(msg, &env)) {
    spdlog::warn("dropping an unreadable message from worker {}", worker_id);
    return;
  }
  if (env.has_hello()) {
    w.ready = true;
    if (kernels_.empty()) kernels_.assign(env.hello().kernels().begin(), env.hello().kernels().end());
    for (const auto& e : env.hello().load_errors()) spdlog::error("worker {}: {}", worker_id, e);
    spdlog::debug("worker {} ready (pid {})", worker_id, env.hello().pid());
    if (!registered_ && last_register_sent_ == Clock::time_point{}) SendRegister();
    return;
  }
  if (env.has_results()) {
    for (auto& r : *env.mutable_results()->mutable_results()) {
      // Results arrive in the order the worker ran its tasks.
      if (!w.assigned.empty() && w.assigned.front() == r.task_id()) {
        w.assigned.pop_front();
        w.started_ns = 0;
      }
      AddResult(std::move(r));
    }
    NoteHeadStarted(w);
  }
}

void Endpoint::ReapWorkers() {
  signalfd_siginfo info;
  while (::read(child_fd_, &info, sizeof(info)) == sizeof(info)) {
  }
  std::vector<std::string> dead;
  for (auto& [id, w] : workers_) {
    if (!w.process.Running()) dead.push_back(id);
  }
  for (const auto& id : dead) {
    Worker w = std::move(workers_.at(id));
    workers_.erase(id);
    std::string how = w.process.exit_status() ? DescribeWaitStatus(*w.process.exit_status()) : "unknown status";
    spdlog::warn("worker {} exited ({}); {} task(s) in hand; starting a replacement", id, how, w.assigned.size());
    if (!w.assigned.empty()) {
      // The task it was running failed with it; those waiting behind it go back to the queue.
      v1::TaskResult r;
      r.set_task_id(w.assigned.front());
      r.set_ok(false);
      r.set_error("the worker process died while running this task (" + how + ")");
      AddResult(std::move(r));
      for (auto it = w.assigned.rbegin(); it + 1 != w.assigned.rend(); ++it) queue_.push_front(*it);
    }
    std::string slot = id.substr(0, id.find('.'));
    Status s = SpawnWorker(slot);
    if (!s.ok()) spdlog::error("cannot start a replacement worker: {}", s.ToString());
  }
}

void Endpoint::Run() {
  zmq::pollitem_t items[] = {{service_.handle(), 0, ZMQ_POLLIN, 0},
                             {workers_sock_.handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, stop_fd_, ZMQ_POLLIN, 0},
                             {nullptr, child_fd_, ZMQ_POLLIN, 0}};
  const auto period = std::chrono::milliseconds(config_.heartbeat_period_ms);
  last_heard_from_service_ = Clock::now();
  auto last_reap = Clock::now();
  bool head_waiting = false;
  while (true) {
    const auto idle = std::chrono::milliseconds(std::max(10, config_.heartbeat_period_ms / 4));
    try {
      zmq::poll(items, 4, head_waiting ? std::chrono::duration_cast<std::chrono::milliseconds>(kRunningReportDelay)
                                       : idle);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::error("poll failed: {}", e.what());
      continue;
    }
    if (items[2].revents & ZMQ_POLLIN) break;
    // SIGCHLD wakes us; the periodic check covers a signal that went to another thread.
    if ((items[3].revents & ZMQ_POLLIN) || Clock::now() - last_reap >= std::chrono::milliseconds(250)) {
      ReapWorkers();
      last_reap = Clock::now();
    }
    try {
      for (int n = 0; n < 10000; ++n) {
        zmq::message_t msg;
        if (!service_.recv(msg, zmq::recv_flags::dontwait)) break;
        HandleServiceMessage(msg);
      }
      for (int n = 0; n < 10000; ++n) {
        zmq::message_t id, body;
        if (!workers_sock_.recv(id, zmq::recv_flags::dontwait)) break;
        if (!id.more()) continue;
        (void)workers_sock_.recv(body);
        HandleWorkerMessage(id.to_string(), body);
      }
    } catch (const zmq::error_t& e) {
      spdlog::warn("receive failed: {}", e.what());
    }
    AssignTasks();
    head_waiting = ReportLongRunning();
    Flush();
    SendCreditIfNeeded();
    const auto now = Clock::now();
    if (!kernels_.empty() && !registered_ && now - last_register_sent_ >= period) SendRegister();
    if (registered_ && now - last_heartbeat_sent_ >= period) {
      v1::Envelope hb;
      hb.mutable_heartbeat()->set_session_id(session_id_);
      hb.mutable_heartbeat()->set_unix_nanos(NowNanos());
      SendToService(hb);
      last_heartbeat_sent_ = now;
    }
    if (registered_ && now - last_heard_from_service_ > period * config_.heartbeat_misses) {
      spdlog::warn("no word from the service for {} ms; registering again",
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard_from_service_).count());
      registered_ = false;
      last_heard_from_service_ = now;
      SendRegister();
    }
  }
  spdlog::info("endpoint {} stopping", config_.id);
  for (auto& [id, w] : workers_) w.process.Signal(SIGTERM);
  for (auto& [id, w] : workers_) w.process.Stop(std::chrono::milliseconds(2000));
}

}  // namespace loom::endpoint
