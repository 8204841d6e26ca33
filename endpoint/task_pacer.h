// TaskPacer: how long each kernel's tasks take on this endpoint's workers, so that the endpoint
// can hand short tasks to one worker in a batch instead of waking a worker for each one
// (Endpoint::AssignTasks). Waking an idle worker process costs tens of microseconds of CPU (a
// context switch, its ZeroMQ I/O thread, a message each way); a no-op kernel runs in a few.
//
// A kernel counts as short once kMinSamples of its tasks were timed (worker_started to
// kernel_finished, on the worker) and their moving average is under the threshold. Unknown and
// slow kernels are spread over idle workers as before. Not thread-safe: the endpoint's loop owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace loom::endpoint {

class TaskPacer {
 public:
  static constexpr int kMinSamples = 3;
  static constexpr double kWeight = 0.2;  // of the newest sample in the moving average

  // `short_below`: 0 makes no kernel short (every burst is spread over the idle workers).
  explicit TaskPacer(std::chrono::microseconds short_below) : short_below_ns_(short_below.count() * 1000) {}

  // One task of `kernel` ran for `run_ns` (negative: a clock step; ignored).
  void Observe(const std::string& kernel, int64_t run_ns);
  bool IsShort(const std::string& kernel) const;
  // The moving average for `kernel` in nanoseconds; 0 before its first sample.
  double AverageNanos(const std::string& kernel) const;

 private:
  struct Pace {
    double average_ns = 0;
    int samples = 0;  // up to kMinSamples
  };
  int64_t short_below_ns_;
  std::unordered_map<std::string, Pace> pace_;  // one entry per kernel this endpoint ran
};

}  // namespace loom::endpoint
