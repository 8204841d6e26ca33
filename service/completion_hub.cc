#include "service/completion_hub.h"

#include <array>

namespace loom::service {

std::vector<v1::TaskRecord> CompletionHub::Subscription::Take(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, deadline, [&] { return !ready_.empty(); });
  std::vector<v1::TaskRecord> out(std::make_move_iterator(ready_.begin()), std::make_move_iterator(ready_.end()));
  ready_.clear();
  return out;
}

namespace {
// How far ahead of the id in hand the loops below prefetch the table slots of the next ones: a
// batch's ids land all over tables larger than the caches, and each lookup would otherwise
// wait for memory in turn.
constexpr size_t kPrefetchAhead = 8;
}  // namespace

std::vector<std::optional<CompletionHub::IdKey>> CompletionHub::KeysOf(const std::vector<std::string>& ids) {
  std::vector<std::optional<IdKey>> keys;
  keys.reserve(ids.size());
  for (const auto& id : ids) keys.push_back(KeyOf(id));
  return keys;
}

std::shared_ptr<CompletionHub::Subscription> CompletionHub::Subscribe(std::vector<std::string> ids) {
  auto sub = std::make_shared<Subscription>();
  sub->ids_ = std::move(ids);
  const auto keys = KeysOf(sub->ids_);
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i + kPrefetchAhead < keys.size() && keys[i + kPrefetchAhead]) watched_.prefetch(*keys[i + kPrefetchAhead]);
    if (!keys[i] || !watched_.try_emplace(*keys[i], sub.get()).second) more_watchers_.emplace(sub->ids_[i], sub.get());
  }
  return sub;
}

void CompletionHub::Unsubscribe(const std::shared_ptr<Subscription>& sub) {
  const auto keys = KeysOf(sub->ids_);
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i + kPrefetchAhead < keys.size() && keys[i + kPrefetchAhead]) watched_.prefetch(*keys[i + kPrefetchAhead]);
    const std::string& id = sub->ids_[i];
    if (keys[i]) {
      auto it = watched_.find(*keys[i]);
      if (it != watched_.end() && it->second == sub.get()) {
        watched_.erase(it);
        continue;
      }
    }
    auto [b, e] = more_watchers_.equal_range(id);
    for (auto it = b; it != e; ++it) {
      if (it->second == sub.get()) {
        more_watchers_.erase(it);
        break;
      }
    }
  }
}

void CompletionHub::Publish(std::vector<v1::TaskRecord> records) {
  if (observer_) observer_(records);
  const auto now = Clock::now();
  // Records go to a subscription in runs: one lock and one wake-up for each run of records
  // bound for the same stream (a burst's records usually all are), in publication order.
  Subscription* to = nullptr;
  std::vector<v1::TaskRecord*> run;
  auto deliver = [&] {
    if (run.empty()) return;
    {
      std::lock_guard sl(to->mu_);
      for (auto* r : run) to->ready_.push_back(std::move(*r));
    }
    to->cv_.notify_one();
    run.clear();
  };
  std::vector<Subscription*> also;  // the other streams watching one record
  std::vector<std::optional<IdKey>> keys;
  keys.reserve(records.size());
  for (const auto& r : records) keys.push_back(KeyOf(r.id()));
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < records.size(); ++i) {
    auto& r = records[i];
    const auto& key = keys[i];
    if (i + kPrefetchAhead < keys.size() && keys[i + kPrefetchAhead]) {
      if (!expected_.empty()) expected_.prefetch(*keys[i + kPrefetchAhead]);
      watched_.prefetch(*keys[i + kPrefetchAhead]);
    }
    Subscription* first = nullptr;
    if (key) {
      if (!expected_.empty()) expected_.erase(*key);
      if (auto it = watched_.find(*key); it != watched_.end()) first = it->second;
    }
    also.clear();
    if (!more_watchers_.empty()) {
      auto [b, e] = more_watchers_.equal_range(r.id());
      for (auto it = b; it != e; ++it) also.push_back(it->second);
    }
    if (first == nullptr && also.empty()) {
      KeepUnclaimed(std::move(r), now);
      continue;
    }
    if (first == nullptr) {
      first = also.back();
      also.pop_back();
    }
    // Every stream but `first` gets a copy, at once (after the run so far, which may be bound
    // for one of them: each stream sees its records in publication order); `first` gets the
    // record itself.
    if (!also.empty()) deliver();
    for (Subscription* s : also) {
      {
        std::lock_guard sl(s->mu_);
        s->ready_.push_back(r);
      }
      s->cv_.notify_one();
    }
    if (first != to) {
      deliver();
      to = first;
    }
    run.push_back(&r);
  }
  deliver();
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
  // Lower-case hex digits only (ids are exact: upper case is another id): their values, and -1
  // for every other byte. One pass without branches; an invalid byte makes `bad` negative.
  static constexpr auto kValue = [] {
    std::array<int8_t, 256> v{};
    v.fill(-1);
    for (int c = '0'; c <= '9'; ++c) v[c] = static_cast<int8_t>(c - '0');
    for (int c = 'a'; c <= 'f'; ++c) v[c] = static_cast<int8_t>(c - 'a' + 10);
    return v;
  }();
  if (id.size() != 32) return std::nullopt;
  IdKey key;
  int bad = 0;
  for (size_t i = 0; i < 16; ++i) {
    const int8_t hi = kValue[static_cast<unsigned char>(id[i])];
    const int8_t lo = kValue[static_cast<unsigned char>(id[i + 16])];
    bad |= hi | lo;
    key.hi = (key.hi << 4) | static_cast<uint64_t>(hi & 15);
    key.lo = (key.lo << 4) | static_cast<uint64_t>(lo & 15);
  }
  if (bad < 0) return std::nullopt;  // not one of the service's ids
  return key;
}

uint32_t CompletionHub::OwnerIndex(const std::string& owner) {
  auto [it, fresh] = owner_index_.try_emplace(owner, static_cast<uint32_t>(owners_.size()));
  if (fresh) owners_.push_back(owner);
  return it->second;
}

void CompletionHub::Expect(const std::vector<std::string>& ids, const std::string& owner) {
  const auto max = static_cast<size_t>(options_.max_expected);
  if (max == 0) return;
  const auto keys = KeysOf(ids);
  std::lock_guard lock(mu_);
  const uint32_t who = OwnerIndex(owner);
  // When full, the newest are not remembered (a wait for them asks the store); room comes back
  // as tasks finish.
  for (size_t i = 0; i < keys.size() && expected_.size() < max; ++i) {
    if (i + kPrefetchAhead < keys.size() && keys[i + kPrefetchAhead]) expected_.prefetch(*keys[i + kPrefetchAhead]);
    if (keys[i]) expected_.insert_or_assign(*keys[i], who);
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
  const auto keys = KeysOf(ids);
  std::lock_guard lock(mu_);
  EvictUnclaimed(now);
  if (unclaimed_.empty() && expected_.empty()) return out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i + kPrefetchAhead < keys.size() && keys[i + kPrefetchAhead] && !expected_.empty()) {
      expected_.prefetch(*keys[i + kPrefetchAhead]);
    }
    const auto& key = expected_.empty() ? std::nullopt : keys[i];
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
