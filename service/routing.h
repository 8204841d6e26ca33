// Capability routing: whether an endpoint can run a function (kernel, version, device classes,
// its allow-lists), which member of an endpoint group a task goes to, and the route a task
// carries so that failover moves it only to an endpoint that could have taken it at submit.
//
// Pure functions on records; no I/O. Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"
#include "service/auth.h"

namespace loom::service {

// A submit names a group instead of one endpoint with this prefix: "group:NAME".
inline constexpr std::string_view kGroupPrefix = "group:";
// The group named by `endpoint` ("group:NAME" -> "NAME"), or nullopt for a plain endpoint id.
std::optional<std::string> GroupOf(const std::string& endpoint);

// 1-64 lowercase letters, digits, '-' or '_'.
bool ValidDeviceClass(const std::string& s);
// Checks a function's requirements at registration.
Status CheckRequirements(const v1::Requirements& r);

// Why `ep` cannot run `fn`'s kernel on the hardware it advertised, or "" when it can: the kernel
// missing, offered only at other versions, or a required device class absent. An endpoint that
// has not reported its kernels yet (never connected) lacks nothing it could be checked for.
std::string MissingCapability(const v1::EndpointRecord& ep, const v1::Function& fn);

// The owner, an admin, and the users on its allow-list may use an endpoint.
bool MayUseEndpoint(const v1::EndpointRecord& e, const Principal& who);
// An empty function list admits every function of an allowed user; "name" is a function of the
// endpoint's owner, "user/name" one of another user.
bool EndpointAllowsFunction(const v1::EndpointRecord& e, const v1::Function& fn);

// One live member of a group, with its load when the submit looked.
struct GroupMember {
  const v1::EndpointRecord* record = nullptr;
  int64_t waiting = 0;  // queued plus in flight, including the tasks this batch already gave it
};
// The member with the fewest tasks per worker (ties: the first given); nullptr when empty.
GroupMember* PickLeastLoaded(std::vector<GroupMember>& members);

// The route of a task that may fail over (the task's field `g`): its kernel, its function
// ("owner/name") and the device classes it needs, so that a lost endpoint's tasks move only to
// a member that offers the kernel and the devices and admits the task's user and function.
struct FailoverRoute {
  std::string kernel;
  std::string function_key;
  std::vector<std::string> device_classes;
};
std::string EncodeFailoverRoute(const FailoverRoute& r);
// A route written before function and devices were part of it is its kernel alone.
FailoverRoute DecodeFailoverRoute(const std::string& s);

// What a failover target admits, for TaskStore::FailoverQueued.
struct FailoverTarget {
  std::string endpoint;
  std::vector<std::string> kernels;         // "name@version" offered
  std::vector<std::string> device_classes;  // classes it has at least one device of
  // Users whose tasks it takes (owner and allow-list); empty: every user ("*").
  std::vector<std::string> users;
  // Function keys ("owner/name") it runs; empty: every function.
  std::vector<std::string> functions;
  int64_t max_moved = 0;  // the most tasks to move to it; 0: no limit
};
FailoverTarget MakeFailoverTarget(const v1::EndpointRecord& e);
// Whether a task with `route`, submitted by `owner`, may move to `target`.
bool FailoverAdmits(const FailoverTarget& target, const FailoverRoute& route, const std::string& owner);

}  // namespace loom::service
