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
// A new empty directory under the system temp dir (kept for post-mortem only when
// LOOM_KEEP_TEST_STATE is set).
std::string MakeTempDir(const std::string& prefix);
std::unique_ptr<LocalFabric> MakeFabric(const std::string& name, std::vector<std::string> service_args = {});
// Polls `condition` until it holds or `timeout` passes; returns whether it held.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

}  // namespace loom::testing
