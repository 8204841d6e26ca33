#include "endpoint/worker_death.h"

#include <algorithm>

namespace loom::endpoint {

std::optional<size_t> RunningTaskIndex(const std::deque<std::string>& assigned,
                                       const std::optional<RunningSlot::Reading>& slot) {
  if (assigned.empty()) return std::nullopt;
  using State = RunningSlot::Reading::State;
  if (!slot || slot->state == State::kUnknown) return 0;
  if (slot->state == State::kIdle) return std::nullopt;
  // A task whose result arrived is no longer assigned: the worker ended its slot before sending it.
  auto it = std::find(assigned.begin(), assigned.end(), slot->task_id);
  if (it == assigned.end()) return std::nullopt;
  return static_cast<size_t>(it - assigned.begin());
}

bool UnchargedDeaths::Record(const std::string& head) {
  auto [it, inserted] = counts_.try_emplace(head, 0);
  if (inserted) order_.push_back(head);
  if (++it->second >= limit_) {
    counts_.erase(it);
    std::erase(order_, head);
    return true;
  }
  while (counts_.size() > capacity_) {
    counts_.erase(order_.front());
    order_.pop_front();
  }
  return false;
}

}  // namespace loom::endpoint
