// CompletionHub: tells waiting result streams about tasks that reached a terminal state.
// Records are published only after they are committed to the store, so a subscriber never sees
// a result that a restart could lose. So that waits need not read the store back:
// - the owners of tasks submitted through this service are remembered until the tasks finish
//   (Expect), up to a number of tasks;
// - a record published while no stream watched its task is kept for a while (bounded by bytes
//   and age), for a stream that starts watching late.
// Claim answers from both; what it does not know is read from the store. Thread-safe.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "loom.pb.h"

namespace loom::service {

struct HubOptions {
  int64_t max_bytes = 64 << 20;  // unclaimed records (nobody watched them), for late watchers; 0: none
  // Unclaimed records are kept at most this long; it must stay below the store's result TTL (an
  // expired task's record must not be served from here).
  std::chrono::milliseconds max_age{10000};
  // Unfinished tasks whose owner is remembered; beyond it new ones are not. 0: none.
  int64_t max_expected = 200000;
};

class CompletionHub {
 public:
  explicit CompletionHub(HubOptions options = {}) : options_(options) {}

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
  // by one stream moves to it; one watched by several is copied to all but the last; one
  // watched by none is kept as unclaimed (see the class comment).
  void Publish(std::vector<v1::TaskRecord> records);
  // Tasks about to be committed, all owned by `owner`. Call it before they can be dispatched (a
  // task expected after its record was published would be taken for unfinished), and Unexpect
  // those that were not created after all.
  void Expect(const std::vector<std::string>& ids, const std::string& owner);
  void Unexpect(const std::vector<std::string>& ids);
  // What the hub knows of a task without the store.
  struct Known {
    std::optional<v1::TaskRecord> record;  // it finished while nobody watched: here is its record
    std::optional<std::string> owner;      // it has not finished (its record will be published)
  };
  // Per id, aligned with `ids`; neither set: ask the store. Unclaimed records are removed
  // (taken once). Subscribe first: a record published after this call goes to the subscription.
  std::vector<Known> Claim(const std::vector<std::string>& ids);
  // Drops the unclaimed records of deleted tasks.
  void Forget(const std::vector<std::string>& ids);
  int64_t unclaimed_bytes() const;
  size_t unclaimed_count() const;
  size_t expected_count() const;
  // Called with every published batch (e.g. to count a user's tasks in flight). Set before
  // anything publishes; it must be thread-safe and must not call back into the hub.
  void SetObserver(std::function<void(const std::vector<v1::TaskRecord>&)> observer) {
    observer_ = std::move(observer);
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Unclaimed {
    v1::TaskRecord record;
    Clock::time_point at;
    int64_t bytes = 0;
    uint64_t seq = 0;  // matches its entry in unclaimed_order_
  };
  void KeepUnclaimed(v1::TaskRecord record, Clock::time_point now);              // REQUIRES: mu_
  void EvictUnclaimed(Clock::time_point now);                                    // REQUIRES: mu_
  void EraseUnclaimed(std::unordered_map<std::string, Unclaimed>::iterator it);  // REQUIRES: mu_

  const HubOptions options_;
  mutable std::mutex mu_;
  // Who watches each task. An id of the service's form watched by one stream (the usual case)
  // is in watched_, by its 128 bits (IdKey below): no allocation, one slot per lookup. Further
  // streams watching the same id, and ids of other forms, are in more_watchers_.
  std::unordered_multimap<std::string, Subscription*> more_watchers_;  // GUARDED_BY(mu_)
  std::unordered_map<std::string, Unclaimed> unclaimed_;               // GUARDED_BY(mu_)
  std::deque<std::pair<uint64_t, std::string>> unclaimed_order_;       // GUARDED_BY(mu_): oldest first
  int64_t unclaimed_bytes_ = 0;                                        // GUARDED_BY(mu_)
  // Tasks expected to finish, by id -> owner. The service's ids are 32 hex digits (NewId), kept
  // as their 128 bits in a flat table, and owners as indices into owners_: an entry allocates
  // nothing, and a lookup touches one slot, not a node and a string elsewhere (this map is
  // consulted three times a task). An id of another form is not remembered.
  struct IdKey {
    uint64_t hi = 0, lo = 0;
    bool operator==(const IdKey&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const IdKey& k) {
      return H::combine(std::move(h), k.hi, k.lo);
    }
  };
  static std::optional<IdKey> KeyOf(std::string_view id);
  static std::vector<std::optional<IdKey>> KeysOf(const std::vector<std::string>& ids);
  absl::flat_hash_map<IdKey, Subscription*> watched_;       // GUARDED_BY(mu_)
  uint32_t OwnerIndex(const std::string& owner);            // REQUIRES: mu_
  absl::flat_hash_map<IdKey, uint32_t> expected_;           // GUARDED_BY(mu_): id -> owners_ index
  std::vector<std::string> owners_;                         // GUARDED_BY(mu_)
  absl::flat_hash_map<std::string, uint32_t> owner_index_;  // GUARDED_BY(mu_)
  uint64_t next_seq_ = 0;                                   // GUARDED_BY(mu_)
  std::function<void(const std::vector<v1::TaskRecord>&)> observer_;
};

}  // namespace loom::service
