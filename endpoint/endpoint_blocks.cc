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
  const std::string script_dir =
      config_.provider.script_dir.empty() ? config_.run_dir + "/blocks" : config_.provider.script_dir;
  std::error_code dir_ec;
  fs::create_directories(script_dir, dir_ec);
  if (dir_ec) return Internal("cannot create the block script directory " + script_dir + ": " + dir_ec.message());
  // Block workers reach this socket over TCP, possibly from other hosts, so it is always a CURVE
  // server (whether or not the service link uses CURVE), and fails closed: a ZAP handler admits
  // only the key pair this run made for its workers. A client without CURVE fails the handshake
  // itself; one with another key is refused by ServeWorkerZap. Both key pairs are fresh for each
  // run, and the workers' pair is kept in a 0600 file beside the job scripts (a batch job cannot
  // be handed a secret any other way: see docs/SECURITY.md). The ipc socket bound in Start()
  // keeps its plain options: libzmq copies a socket's options into each listener at bind time.
  LOOM_ASSIGN_OR_RETURN(block_server_keys_, curve::GenerateKeyPair());
  LOOM_ASSIGN_OR_RETURN(block_worker_keys_, curve::GenerateKeyPair());
  block_key_file_ = script_dir + "/worker-" + session_id_.substr(0, 8) + ".key";
  LOOM_RETURN_IF_ERROR(curve::WriteSecretKeyFile(block_key_file_, block_worker_keys_, /*replace=*/true));
  try {
    worker_zap_ = zmq::socket_t(ctx_, zmq::socket_type::rep);
    worker_zap_.set(zmq::sockopt::linger, 0);
    worker_zap_.bind("inproc://zeromq.zap.01");
    recheck_quiet_sockets_ = true;
  } catch (const zmq::error_t& e) {
    return Internal(std::string("cannot start the block workers' ZAP handler: ") + e.what());
  }
  LOOM_RETURN_IF_ERROR(curve::MakeServer(workers_sock_, block_server_keys_, "loom-block-workers", true));
  if (config_.container.enabled() || config_.sandbox.enabled()) {
    // loom-manager wraps each worker it starts with the same settings (common/launch.h).
    block_launch_file_ = script_dir + "/launch-" + session_id_.substr(0, 8) + ".yaml";
    LOOM_RETURN_IF_ERROR(WriteBlockScript(block_launch_file_, LaunchSettingsYaml(config_.container, config_.sandbox)));
  }
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
  o.script_dir = script_dir;
  // Block ids differ between runs of the endpoint, so a worker of a block left over from an
  // earlier run is never taken for one of this run's.
  o.block_id_prefix = "b" + session_id_.substr(0, 6) + "-";
  o.manager_command = [this](const std::string& block_id) { return ManagerCommand(block_id); };
  command_runner_ = std::make_unique<SystemCommandRunner>();
  LOOM_ASSIGN_OR_RETURN(auto provider, MakeProvider(config_.provider, command_runner_.get()));
  blocks_ = std::make_unique<BlockPool>(std::move(o), std::move(provider));
  spdlog::info("endpoint {}: {} provider, blocks {}..{} (init {}) of {} node(s) x {} worker(s); workers connect to {}",
               config_.id, config_.provider.type, config_.provider.min_blocks, config_.provider.max_blocks,
               config_.provider.init_blocks, config_.provider.nodes_per_block, wpn, block_worker_address_);
  return Status::Ok();
}

std::vector<std::string> BlockManagerArgv(const EndpointConfig& config, const BlockManagerSettings& settings) {
  const std::string dir = fs::path(config.worker_binary).parent_path().string();
  const int wpn = config.engine.workers_per_node > 0 ? config.engine.workers_per_node : config.workers;
  std::vector<std::string> argv = {
      dir.empty() ? "loom-manager" : dir + "/loom-manager", "--endpoint", settings.worker_address, "--block-id",
      settings.block_id, "--workers", std::to_string(wpn), "--worker-binary", config.worker_binary,
      "--max-message-bytes", std::to_string(config.max_message_bytes + (1 << 20)), "--log-level", config.log_level,
      // The key file's path and the public key only: never a secret on a command line.
      "--curve-secret-key-file", settings.worker_key_file,
      // One argument: a Z85 key may begin with '-'.
      "--endpoint-public-key=" + settings.endpoint_public_key};
  if (!settings.launch_file.empty()) argv.insert(argv.end(), {"--launch-file", settings.launch_file});
  for (const auto& p : config.plugins) argv.insert(argv.end(), {"--plugin", p});
  for (const auto& d : config.plugin_dirs) argv.insert(argv.end(), {"--plugin-dir", d});
  return argv;
}

std::vector<std::string> Endpoint::ManagerCommand(const std::string& block_id) const {
  return BlockManagerArgv(
      config_, {block_worker_address_, block_id, block_key_file_, block_server_keys_.public_key, block_launch_file_});
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

void Endpoint::ServeWorkerZap() {
  if (worker_zap_.handle() == nullptr) return;
  std::string allowed(32, '\0');
  zmq_z85_decode(reinterpret_cast<uint8_t*>(allowed.data()), block_worker_keys_.public_key.c_str());
  while (true) {
    std::vector<zmq::message_t> frames;
    try {
      zmq::message_t f;
      if (!worker_zap_.recv(f, zmq::recv_flags::dontwait)) return;
      frames.push_back(std::move(f));
      while (frames.back().more()) {
        zmq::message_t next;
        (void)worker_zap_.recv(next);
        frames.push_back(std::move(next));
      }
    } catch (const zmq::error_t& e) {
      spdlog::warn("block workers' ZAP handler: {}", e.what());
      return;
    }
    // RFC 27: version, request id, domain, address, identity, mechanism, credentials.
    const bool ok = frames.size() >= 7 && frames[5].to_string() == "CURVE" && frames[6].to_string() == allowed;
    if (!ok) {
      uint64_t held = 0;
      if (log_refusals_.Allow(Clock::now(), &held)) {
        spdlog::warn("refused a block worker connection from {}: it does not hold this run's worker key{}",
                     frames.size() > 3 ? frames[3].to_string() : "?",
                     held > 0 ? " (" + std::to_string(held) + " more refused, not logged)" : "");
      }
    }
    const std::string request_id = frames.size() > 1 ? frames[1].to_string() : "";
    try {
      worker_zap_.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
      worker_zap_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      worker_zap_.send(zmq::buffer(std::string(ok ? "200" : "400")), zmq::send_flags::sndmore);
      worker_zap_.send(zmq::buffer(std::string(ok ? "OK" : "unknown worker key")), zmq::send_flags::sndmore);
      worker_zap_.send(zmq::buffer(std::string(ok ? "block-worker" : "")), zmq::send_flags::sndmore);
      worker_zap_.send(zmq::buffer(std::string()), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      spdlog::warn("block workers' ZAP handler cannot answer: {}", e.what());
      return;
    }
  }
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
  // The workers' key is of no use to anyone after this run; remove it (and the launch file).
  std::error_code ec;
  fs::remove(block_key_file_, ec);
  if (!block_launch_file_.empty()) fs::remove(block_launch_file_, ec);
}

}  // namespace loom::endpoint
