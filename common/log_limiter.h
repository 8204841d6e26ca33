// LogLimiter: keeps a log line that a peer can provoke (a refused connection, a refused task)
// from flooding the log: at most `per_second` lines a second go out, and the next line that
// does says how many were held back. Not thread-safe: one per thread, or behind a lock.
//
//   uint64_t held = 0;
//   if (limiter.Allow(Clock::now(), &held)) spdlog::warn("refused ... ({} more not logged)", held);
#pragma once

#include <chrono>
#include <cstdint>

namespace loom {

class LogLimiter {
 public:
  explicit LogLimiter(int per_second) : per_second_(per_second) {}

  // True when this event may be logged; then `*held_back` is how many were not since the last
  // one that was.
  bool Allow(std::chrono::steady_clock::time_point now, uint64_t* held_back) {
    if (now - window_start_ >= std::chrono::seconds(1)) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= per_second_) {
      ++held_back_;
      return false;
    }
    ++in_window_;
    *held_back = held_back_;
    held_back_ = 0;
    return true;
  }

 private:
  const int per_second_;
  std::chrono::steady_clock::time_point window_start_{};
  int in_window_ = 0;
  uint64_t held_back_ = 0;
};

}  // namespace loom
