// Shared helpers for tests that start real processes: where the binaries are, a fresh
// temporary state directory per fabric, and waiting on a condition with a deadline.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/local_fabric.h"

namespace loom::testing {

// build/bin, baked in at configure time.
std::string BinDir();
// A new empty directory under the system temp dir.
std::string MakeTempDir(const std::string& prefix);

// A temporary directory removed with this object (kept for post-mortem when
// LOOM_KEEP_TEST_STATE is set).
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) : path_(MakeTempDir(prefix)) {}
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};
std::unique_ptr<LocalFabric> MakeFabric(const std::string& name, std::vector<std::string> service_args = {});
// Polls `condition` until it holds or `timeout` passes; returns whether it held.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

}  // namespace loom::testing
