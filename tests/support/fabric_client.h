// Helpers for integration tests that drive a LocalFabric through the C++ SDK.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>
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
// Submits `function` with `args` and `kwargs` to `endpoint` and waits up to `timeout` for it to
// end; fails the test (and returns an empty record) when the submit fails or it does not end.
v1::TaskRecord SubmitAndWait(Client& client, const std::string& endpoint, const std::string& function,
                             std::vector<Value> args, const Kwargs& kwargs = {},
                             std::chrono::milliseconds timeout = std::chrono::seconds(60));
// Runs the `loom` command-line tool at `cli` with `--service` and `--token-file` of the fabric
// and then `args`; returns its exit code (-1 when it did not exit in 60 s) and its output.
std::pair<int, std::string> RunCli(const LocalFabric& fabric, const std::string& cli, std::vector<std::string> args);
// Pids of the live processes whose parent is `parent` (an endpoint's workers).
std::set<pid_t> ChildPids(pid_t parent);

}  // namespace loom::testing
