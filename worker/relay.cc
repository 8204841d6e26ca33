#include "worker/relay.h"

#include <spdlog/spdlog.h>

#include <map>
#include <vector>

#include "common/util.h"

namespace loom::worker {
namespace {

// Receives every part of one message (the parts of a message arrive together).
std::vector<zmq::message_t> ReceiveAll(zmq::socket_t& s) {
  std::vector<zmq::message_t> parts;
  do {
    zmq::message_t part;
    if (!s.recv(part, zmq::recv_flags::dontwait)) break;
    parts.push_back(std::move(part));
  } while (parts.back().more());
  return parts;
}

void SendAll(zmq::socket_t& s, std::vector<zmq::message_t>& parts, size_t from) {
  for (size_t i = from; i < parts.size(); ++i) {
    (void)s.send(parts[i], i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

}  // namespace

std::string WorkerRelayAddress(const std::string& socket_dir) { return "ipc://" + socket_dir + "/workers.sock"; }

WorkerRelay::WorkerRelay(WorkerRelayOptions options) : options_(std::move(options)) {}

Result<std::unique_ptr<WorkerRelay>> WorkerRelay::Start(WorkerRelayOptions options) {
  if (options.socket_dir.empty()) return InvalidArgument("the relay needs a directory for its socket");
  std::unique_ptr<WorkerRelay> r(new WorkerRelay(std::move(options)));
  r->address_ = WorkerRelayAddress(r->options_.socket_dir);
  r->control_address_ = "inproc://relay-control";
  try {
    r->frontend_ = zmq::socket_t(r->ctx_, zmq::socket_type::router);
    r->frontend_.set(zmq::sockopt::linger, 0);
    r->frontend_.set(zmq::sockopt::maxmsgsize, r->options_.max_message_bytes);
    r->frontend_.set(zmq::sockopt::sndhwm, 0);
    r->frontend_.set(zmq::sockopt::rcvhwm, 0);
    r->frontend_.bind(r->address_);
    r->control_inside_ = zmq::socket_t(r->ctx_, zmq::socket_type::pair);
    r->control_inside_.bind(r->control_address_);
    r->control_ = zmq::socket_t(r->ctx_, zmq::socket_type::pair);
    r->control_.connect(r->control_address_);
    // From here on frontend_ and control_inside_ belong to the relay's thread.
    r->thread_ = std::thread([relay = r.get()] { relay->Run(); });
  } catch (const zmq::error_t& e) {
    return Unavailable("worker relay on " + r->address_ + ": " + e.what());
  }
  return r;
}

WorkerRelay::~WorkerRelay() {
  if (thread_.joinable()) {
    (void)control_.send(zmq::str_buffer(""), zmq::send_flags::none);  // empty: stop
    thread_.join();
  }
}

void WorkerRelay::Forget(const std::string& worker_id) {
  if (worker_id.empty() || !thread_.joinable()) return;
  (void)control_.send(zmq::buffer(worker_id), zmq::send_flags::none);
}

void WorkerRelay::Run() {
  std::map<std::string, zmq::socket_t> upstream;  // by worker id: its connection to the endpoint
  auto open = [&](const std::string& id) -> zmq::socket_t* {
    try {
      zmq::socket_t s(ctx_, zmq::socket_type::dealer);
      s.set(zmq::sockopt::routing_id, id);
      s.set(zmq::sockopt::linger, 0);
      s.set(zmq::sockopt::sndhwm, 0);
      s.set(zmq::sockopt::rcvhwm, 0);
      if (options_.keys) {
        if (Status st = curve::MakeClient(s, *options_.keys, options_.endpoint_public_key); !st.ok()) {
          spdlog::error("relay: worker {}: {}", id, st.ToString());
          return nullptr;
        }
      }
      s.connect(options_.endpoint);
      spdlog::debug("relay: worker {} connected through the relay", id);
      return &upstream.emplace(id, std::move(s)).first->second;
    } catch (const zmq::error_t& e) {
      spdlog::warn("relay: cannot open a connection for worker '{}': {}", id, e.what());
      return nullptr;
    }
  };
  bool warned_anonymous = false;
  std::vector<zmq::pollitem_t> items;
  std::vector<const std::string*> ids;  // items[2 + k] belongs to worker *ids[k]
  while (true) {
    items.assign({{frontend_.handle(), 0, ZMQ_POLLIN, 0}, {control_inside_.handle(), 0, ZMQ_POLLIN, 0}});
    ids.clear();
    for (auto& [id, s] : upstream) {
      items.push_back({s.handle(), 0, ZMQ_POLLIN, 0});
      ids.push_back(&id);
    }
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::error("relay: poll failed: {}", e.what());
      return;
    }
    // Endpoint -> worker: the worker's id in front, as the ROUTER wants it.
    for (size_t k = 0; k < ids.size(); ++k) {
      if (!(items[2 + k].revents & ZMQ_POLLIN)) continue;
      zmq::socket_t& s = upstream.at(*ids[k]);
      for (int n = 0; n < 1000; ++n) {
        auto parts = ReceiveAll(s);
        if (parts.empty()) break;
        (void)frontend_.send(zmq::buffer(*ids[k]), zmq::send_flags::sndmore);
        SendAll(frontend_, parts, 0);
      }
    }
    // Worker -> endpoint, through that worker's own connection.
    if (items[0].revents & ZMQ_POLLIN) {
      for (int n = 0; n < 1000; ++n) {
        auto parts = ReceiveAll(frontend_);
        if (parts.size() < 2) break;
        const std::string id = parts[0].to_string();
        if (id.empty() || id[0] == '\0') {
          // No routing id of its own (ZeroMQ made one up): not a Loom worker, which always names
          // itself, and the endpoint would see an id no block of its owns.
          if (!warned_anonymous) spdlog::warn("relay: dropping messages from a peer that gave no worker id");
          warned_anonymous = true;
          continue;
        }
        auto it = upstream.find(id);
        zmq::socket_t* s = it != upstream.end() ? &it->second : open(id);
        if (s != nullptr) SendAll(*s, parts, 1);
      }
    }
    if (items[1].revents & ZMQ_POLLIN) {
      zmq::message_t m;
      while (control_inside_.recv(m, zmq::recv_flags::dontwait)) {
        if (m.size() == 0) return;  // stop
        upstream.erase(m.to_string());
      }
    }
  }
}

}  // namespace loom::worker
