// CompletionHub: tells waiting result streams about tasks that reached a terminal state.
// Records are published only after they are committed to the store, so a subscriber never sees
// a result that a restart could lose. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "loom.pb.h"

namespace loom::service {

class CompletionHub {
 public:
  // The records published for one subscriber's ids, in publication order.
  class Subscription {
   public:
    // Waits until a record is available or `deadline` passes; returns what is available.
    std::vector<v1::TaskRecord> Take(std::chrono::steady_clock::time_point deadline);

   private:
    friend class CompletionHub;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<v1::TaskRecord> ready_;  // GUARDED_BY(mu_)
    std::vector<std::string> ids_;
  };

  // Subscribe before reading the store, so that nothing completing in between is missed.
  std::shared_ptr<Subscription> Subscribe(std::vector<std::string> ids);
  void Unsubscribe(const std::shared_ptr<Subscription>& sub);
  // Every record is published once, when its task reaches a terminal state. A record watched
  // by one stream moves to it; one watched by several is copied to all but the last.
  void Publish(std::vector<v1::TaskRecord> records);
  // Called with every published batch (e.g. to count a user's tasks in flight). Set before
  // anything publishes; it must be thread-safe and must not call back into the hub.
  void SetObserver(std::function<void(const std::vector<v1::TaskRecord>&)> observer) {
    observer_ = std::move(observer);
  }

 private:
  std::mutex mu_;
  // A task id may be watched by several streams.
  std::unordered_multimap<std::string, Subscription*> watchers_;  // GUARDED_BY(mu_)
  std::function<void(const std::vector<v1::TaskRecord>&)> observer_;
};

}  // namespace loom::service
