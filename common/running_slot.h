// RunningSlot: a worker's "what I am running now" record, in a small memory mapping that
// loom-endpoint shares with one loom-worker. It outlives the worker's SIGKILL, so when a worker
// dies its endpoint can charge the death to the task whose kernel was running, and to no other.
// Without it the endpoint could only blame the oldest task it had not yet had a result for, which
// may have finished with its result still on the way (the worker batches results, and ZeroMQ's
// I/O thread sends them; both die with the process): a finished task was then retried, and could
// be called poison, for a crash its successor caused.
//
// The endpoint makes one with Create() per worker it starts, passes fd() to the child
// (SpawnOptions::inherit_fds, and `loom-worker --status-fd N`), then calls CloseFd(); the worker
// maps it with Attach(). The worker calls Begin(id) just before a kernel runs and End() as soon as
// it returns; the endpoint calls Read() once the worker has died and been reaped.
//
// Cost per task: a copy of the id and two atomic stores into shared memory, no system call.
//
// One writer (the worker's loop thread) and one reader that reads only after the writer is gone;
// not thread-safe otherwise. Move-only; the destructor unmaps and closes what it holds.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace loom {

class RunningSlot {
 public:
  // Task ids longer than this are recorded by size and prefix only (service ids are 32 bytes).
  static constexpr size_t kMaxIdBytes = 232;

  struct Reading {
    enum class State {
      kIdle,     // between tasks, or before the first: no kernel was running
      kRunning,  // task_id's kernel was running
      kUnknown,  // a kernel was running, but its id did not fit the slot
    };
    State state = State::kIdle;
    std::string task_id;    // kRunning only
    uint64_t sequence = 0;  // kRunning, kUnknown: 1 for the worker's first task, 2 for its second...
  };

  // A fresh, idle slot in an anonymous shared mapping (memfd), for one worker. fd() is
  // close-on-exec and above 2 (a child's stdio set-up cannot clobber it).
  static Result<RunningSlot> Create();
  // Maps the slot whose descriptor the endpoint passed to this process, checks that it is one,
  // and closes `fd` (the mapping stays).
  static Result<RunningSlot> Attach(int fd);

  RunningSlot() = default;
  RunningSlot(RunningSlot&& o) noexcept;
  RunningSlot& operator=(RunningSlot&& o) noexcept;
  RunningSlot(const RunningSlot&) = delete;
  RunningSlot& operator=(const RunningSlot&) = delete;
  ~RunningSlot();

  // The descriptor to hand to a child; -1 after CloseFd() or Attach().
  int fd() const { return fd_; }
  // The parent closes its descriptor once the child holds its own copy; the mapping stays.
  void CloseFd();

  // Worker: `task_id`'s kernel is about to run. REQUIRES: a slot (not default-constructed).
  void Begin(std::string_view task_id);
  // Worker: the kernel returned; a death from here on is no task's fault.
  void End();

  // Endpoint: what the worker was running. REQUIRES: the writer has ended (its process is reaped).
  Reading Read() const;

 private:
  struct Layout;
  RunningSlot(Layout* layout, int fd) : layout_(layout), fd_(fd) {}
  void Reset();

  Layout* layout_ = nullptr;
  int fd_ = -1;
  uint64_t sequence_ = 0;  // the writer's count of tasks begun
};

}  // namespace loom
