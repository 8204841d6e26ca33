// Endpoint: blocks of workers from a provider, and autoscaling (see endpoint/block_pool.h).
// The rest of the endpoint is in endpoint.cc; this file holds only what blocks add.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "common/util.h"
#include "endpoint/endpoint.h"

namespace loom::endpoint {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// "tcp://IP:PORT" -> {IP, PORT}; "*" and "0" ports become ZeroMQ's "*" (any free port).
std::pair<std::string, std::string> SplitTcp(const std::string& address) {
  const std::string rest = address.substr(6);  // after tcp://
  const auto colon = rest.rfind(':');
  return {rest.substr(0, colon), rest.substr(colon + 1)};
}

}  // namespace

Status Endpoint::StartBlocks() {
  LOOM_RETURN_IF_ERROR(ValidateBlocksConfig(config_));
  const auto& engine = config_.engine;
  auto [ip, port] = SplitTcp(engine.listen);
  const std::string bind = "tcp://" + ip + ":" + (port == "0" ? "*" : port);
  std::string bound;
  try {
    workers_sock_.bind(bind);
    bound = workers_sock_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot listen for block workers at " + engine.listen + " (engine.listen): " + e.what());
  }
  std::string host = engine.address;
  if (host.empty()) {
    host = ip;
    if (ip == "0.0.0.0" || ip == "*") {
      char name[256] = {0};
      ::gethostname(name, sizeof(name) - 1);
      host = name;
    }
  }
  block_worker_address_ = "tcp://" + host + ":" + SplitTcp(bound).second;

  BlockPoolOptions o;
  o.provider = config_.provider;
  const int wpn = engine.workers_per_node > 0 ? engine.workers_per_node : config_.workers;
  o.policy.min_blocks = config_.provider.min_blocks;
  o.policy.max_blocks = config_.provider.max_blocks;
  o.policy.slots_per_block = config_.provider.nodes_per_block * wpn;
  o.policy.max_idletime = std::chrono::milliseconds(static_cast<int64_t>(engine.max_idletime_s * 1000));
  o.init_blocks = config_.provider.init_blocks;
  o.poll_period = std::chrono::milliseconds(engine.poll_period_ms);
  o.walltime = config_.provider.walltime;
  o.job_name_prefix = "loom-" + config_.id;
  o.script_dir = config_.provider.script_dir.empty() ? config_.run_dir + "/blocks" : config_.provider.script_dir;
  // Block ids differ between runs of the endpoint, so a worker of a block left over from an
  // earlier run is never taken for one of this run's.
  o.block_id_prefix = "b" + session_id_.substr(0, 6) + "-";
  o.manager_command = [this](const std::string& block_id) { return ManagerCommand(block_id); };
  std::error_code ec;
  fs::create_directories(o.script_dir, ec);
  if (ec) return Internal("cannot create the block script directory " + o.script_dir + ": " + ec.message());
  command_runner_ = std::make_unique<SystemCommandRunner>();
  LOOM_ASSIGN_OR_RETURN(auto provider, MakeProvider(config_.provider, command_runner_.get()));
  blocks_ = std::make_unique<BlockPool>(std::move(o), std::move(provider));
  spdlog::info("endpoint {}: {} provider, blocks {}..{} (init {}) of {} node(s) x {} worker(s); workers connect to {}",
               config_.id, config_.provider.type, config_.provider.min_blocks, config_.provider.max_blocks,
               config_.provider.init_blocks, config_.provider.nodes_per_block, wpn, block_worker_address_);
  return Status::Ok();
}

