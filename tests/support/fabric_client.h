// Helpers for integration tests that drive a LocalFabric through the C++ SDK.
#pragma once

#include <sys/types.h>

#include <memory>
#include <set>

#include "common/local_fabric.h"
#include "loom/client.h"

namespace loom::testing {

// A client of the fabric's service (10 s per call); fails the test if it cannot connect.
std::unique_ptr<Client> ConnectClient(const LocalFabric& fabric);
// Registers the worker's built-in kernels as functions of the same names: echo, add, sleep,
// fail, crash.
void RegisterBuiltins(Client& client);
// Pids of the live processes whose parent is `parent` (an endpoint's workers).
std::set<pid_t> ChildPids(pid_t parent);

}  // namespace loom::testing
