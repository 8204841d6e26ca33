// Deciding which task a dead worker was running, from the worker's RunningSlot
// (common/running_slot.h). Pure functions: the endpoint reads the slot and applies the verdict.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/running_slot.h"

namespace loom::endpoint {

// `assigned`: the tasks handed to the worker and not answered yet, in the order it runs them.
// `slot`: its slot read after its death; nullopt when it had none (a worker started without
// one), and then the oldest task is taken for the running one, as is a slot whose id was too
// long to keep. Returns the index in `assigned` of the task whose kernel was running, or nullopt
// when none was: the worker died between tasks, perhaps after finishing some whose results never
// arrived, and none of them is to blame.
std::optional<size_t> RunningTaskIndex(const std::deque<std::string>& assigned,
                                       const std::optional<RunningSlot::Reading>& slot);

// Deaths no slot could pin on a task (the worker died between tasks) still count against the
// task at the head of what the worker held: a task that kills its worker after its kernel has
// returned (while its result is serialised, say) would otherwise be sent round forever, every
// death charging none. When the same task has headed the list at `limit` such deaths, it is to
// be charged as if it had been running. At most `capacity` tasks are remembered, the oldest
// forgotten first, so a long-lived endpoint's memory stays bounded.
class UnchargedDeaths {
 public:
  explicit UnchargedDeaths(int limit, size_t capacity = 4096) : limit_(limit), capacity_(capacity) {}

  // Counts one uncharged death with `head` first among the dead worker's tasks. True when that
  // makes `limit` of them: the caller charges `head`, and its count starts again from zero.
  bool Record(const std::string& head);

  size_t size() const { return counts_.size(); }

 private:
  const int limit_;
  const size_t capacity_;
  std::unordered_map<std::string, int> counts_;
  std::deque<std::string> order_;  // first-recorded order, for forgetting the oldest
};

}  // namespace loom::endpoint
