#include "service/zap_handler.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/curve.h"
#include "common/log_limiter.h"

namespace loom::service {

using Clock = std::chrono::steady_clock;

std::vector<std::string> ZapReply::Frames() const {
  return {"1.0", request_id, status_code, status_text, user_id, metadata};
}

std::optional<ZapRequest> ParseZapRequest(const std::vector<std::string>& frames) {
  if (frames.size() < 6 || frames[0] != "1.0") return std::nullopt;
  ZapRequest r;
  r.version = frames[0];
  r.request_id = frames[1];
  r.domain = frames[2];
  r.address = frames[3];
  r.routing_id = frames[4];
  r.mechanism = frames[5];
  r.credentials.assign(frames.begin() + 6, frames.end());
  return r;
}

std::string EncodeZapMetadata(const std::vector<std::pair<std::string, std::string>>& properties) {
  std::string out;
  for (const auto& [name, value] : properties) {
    LOOM_CHECK(!name.empty() && name.size() <= 255);
    out.push_back(static_cast<char>(name.size()));
    out += name;
    const auto n = static_cast<uint32_t>(value.size());
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((n >> shift) & 0xFF));
    out += value;
  }
  return out;
}

// ---------------------------------------------------------------- EndpointKeyDirectory

EndpointKeyDirectory::EndpointKeyDirectory(TaskStore* store, KeyDirectoryOptions options)
    : store_(store), options_(options) {}

void EndpointKeyDirectory::Apply(const std::string& id, const std::string& key) {
  if (auto old = by_id_.find(id); old != by_id_.end()) {
    if (auto k = by_key_.find(old->second); k != by_key_.end() && k->second == id) by_key_.erase(k);
    by_id_.erase(old);
  }
  if (key.empty()) return;
  by_id_[id] = key;
  auto [it, inserted] = by_key_.emplace(key, id);
  if (!inserted && it->second != id) {
    // Two endpoints with one key: the key speaks for neither (the API refuses to store this;
    // a record written some other way must not let one endpoint pass as the other).
    spdlog::warn("endpoints '{}' and '{}' have the same CURVE public key: refusing it for both",
                 it->second.empty() ? "(several)" : it->second, id);
    it->second.clear();
  }
}

Status EndpointKeyDirectory::Refresh() {
  std::lock_guard one(refresh_mu_);
  {
    std::lock_guard lock(mu_);
    refreshing_ = true;
    during_.clear();
  }
  ++refreshes_;
  auto eps = store_->ListEndpoints();
  std::lock_guard lock(mu_);
  refreshing_ = false;
  if (!eps.ok()) return eps.status();
  by_key_.clear();
  by_id_.clear();
  for (const auto& e : *eps) Apply(e.id(), e.curve_public_key());
  // Changes reported while the store was read may be newer than what it returned.
  for (const auto& [id, key] : during_) Apply(id, key);
  during_.clear();
  return Status::Ok();
}

