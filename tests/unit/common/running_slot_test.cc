// Unit tests for common/running_slot.h: what the reader sees after each writer step, a slot
// shared through its descriptor, and a writer killed (SIGKILL) in the middle of a task.
#include "common/running_slot.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

namespace loom {
namespace {

using State = RunningSlot::Reading::State;

RunningSlot MakeSlot() {
  auto slot = RunningSlot::Create();
  LOOM_CHECK(slot.ok());
  return std::move(slot).value();
}

TEST(RunningSlotTest, AFreshSlotIsIdle) {
  RunningSlot slot = MakeSlot();
  EXPECT_GT(slot.fd(), 2);
  auto r = slot.Read();
  EXPECT_EQ(r.state, State::kIdle);
  EXPECT_EQ(r.task_id, "");
  EXPECT_EQ(r.sequence, 0u);
}

TEST(RunningSlotTest, NamesTheTaskBetweenBeginAndEndAndCountsTasks) {
  RunningSlot slot = MakeSlot();
  slot.Begin("a-much-longer-task-id-than-the-next");
  auto r = slot.Read();
  EXPECT_EQ(r.state, State::kRunning);
  EXPECT_EQ(r.task_id, "a-much-longer-task-id-than-the-next");
  EXPECT_EQ(r.sequence, 1u);
  slot.End();
  EXPECT_EQ(slot.Read().state, State::kIdle);
  slot.Begin("t2");  // a shorter id over a longer one: nothing of the old one shows
  r = slot.Read();
  EXPECT_EQ(r.state, State::kRunning);
  EXPECT_EQ(r.task_id, "t2");
  EXPECT_EQ(r.sequence, 2u);
}

TEST(RunningSlotTest, AnIdTooLongToKeepReadsAsUnknown) {
  RunningSlot slot = MakeSlot();
  slot.Begin(std::string(RunningSlot::kMaxIdBytes, 'x'));
  EXPECT_EQ(slot.Read().state, State::kRunning);
  slot.End();
  slot.Begin(std::string(RunningSlot::kMaxIdBytes + 1, 'x'));
  auto r = slot.Read();
  EXPECT_EQ(r.state, State::kUnknown);
  EXPECT_EQ(r.sequence, 2u);
}

TEST(RunningSlotTest, AnAttachedDescriptorSharesTheSlotAndIsClosed) {
  RunningSlot endpoint = MakeSlot();
  const int fd = ::dup(endpoint.fd());
  ASSERT_GE(fd, 0);
  endpoint.CloseFd();
  EXPECT_EQ(endpoint.fd(), -1);
  auto worker = RunningSlot::Attach(fd);
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "Attach closes the descriptor";
  worker->Begin("t1");
  EXPECT_EQ(endpoint.Read().task_id, "t1");
  worker->End();
  EXPECT_EQ(endpoint.Read().state, State::kIdle);
}

TEST(RunningSlotTest, ADescriptorThatIsNotASlotIsRefused) {
  const int small = ::memfd_create("not-a-slot", MFD_CLOEXEC);
  ASSERT_GE(small, 0);
  auto r = RunningSlot::Attach(small);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("is not a running slot"), std::string::npos) << r.status().message();
  ::close(small);

  const int zeros = ::memfd_create("zeros", MFD_CLOEXEC);
  ASSERT_GE(zeros, 0);
  ASSERT_EQ(::ftruncate(zeros, 4096), 0);
  r = RunningSlot::Attach(zeros);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("wrong magic"), std::string::npos) << r.status().message();
  ::close(zeros);

  EXPECT_EQ(RunningSlot::Attach(1000).status().code(), StatusCode::kInvalidArgument);  // not open
}

// The point of the slot: a writer killed while a kernel runs leaves that task's id behind, and
// one killed after End() leaves nothing, whatever ran before.
TEST(RunningSlotTest, SurvivesTheSigkillOfItsWriter) {
  for (const bool in_task : {true, false}) {
    RunningSlot endpoint = MakeSlot();
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto worker = RunningSlot::Attach(endpoint.fd());
      if (!worker.ok()) ::_exit(2);
      worker->Begin("finished");
      worker->End();
      if (in_task) worker->Begin("crashes");
      ::kill(::getpid(), SIGKILL);
      ::_exit(3);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    auto r = endpoint.Read();
    if (in_task) {
      EXPECT_EQ(r.state, State::kRunning);
      EXPECT_EQ(r.task_id, "crashes");
      EXPECT_EQ(r.sequence, 2u);
    } else {
      EXPECT_EQ(r.state, State::kIdle);
    }
  }
}

TEST(RunningSlotTest, MovesCarryTheMapping) {
  RunningSlot a = MakeSlot();
  a.Begin("t1");
  RunningSlot b = std::move(a);
  EXPECT_EQ(b.Read().task_id, "t1");
  RunningSlot c;
  c = std::move(b);
  c.End();
  EXPECT_EQ(c.Read().state, State::kIdle);
}

}  // namespace
}  // namespace loom
