// Tests for common/task_state.h: the transitions its header comment lists are exactly the legal
// ones, terminal states are final, and LegalPredecessors agrees with IsLegalTransition.
#include "common/task_state.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace loom {
namespace {

using v1::TASK_STATE_CANCELLED;
using v1::TASK_STATE_DISPATCHED;
using v1::TASK_STATE_FAILED;
using v1::TASK_STATE_RECEIVED;
using v1::TASK_STATE_RUNNING;
using v1::TASK_STATE_SUCCESS;
using v1::TASK_STATE_UNSPECIFIED;
using v1::TASK_STATE_WAITING_FOR_ENDPOINT;

using Transition = std::pair<TaskState, TaskState>;

// Transcribed from the comment in common/task_state.h, not from the code.
const std::set<Transition>& DocumentedTransitions() {
  static const std::set<Transition> kLegal = {
      // RECEIVED -> WAITING_FOR_ENDPOINT -> DISPATCHED -> RUNNING -> SUCCESS | FAILED
      {TASK_STATE_RECEIVED, TASK_STATE_WAITING_FOR_ENDPOINT},
      {TASK_STATE_WAITING_FOR_ENDPOINT, TASK_STATE_DISPATCHED},
      {TASK_STATE_DISPATCHED, TASK_STATE_RUNNING},
      {TASK_STATE_RUNNING, TASK_STATE_SUCCESS},
      {TASK_STATE_RUNNING, TASK_STATE_FAILED},
      // DISPATCHED/RUNNING -> WAITING_FOR_ENDPOINT (requeued: endpoint session lost)
      {TASK_STATE_DISPATCHED, TASK_STATE_WAITING_FOR_ENDPOINT},
      {TASK_STATE_RUNNING, TASK_STATE_WAITING_FOR_ENDPOINT},
      // DISPATCHED -> SUCCESS | FAILED (result arrived before the start notice)
      {TASK_STATE_DISPATCHED, TASK_STATE_SUCCESS},
      {TASK_STATE_DISPATCHED, TASK_STATE_FAILED},
      // any non-terminal -> CANCELLED
      {TASK_STATE_RECEIVED, TASK_STATE_CANCELLED},
      {TASK_STATE_WAITING_FOR_ENDPOINT, TASK_STATE_CANCELLED},
      {TASK_STATE_DISPATCHED, TASK_STATE_CANCELLED},
      {TASK_STATE_RUNNING, TASK_STATE_CANCELLED},
  };
  return kLegal;
}

std::vector<TaskState> AllStates() {
  std::vector<TaskState> out;
  for (int s = TASK_STATE_UNSPECIFIED; s <= TASK_STATE_CANCELLED; ++s) out.push_back(static_cast<TaskState>(s));
  return out;
}

std::string Name(Transition t) {
  return std::string(TaskStateName(t.first)) + " -> " + TaskStateName(t.second);
}

TEST(TaskStateTest, EveryDocumentedTransitionIsLegal) {
  for (const auto& t : DocumentedTransitions()) EXPECT_TRUE(IsLegalTransition(t.first, t.second)) << Name(t);
}

TEST(TaskStateTest, NoUndocumentedTransitionIsLegal) {
  for (TaskState from : AllStates()) {
    for (TaskState to : AllStates()) {
      const Transition t{from, to};
      EXPECT_EQ(IsLegalTransition(from, to), DocumentedTransitions().contains(t)) << Name(t);
    }
  }
}

TEST(TaskStateTest, IllegalTransitionsThatWouldLoseOrReviveTasks) {
  const Transition kIllegal[] = {
      {TASK_STATE_RUNNING, TASK_STATE_DISPATCHED},        // backwards
      {TASK_STATE_SUCCESS, TASK_STATE_RUNNING},           // revives a finished task
      {TASK_STATE_RECEIVED, TASK_STATE_RUNNING},          // skips dispatch
      {TASK_STATE_RECEIVED, TASK_STATE_DISPATCHED},       // skips the queue
      {TASK_STATE_WAITING_FOR_ENDPOINT, TASK_STATE_RUNNING},
      {TASK_STATE_WAITING_FOR_ENDPOINT, TASK_STATE_SUCCESS},
      {TASK_STATE_FAILED, TASK_STATE_SUCCESS},
      {TASK_STATE_CANCELLED, TASK_STATE_WAITING_FOR_ENDPOINT},
      {TASK_STATE_SUCCESS, TASK_STATE_CANCELLED},
      {TASK_STATE_RUNNING, TASK_STATE_RUNNING},           // no self loops
      {TASK_STATE_RUNNING, TASK_STATE_RECEIVED},          // nothing re-enters RECEIVED
      {TASK_STATE_UNSPECIFIED, TASK_STATE_RECEIVED},
      {TASK_STATE_UNSPECIFIED, TASK_STATE_CANCELLED},
  };
  for (const auto& t : kIllegal) EXPECT_FALSE(IsLegalTransition(t.first, t.second)) << Name(t);
}

TEST(TaskStateTest, TerminalStatesHaveNoExits) {
  for (TaskState s : AllStates()) {
    const bool terminal = s == TASK_STATE_SUCCESS || s == TASK_STATE_FAILED || s == TASK_STATE_CANCELLED;
    EXPECT_EQ(IsTerminal(s), terminal) << TaskStateName(s);
    if (!terminal) continue;
    for (TaskState to : AllStates()) EXPECT_FALSE(IsLegalTransition(s, to)) << Name({s, to});
  }
}

TEST(TaskStateTest, LegalPredecessorsMatchesIsLegalTransition) {
  for (TaskState to : AllStates()) {
    std::vector<TaskState> want;
    for (TaskState from : AllStates()) {
      if (IsLegalTransition(from, to)) want.push_back(from);
    }
    EXPECT_EQ(LegalPredecessors(to), want) << TaskStateName(to);
  }
  EXPECT_EQ(LegalPredecessors(TASK_STATE_RUNNING), std::vector<TaskState>{TASK_STATE_DISPATCHED});
  EXPECT_TRUE(LegalPredecessors(TASK_STATE_RECEIVED).empty());
  EXPECT_EQ(LegalPredecessors(TASK_STATE_SUCCESS),
            (std::vector<TaskState>{TASK_STATE_DISPATCHED, TASK_STATE_RUNNING}));
}

TEST(TaskStateTest, Names) {
  EXPECT_STREQ(TaskStateName(TASK_STATE_RECEIVED), "received");
  EXPECT_STREQ(TaskStateName(TASK_STATE_WAITING_FOR_ENDPOINT), "waiting-for-endpoint");
  EXPECT_STREQ(TaskStateName(TASK_STATE_DISPATCHED), "dispatched");
  EXPECT_STREQ(TaskStateName(TASK_STATE_RUNNING), "running");
  EXPECT_STREQ(TaskStateName(TASK_STATE_SUCCESS), "success");
  EXPECT_STREQ(TaskStateName(TASK_STATE_FAILED), "failed");
  EXPECT_STREQ(TaskStateName(TASK_STATE_CANCELLED), "cancelled");
  EXPECT_STREQ(TaskStateName(TASK_STATE_UNSPECIFIED), "unspecified");
}

}  // namespace
}  // namespace loom
