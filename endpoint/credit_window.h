// CreditWindow: how many more tasks an endpoint may ask the service for, bounded by the bytes
// of the tasks it would then hold as well as by their count.
//
// Credit is counted in tasks, and a task's size is known only once it arrives. The window
// estimates the size of the next tasks from the batches that came: the largest task of the last
// batch, or half the estimate before it, whichever is larger. A batch of large tasks raises the
// estimate at once; small ones lower it by half a batch at a time. It starts at the largest task
// the endpoint accepts, so a fresh endpoint asks for few tasks until it has seen how large they
// are. Not thread-safe (the endpoint's loop owns it).
#pragma once

#include <algorithm>
#include <cstdint>

namespace loom::endpoint {

class CreditWindow {
 public:
  // max_bytes 0: no bound by bytes. initial_task_bytes: the estimate before any task came.
  CreditWindow(int64_t max_bytes, int64_t initial_task_bytes)
      : max_bytes_(max_bytes), task_bytes_(std::max<int64_t>(1, initial_task_bytes)) {}

  // A batch of tasks arrived; `largest` is the size of its largest task spec, in bytes.
  void Received(int64_t largest) { task_bytes_ = std::max<int64_t>({1, largest, task_bytes_ / 2}); }

  // The most tasks to hold at the current estimate: `capacity` (by count), or fewer if that many
  // would pass max_bytes; at least 1.
  int64_t Limit(int64_t capacity) const {
    if (max_bytes_ <= 0) return capacity;
    return std::max<int64_t>(1, std::min(capacity, max_bytes_ / task_bytes_));
  }

  // Tasks that may still be asked for: `task_room` by count (capacity less what is held and
  // already asked for), and by bytes what `max_bytes` leaves beside the `held_bytes` of the
  // specs held and the `requested` tasks asked for and not yet received. An endpoint that holds
  // and awaits nothing may always ask for one task, so that a task larger than the bound still
  // runs, alone.
  int64_t Room(int64_t task_room, int64_t held_bytes, int64_t requested) const {
    if (max_bytes_ <= 0) return task_room;
    int64_t by_bytes = (max_bytes_ - held_bytes) / task_bytes_ - requested;
    if (held_bytes == 0 && requested == 0) by_bytes = std::max<int64_t>(by_bytes, 1);
    return std::min(task_room, by_bytes);
  }

  int64_t task_bytes() const { return task_bytes_; }

 private:
  const int64_t max_bytes_;
  int64_t task_bytes_;  // the estimated size of the next tasks
};

}  // namespace loom::endpoint
