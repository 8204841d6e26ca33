#include "common/task_state.h"

namespace loom {

bool IsTerminal(TaskState s) {
  return s == v1::TASK_STATE_SUCCESS || s == v1::TASK_STATE_FAILED || s == v1::TASK_STATE_CANCELLED;
}

bool IsLegalTransition(TaskState from, TaskState to) {
  using namespace v1;  // NOLINT
  if (IsTerminal(from)) return false;
  switch (to) {
    case TASK_STATE_RECEIVED: return false;
    case TASK_STATE_WAITING_FOR_ENDPOINT:
      return from == TASK_STATE_RECEIVED || from == TASK_STATE_DISPATCHED || from == TASK_STATE_RUNNING;
    case TASK_STATE_DISPATCHED: return from == TASK_STATE_WAITING_FOR_ENDPOINT;
    case TASK_STATE_RUNNING: return from == TASK_STATE_DISPATCHED;
    case TASK_STATE_SUCCESS:
    case TASK_STATE_FAILED: return from == TASK_STATE_DISPATCHED || from == TASK_STATE_RUNNING;
    case TASK_STATE_CANCELLED: return from != TASK_STATE_UNSPECIFIED;
    default: return false;
  }
}

std::vector<TaskState> LegalPredecessors(TaskState to) {
  std::vector<TaskState> out;
  for (int s = v1::TASK_STATE_RECEIVED; s <= v1::TASK_STATE_CANCELLED; ++s) {
    if (IsLegalTransition(static_cast<TaskState>(s), to)) out.push_back(static_cast<TaskState>(s));
  }
  return out;
}

const char* TaskStateName(TaskState s) {
  switch (s) {
    case v1::TASK_STATE_RECEIVED: return "received";
    case v1::TASK_STATE_WAITING_FOR_ENDPOINT: return "waiting-for-endpoint";
    case v1::TASK_STATE_DISPATCHED: return "dispatched";
    case v1::TASK_STATE_RUNNING: return "running";
    case v1::TASK_STATE_SUCCESS: return "success";
    case v1::TASK_STATE_FAILED: return "failed";
    case v1::TASK_STATE_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

}  // namespace loom