std::optional<std::string> EndpointKeyDirectory::Lookup(const std::string& public_key, Clock::time_point now,
                                                        bool* retry_later) {
  if (retry_later != nullptr) *retry_later = false;
  {
    std::lock_guard lock(mu_);
    auto it = by_key_.find(public_key);
    if (it != by_key_.end()) return it->second.empty() ? std::nullopt : std::optional(it->second);
    if (last_refresh_ != Clock::time_point{} && now - last_refresh_ < options_.min_refresh_interval) {
      if (retry_later != nullptr) *retry_later = true;
      return std::nullopt;
    }
    last_refresh_ = now;
  }
  if (Status s = Refresh(); !s.ok()) {
    spdlog::warn("cannot reload the endpoints' CURVE keys: {}", s.ToString());
    if (retry_later != nullptr) *retry_later = true;
    return std::nullopt;
  }
  std::lock_guard lock(mu_);
  auto it = by_key_.find(public_key);
  if (it == by_key_.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

void EndpointKeyDirectory::Update(const v1::EndpointRecord& e) {
  std::lock_guard lock(mu_);
  Apply(e.id(), e.curve_public_key());
  if (refreshing_) during_.emplace_back(e.id(), e.curve_public_key());
}

// ---------------------------------------------------------------- decisions

ZapReply DecideZap(const std::vector<std::string>& frames, const std::string& domain, EndpointKeyDirectory& keys,
                   Clock::time_point now) {
  ZapReply reply;
  reply.status_code = "400";
  auto req = ParseZapRequest(frames);
  if (!req) {
    if (frames.size() >= 2) reply.request_id = frames[1];
    reply.status_text = "malformed ZAP request";
    return reply;
  }
  reply.request_id = req->request_id;
  if (req->domain != domain) {
    reply.status_text = "unknown ZAP domain";
    return reply;
  }
  if (req->mechanism != "CURVE") {
    reply.status_text = "only CURVE is accepted";
    return reply;
  }
  if (req->credentials.size() != 1 || req->credentials[0].size() != 32) {
    reply.status_text = "malformed CURVE credentials";
    return reply;
  }
  char z85[curve::kKeyLength + 1] = {};
  if (zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(req->credentials[0].data()), 32) == nullptr) {
    reply.status_text = "malformed CURVE credentials";
    return reply;
  }
  const std::string key(z85);
  bool retry_later = false;
  auto endpoint = keys.Lookup(key, now, &retry_later);
  if (!endpoint) {
    if (retry_later) {
      reply.status_code = "300";
      reply.status_text = "CURVE key not known yet; try again";
    } else {
      reply.status_text = "unknown CURVE key";
    }
    return reply;
  }
  reply.status_code = "200";
  reply.status_text = "OK";
  reply.user_id = *endpoint;
  reply.metadata = EncodeZapMetadata({{kKeyProperty, key}});
  return reply;
}

// ---------------------------------------------------------------- ZapHandler

ZapHandler::ZapHandler(zmq::context_t& ctx, EndpointKeyDirectory* keys, std::string domain, ZapStats* stats)
    : ctx_(ctx), keys_(keys), domain_(std::move(domain)), stats_(stats) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  LOOM_CHECK(wake_fd_ >= 0);
}

ZapHandler::~ZapHandler() {
  Stop();
  ::close(wake_fd_);
}

Status ZapHandler::Start() {
  if (running()) return Status::Ok();
  zmq::socket_t socket;
  try {
    socket = zmq::socket_t(ctx_, zmq::socket_type::rep);
    socket.set(zmq::sockopt::linger, 0);
    socket.bind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("cannot bind the ZAP handler at ") + kZapEndpoint + ": " + e.what());
  }
  stop_ = false;
  thread_ = std::thread([this, s = std::move(socket)]() mutable { Run(std::move(s)); });
  return Status::Ok();
}

void ZapHandler::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  thread_.join();
}

void ZapHandler::Run(zmq::socket_t socket) {
  zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  LogLimiter log_refusals(10);
  while (!stop_) {
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::error("ZAP handler: poll failed: {}", e.what());
      continue;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      (void)!::read(wake_fd_, &v, sizeof(v));
    }
    while (!stop_) {
      std::vector<std::string> frames;
      try {
        zmq::message_t part;
        if (!socket.recv(part, zmq::recv_flags::dontwait)) break;
        frames.push_back(part.to_string());
        while (part.more()) {
          (void)socket.recv(part);
          frames.push_back(part.to_string());
        }
      } catch (const zmq::error_t& e) {
        spdlog::warn("ZAP handler: receive failed: {}", e.what());
        break;
      }
      const ZapReply reply = DecideZap(frames, domain_, *keys_, Clock::now());
      if (reply.status_code == "200") {
        ++stats_->accepted;
        spdlog::debug("ZAP: accepted endpoint {} from {}", reply.user_id, frames.size() > 3 ? frames[3] : "?");
      } else {
        ++(reply.status_code == "300" ? stats_->deferred : stats_->denied);
        uint64_t held = 0;
        if (log_refusals.Allow(Clock::now(), &held)) {
          spdlog::warn("ZAP: refused a connection from {}: {}{}", frames.size() > 3 ? frames[3] : "?",
                       reply.status_text, held > 0 ? " (" + std::to_string(held) + " more refused, not logged)" : "");
        }
      }
      const auto out = reply.Frames();
      try {
        for (size_t i = 0; i < out.size(); ++i) {
          (void)socket.send(zmq::buffer(out[i]), i + 1 < out.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
        }
      } catch (const zmq::error_t& e) {
        spdlog::warn("ZAP handler: send failed: {}", e.what());
      }
    }
  }
  // Unbound now, not when libzmq's reaper gets to the closed socket: handshakes from here on
  // find no handler (and a Start may bind again at once).
  try {
    socket.unbind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    spdlog::warn("ZAP handler: unbind failed: {}", e.what());
  }
}

}  // namespace loom::service
