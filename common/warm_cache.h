// WarmCache: state a worker keeps between invocations of its kernels (a loaded model, an FPGA
// bitstream, a calibration table), so that it is loaded once per worker process rather than
// once per task. Kernels reach it through KernelCall::cache (common/kernel_api.h):
//
//   auto model = call.cache->GetOrCreate<Model>("braggnn/weights-v3", [&]() -> Result<std::shared_ptr<Model>> {
//     return LoadModel(path);  // runs on the first call in this worker only
//   });
//
// Entries live until the worker exits (or Erase/Clear). The cache is per process: workers do
// not share it, and a worker that is replaced (crash, cancel, timeout) starts empty.
// Thread-safe; GetOrCreate runs `make` under the cache's lock, so two callers never load the
// same entry twice (a worker runs one task at a time, so nothing waits in practice).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <typeindex>
#include <unordered_map>

#include "common/status.h"

namespace loom {

class WarmCache {
 public:
  // The worker process's cache (one per process; plugins share it through libloom_common).
  static WarmCache& ForProcess();

  // The entry under `key`, made by `make` if absent. A failed `make` stores nothing and returns
  // its error (the next call tries again). An entry stored under another type is an error.
  template <typename T>
  Result<std::shared_ptr<T>> GetOrCreate(const std::string& key,
                                         const std::function<Result<std::shared_ptr<T>>()>& make) {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      if (it->second.type != std::type_index(typeid(T))) return TypeMismatch(key);
      ++hits_;
      return std::static_pointer_cast<T>(it->second.value);
    }
    ++misses_;
    auto made = make();
    if (!made.ok()) return made.status();
    if (*made == nullptr) return Internal("warm cache entry '" + key + "': the loader returned nothing");
    entries_.emplace(key, Entry{std::type_index(typeid(T)), *made});
    return *made;
  }
  // The entry under `key`, or nullptr when absent (or of another type).
  template <typename T>
  std::shared_ptr<T> Find(const std::string& key) const {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.type != std::type_index(typeid(T))) return nullptr;
    return std::static_pointer_cast<T>(it->second.value);
  }
  // Stores (or replaces) an entry.
  template <typename T>
  void Put(const std::string& key, std::shared_ptr<T> value) {
    std::lock_guard lock(mu_);
    entries_.insert_or_assign(key, Entry{std::type_index(typeid(T)), std::move(value)});
  }
  bool Erase(const std::string& key);
  void Clear();
  size_t size() const;
  // GetOrCreate calls that found their entry, and those that had to make it.
  int64_t hits() const;
  int64_t misses() const;

 private:
  struct Entry {
    std::type_index type;
    // shared_ptr: a kernel may hold an entry while another call erases or replaces it.
    std::shared_ptr<void> value;
  };
  static Status TypeMismatch(const std::string& key);

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // GUARDED_BY(mu_)
  int64_t hits_ = 0;                                // GUARDED_BY(mu_)
  int64_t misses_ = 0;                              // GUARDED_BY(mu_)
};

}  // namespace loom
