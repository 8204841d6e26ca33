// The task state machine. Every store (Redis and in-memory) takes its legal transitions from
// here, so the rules live in one place.
//
//   RECEIVED -> WAITING_FOR_ENDPOINT -> DISPATCHED -> RUNNING -> SUCCESS | FAILED
//   DISPATCHED/RUNNING -> WAITING_FOR_ENDPOINT   (requeued: endpoint session lost)
//   DISPATCHED -> SUCCESS | FAILED               (result arrived before the start notice)
//   any non-terminal -> CANCELLED
#pragma once

#include <string>
#include <vector>

#include "loom.pb.h"

namespace loom {

using TaskState = v1::TaskState;

bool IsTerminal(TaskState s);
bool IsLegalTransition(TaskState from, TaskState to);
// The states from which `to` may be entered.
std::vector<TaskState> LegalPredecessors(TaskState to);
// "received", "waiting-for-endpoint", "dispatched", "running", "success", "failed", "cancelled".
const char* TaskStateName(TaskState s);

}  // namespace loom
