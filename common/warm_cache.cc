#include "common/warm_cache.h"

namespace loom {

WarmCache& WarmCache::ForProcess() {
  static WarmCache* cache = new WarmCache();  // never destroyed: kernels may use it during exit
  return *cache;
}

Status WarmCache::TypeMismatch(const std::string& key) {
  return FailedPrecondition("warm cache entry '" + key + "' holds a value of another type");
}

bool WarmCache::Erase(const std::string& key) {
  std::lock_guard lock(mu_);
  return entries_.erase(key) > 0;
}

void WarmCache::Clear() {
  std::lock_guard lock(mu_);
  entries_.clear();
}

size_t WarmCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

int64_t WarmCache::hits() const {
  std::lock_guard lock(mu_);
  return hits_;
}

int64_t WarmCache::misses() const {
  std::lock_guard lock(mu_);
  return misses_;
}

}  // namespace loom