std::vector<std::string> Endpoint::ManagerCommand(const std::string& block_id) const {
  const std::string dir = fs::path(config_.worker_binary).parent_path().string();
  const int wpn = config_.engine.workers_per_node > 0 ? config_.engine.workers_per_node : config_.workers;
  std::vector<std::string> argv = {dir.empty() ? "loom-manager" : dir + "/loom-manager",
                                   "--endpoint",
                                   block_worker_address_,
                                   "--block-id",
                                   block_id,
                                   "--workers",
                                   std::to_string(wpn),
                                   "--worker-binary",
                                   config_.worker_binary,
                                   "--max-message-bytes",
                                   std::to_string(config_.max_message_bytes + (1 << 20)),
                                   "--log-level",
                                   config_.log_level};
  for (const auto& p : config_.plugins) argv.insert(argv.end(), {"--plugin", p});
  for (const auto& d : config_.plugin_dirs) argv.insert(argv.end(), {"--plugin-dir", d});
  // HOOK (container/sandbox): the sandbox branch's endpoint/launch.h wraps this command line for
  // docker/podman/apptainer and/or bubblewrap; the wrapped argv is returned here.
  return argv;
}

Endpoint::Worker* Endpoint::AdmitBlockWorker(const std::string& worker_id) {
  const auto colon = worker_id.find(':');
  const auto dot = worker_id.rfind('.');
  if (colon == std::string::npos || dot == std::string::npos || dot < colon) return nullptr;
  const std::string block = worker_id.substr(0, colon);
  if (!blocks_->Knows(block) || blocks_->Releasing(block)) {
    spdlog::debug("ignoring worker {}: block {} is not a live block of this endpoint", worker_id, block);
    return nullptr;
  }
  if (workers_.contains(worker_id)) return nullptr;  // given up on, not yet reaped
  // A newer generation in a slot means the manager restarted the worker: the old one died.
  const std::string slot = worker_id.substr(0, dot);
  for (auto& [id, w] : workers_) {
    if (!w.block.empty() && id != worker_id && id.substr(0, id.rfind('.')) == slot) {
      spdlog::warn("worker {} was replaced by its manager ({}): it died", id, worker_id);
      w.lost = true;
      w.ready = false;
    }
  }
  Worker w;
  w.id = worker_id;
  w.block = block;
  w.ready = true;
  spdlog::info("worker {} of block {} connected", worker_id, block);
  return &workers_.emplace(worker_id, std::move(w)).first->second;
}

void Endpoint::TickBlocks() {
  const auto now = Clock::now();
  if (now - last_block_tick_ < std::chrono::milliseconds(100)) return;
  last_block_tick_ = now;
  std::set<std::string> busy;
  for (const auto& [id, w] : workers_) {
    if (!w.block.empty() && !w.assigned.empty()) busy.insert(w.block);
  }
  auto r = blocks_->Tick(now, static_cast<int64_t>(held_.size()), busy);
  for (const auto& b : r.released) {
    for (auto& [id, w] : workers_) {
      if (w.block == b) w.ready = false;  // idle, and to get nothing more
    }
  }
  for (const auto& e : r.ended) {
    std::vector<std::string> gone;
    for (const auto& [id, w] : workers_) {
      if (w.block == e.block_id) gone.push_back(id);
    }
    const std::string how = "its block " + e.block_id + " (job " + e.job_id +
                            ") ended: " + JobStateName(e.status.state) +
                            (e.status.detail.empty() ? "" : " (" + e.status.detail + ")");
    for (const auto& id : gone) {
      Worker w = std::move(workers_.at(id));
      workers_.erase(id);
      if (!w.assigned.empty()) spdlog::warn("worker {} lost with {} task(s): {}", id, w.assigned.size(), how);
      HandleWorkerLoss(w, how);
    }
  }
  // Workers given up on (a deadline, a cancel, a replaced slot) are settled at once.
  for (const auto& [id, w] : workers_) {
    if (w.lost) {
      ReapWorkers();
      break;
    }
  }
}

void Endpoint::StopBlocks() {
  auto left = blocks_->Shutdown(std::chrono::seconds(30),
                                [](std::chrono::milliseconds pause) { std::this_thread::sleep_for(pause); });
  if (!left.empty()) spdlog::error("{} block job(s) may outlive the endpoint; cancel them by hand", left.size());
}

}  // namespace loom::endpoint
