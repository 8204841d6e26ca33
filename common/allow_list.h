// An endpoint's allow-list: who may run tasks on it, and which functions. The owner always may;
// `users` adds others ("*": every user); when `functions` is not empty, only the functions it
// lists may run ("name": the owner's function `name`; "user/name": that user's function).
// The service checks it at submit; the endpoint checks it again on every task it receives, so
// a task that bypassed the service (or a compromised service) cannot run code the endpoint's
// owner did not allow.
//
//   AllowList list{.endpoint_id = "gpu-1", .owner = "alice", .users = {"bob"}, .functions = {"echo"}};
//   if (auto no = CheckAllowList(list, spec.owner(), spec.function(), spec.function_owner())) reject(no->message);
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace loom {

struct AllowList {
  std::string endpoint_id{};
  std::string owner{};
  std::vector<std::string> users{};
  std::vector<std::string> functions{};
};

struct AllowRefusal {
  enum class Kind { kUser, kFunction };
  Kind kind;
  // "endpoint 'ID' does not accept tasks of user 'U'" or "... of function 'F'".
  std::string message;
};

// nullopt when `user` may run `function` (registered by `function_owner`) on the endpoint.
std::optional<AllowRefusal> CheckAllowList(const AllowList& list, std::string_view user, std::string_view function,
                                           std::string_view function_owner);

// INVALID_ARGUMENT, naming the entry, when one is malformed: users
// are non-empty names without '/' (or "*"), functions are "name" or "user/name".
Status ValidateAllowList(const std::vector<std::string>& users, const std::vector<std::string>& functions);

}  // namespace loom
