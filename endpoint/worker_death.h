// Deciding which task a dead worker was running, from the worker's RunningSlot
// (common/running_slot.h). Pure functions: the endpoint reads the slot and applies the verdict.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <string>

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

}  // namespace loom::endpoint
