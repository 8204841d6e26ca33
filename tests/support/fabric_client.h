// Helpers for integration tests that drive a LocalFabric through the C++ SDK.
#pragma once

#include <sys/types.h>

#include <memory>
#include <set>
#include <zmq.hpp>

#include "common/local_fabric.h"
#include "loom/client.h"

namespace loom::testing {

// A client of the fabric's service (10 s per call); fails the test if it cannot connect.
std::unique_ptr<Client> ConnectClient(const LocalFabric& fabric);
// Registers the worker's built-in kernels as functions of the same names: echo, add, sleep,
// fail, crash.
void RegisterBuiltins(Client& client);
// Connects `socket` (a DEALER) to the fabric's endpoint address as endpoint `id` would: in
// curve mode it enrolls `id` (once) and uses its key pair, so what it sends reaches the broker
// authenticated as `id`. Fails the test on error.
void ConnectAsEndpoint(LocalFabric& fabric, const std::string& id, zmq::socket_t& socket);
// Pids of the live processes whose parent is `parent` (an endpoint's workers).
std::set<pid_t> ChildPids(pid_t parent);

}  // namespace loom::testing
