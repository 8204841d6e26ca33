#include "service/completion_hub.h"

namespace loom::service {

std::vector<v1::TaskRecord> CompletionHub::Subscription::Take(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, deadline, [&] { return !ready_.empty(); });
  std::vector<v1::TaskRecord> out(std::make_move_iterator(ready_.begin()), std::make_move_iterator(ready_.end()));
  ready_.clear();
  return out;
}

std::shared_ptr<CompletionHub::Subscription> CompletionHub::Subscribe(std::vector<std::string> ids) {
  auto sub = std::make_shared<Subscription>();
  sub->ids_ = std::move(ids);
  std::lock_guard lock(mu_);
  for (const auto& id : sub->ids_) watchers_.emplace(id, sub.get());
  return sub;
}

void CompletionHub::Unsubscribe(const std::shared_ptr<Subscription>& sub) {
  std::lock_guard lock(mu_);
  for (const auto& id : sub->ids_) {
    auto [b, e] = watchers_.equal_range(id);
    for (auto it = b; it != e; ++it) {
      if (it->second == sub.get()) {
        watchers_.erase(it);
        break;
      }
    }
  }
}

void CompletionHub::Publish(std::vector<v1::TaskRecord> records) {
  if (observer_) observer_(records);
  const auto now = Clock::now();
  std::lock_guard lock(mu_);
  for (auto& r : records) {
    if (!expected_.empty()) {
      if (auto key = KeyOf(r.id())) expected_.erase(*key);
    }
    auto [b, e] = watchers_.equal_range(r.id());
    if (b == e) {
      KeepUnclaimed(std::move(r), now);
      continue;
    }
    for (auto it = b; it != e;) {
      Subscription* s = it->second;
      const bool last = ++it == e;
      {
        std::lock_guard sl(s->mu_);
        if (last) {
          s->ready_.push_back(std::move(r));
        } else {
          s->ready_.push_back(r);
        }
      }
      s->cv_.notify_one();
    }
  }
  EvictUnclaimed(now);
}

void CompletionHub::KeepUnclaimed(v1::TaskRecord record, Clock::time_point now) {
  if (options_.max_bytes <= 0) return;
  // The record's encoded size plus what its id, map entry and queue entry take.
  const int64_t bytes = static_cast<int64_t>(record.ByteSizeLong() + 2 * record.id().size()) + 128;
  if (bytes > options_.max_bytes) return;
  if (auto it = unclaimed_.find(record.id()); it != unclaimed_.end()) EraseUnclaimed(it);
  const uint64_t seq = next_seq_++;
  unclaimed_order_.emplace_back(seq, record.id());
  std::string id = record.id();
  unclaimed_.emplace(std::move(id), Unclaimed{std::move(record), now, bytes, seq});
  unclaimed_bytes_ += bytes;
}

void CompletionHub::EraseUnclaimed(std::unordered_map<std::string, Unclaimed>::iterator it) {
  unclaimed_bytes_ -= it->second.bytes;
  unclaimed_.erase(it);  // its unclaimed_order_ entry goes when it reaches the front
}

void CompletionHub::EvictUnclaimed(Clock::time_point now) {
  while (!unclaimed_order_.empty()) {
    auto& [seq, id] = unclaimed_order_.front();
    auto it = unclaimed_.find(id);
    const bool live = it != unclaimed_.end() && it->second.seq == seq;
    if (live && unclaimed_bytes_ <= options_.max_bytes && now - it->second.at < options_.max_age) break;
    if (live) EraseUnclaimed(it);
    unclaimed_order_.pop_front();
  }
}

std::optional<CompletionHub::IdKey> CompletionHub::KeyOf(std::string_view id) {
  if (id.size() != 32) return std::nullopt;
  IdKey key;
  for (size_t i = 0; i < 32; ++i) {
    const char c = id[i];
    uint64_t v;
    if (c >= '0' && c <= '9') {
      v = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return std::nullopt;  // not one of the service's ids (upper case included: ids are exact)
    }
    uint64_t& half = i < 16 ? key.hi : key.lo;
    half = (half << 4) | v;
  }
  return key;
}

uint32_t CompletionHub::OwnerIndex(const std::string& owner) {
  auto [it, fresh] = owner_index_.try_emplace(owner, static_cast<uint32_t>(owners_.size()));
  if (fresh) owners_.push_back(owner);
  return it->second;
}

void CompletionHub::Expect(const std::vector<std::string>& ids, const std::string& owner) {
  const auto max = static_cast<size_t>(options_.max_expected);
  std::lock_guard lock(mu_);
  if (max == 0) return;
  const uint32_t who = OwnerIndex(owner);
  // When full, the newest are not remembered (a wait for them asks the store); room comes back
  // as tasks finish.
  for (size_t i = 0; i < ids.size() && expected_.size() < max; ++i) {
    if (auto key = KeyOf(ids[i])) expected_.insert_or_assign(*key, who);
  }
}

void CompletionHub::Unexpect(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  for (const auto& id : ids) {
    if (auto key = KeyOf(id)) expected_.erase(*key);
  }
}

std::vector<CompletionHub::Known> CompletionHub::Claim(const std::vector<std::string>& ids) {
  std::vector<Known> out(ids.size());
  const auto now = Clock::now();
  std::lock_guard lock(mu_);
  EvictUnclaimed(now);
  if (unclaimed_.empty() && expected_.empty()) return out;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto key = expected_.empty() ? std::nullopt : KeyOf(ids[i]);
    if (auto it = key ? expected_.find(*key) : expected_.end(); it != expected_.end()) {
      out[i].owner = owners_[it->second];
    } else if (auto u = unclaimed_.find(ids[i]); u != unclaimed_.end()) {
      out[i].record = std::move(u->second.record);
      EraseUnclaimed(u);
    }
  }
  return out;
}

void CompletionHub::Forget(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  for (const auto& id : ids) {
    if (auto it = unclaimed_.find(id); it != unclaimed_.end()) EraseUnclaimed(it);
  }
}

int64_t CompletionHub::unclaimed_bytes() const {
  std::lock_guard lock(mu_);
  return unclaimed_bytes_;
}

size_t CompletionHub::unclaimed_count() const {
  std::lock_guard lock(mu_);
  return unclaimed_.size();
}

size_t CompletionHub::expected_count() const {
  std::lock_guard lock(mu_);
  return expected_.size();
}

}  // namespace loom::service
