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
  std::lock_guard lock(mu_);
  if (watchers_.empty()) return;
  for (auto& r : records) {
    auto [b, e] = watchers_.equal_range(r.id());
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
}

}  // namespace loom::service
