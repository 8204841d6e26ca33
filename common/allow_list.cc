#include "common/allow_list.h"

#include <algorithm>

namespace loom {

std::optional<AllowRefusal> CheckAllowList(const AllowList& list, std::string_view user, std::string_view function,
                                           std::string_view function_owner) {
  const auto has = [](const std::vector<std::string>& v, std::string_view s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  if (user.empty() || (user != list.owner && !has(list.users, "*") && !has(list.users, user))) {
    return AllowRefusal{AllowRefusal::Kind::kUser, "endpoint '" + list.endpoint_id +
                                                       "' does not accept tasks of user '" + std::string(user) + "'"};
  }
  if (list.functions.empty()) return std::nullopt;
  for (const auto& entry : list.functions) {
    const auto slash = entry.find('/');
    const std::string_view entry_owner =
        slash == std::string::npos ? std::string_view(list.owner) : std::string_view(entry).substr(0, slash);
    const std::string_view entry_name =
        slash == std::string::npos ? std::string_view(entry) : std::string_view(entry).substr(slash + 1);
    if (entry_name == function && entry_owner == function_owner) return std::nullopt;
  }
  const std::string named =
      function_owner.empty() ? std::string(function) : std::string(function_owner) + "/" + std::string(function);
  return AllowRefusal{AllowRefusal::Kind::kFunction,
                      "endpoint '" + list.endpoint_id + "' does not accept tasks of function '" + named + "'"};
}

Status ValidateAllowList(const std::vector<std::string>& users, const std::vector<std::string>& functions) {
  for (const auto& u : users) {
    if (u.empty() || u.find('/') != std::string::npos) {
      return InvalidArgument("allowed user '" + u + "' is invalid: use a user name, or * for every user");
    }
  }
  for (const auto& f : functions) {
    const auto slash = f.find('/');
    const bool ok = !f.empty() && (slash == std::string::npos ||
                                   (slash > 0 && slash + 1 < f.size() && f.find('/', slash + 1) == std::string::npos));
    if (!ok) {
      return InvalidArgument("allowed function '" + f + "' is invalid: use NAME (the owner's function) or USER/NAME");
    }
  }
  return Status::Ok();
}

}  // namespace loom
