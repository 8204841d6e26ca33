#include "service/routing.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "common/kernel_api.h"
#include "service/task_store.h"

namespace loom::service {

namespace {

bool Listed(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& what) {
  return std::find(list.begin(), list.end(), what) != list.end();
}

template <typename List>
std::string Join(const List& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + std::string(s);
  return out;
}

// Field separator inside a route (the attempt history uses the same one, task_codec.h).
constexpr char kSep = '\x1f';  // Lua's "\31" (decimal)

}  // namespace

std::optional<std::string> GroupOf(const std::string& endpoint) {
  if (endpoint.rfind(kGroupPrefix, 0) != 0) return std::nullopt;
  return endpoint.substr(kGroupPrefix.size());
}

bool ValidDeviceClass(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' ||
           c == '_';
  });
}

Status CheckRequirements(const v1::Requirements& r) {
  if (r.device_classes_size() > 16) return InvalidArgument("a function may require at most 16 device classes");
  for (const auto& c : r.device_classes()) {
    if (!ValidDeviceClass(c)) {
      return InvalidArgument("required device class '" + c +
                             "' is invalid: use 1-64 lowercase letters, digits, '-' or '_' (e.g. gpu, fpga)");
    }
  }
  return Status::Ok();
}

std::string MissingCapability(const v1::EndpointRecord& ep, const v1::Function& fn) {
  if (ep.kernels_size() > 0) {
    const auto [name, version] = SplitKernelRef(fn.kernel());
    std::vector<std::string> versions;
    bool found = false;
    for (const auto& k : ep.kernels()) {
      if (k.name() != name) continue;
      if (k.version() == version) found = true;
      versions.push_back(k.version());
    }
    if (!found) {
      if (!versions.empty()) {
        return "endpoint '" + ep.id() + "' offers kernel '" + name + "' only at version " + Join(versions) + ", not '" +
               fn.kernel() + "' (function '" + fn.name() + "')";
      }
      std::vector<std::string> offered;
      for (const auto& k : ep.kernels()) offered.push_back(k.name() + "@" + k.version());
      return "endpoint '" + ep.id() + "' does not offer kernel '" + fn.kernel() + "' (function '" + fn.name() +
             "'); it offers: " + Join(offered);
    }
  }
  // Devices are known once the endpoint registered (it advertises at least its CPUs).
  if (ep.devices_size() == 0 && ep.kernels_size() == 0) return "";
  for (const auto& cls : fn.requirements().device_classes()) {
    bool have = false;
    for (const auto& d : ep.devices()) have = have || (d.kind() == cls && d.count() > 0);
    if (!have) {
      std::set<std::string> classes;
      for (const auto& d : ep.devices()) classes.insert(d.kind());
      return "endpoint '" + ep.id() + "' has no device of class '" + cls + "', which function '" + fn.name() +
             "' requires; it has: " + (classes.empty() ? std::string("none") : Join(classes));
    }
  }
  return "";
}

bool MayUseEndpoint(const v1::EndpointRecord& e, const Principal& who) {
  return who.admin || e.owner() == who.user || Listed(e.allowed_users(), who.user) || Listed(e.allowed_users(), "*");
}

bool EndpointAllowsFunction(const v1::EndpointRecord& e, const v1::Function& fn) {
  if (e.allowed_functions_size() == 0) return true;
  return Listed(e.allowed_functions(), FunctionKey(fn)) ||
         (fn.owner() == e.owner() && Listed(e.allowed_functions(), fn.name()));
}

GroupMember* PickLeastLoaded(std::vector<GroupMember>& members) {
  GroupMember* best = nullptr;
  for (auto& m : members) {
    // Compare waiting/workers without division: a.waiting * b.workers < b.waiting * a.workers.
    if (best == nullptr) {
      best = &m;
      continue;
    }
    const int64_t mw = std::max(1, m.record->worker_count());
    const int64_t bw = std::max(1, best->record->worker_count());
    if (m.waiting * bw < best->waiting * mw) best = &m;
  }
  return best;
}

std::string EncodeFailoverRoute(const FailoverRoute& r) {
  std::string out = r.kernel;
  out += kSep;
  out += r.function_key;
  out += kSep;
  for (size_t i = 0; i < r.device_classes.size(); ++i) out += (i ? "," : "") + r.device_classes[i];
  return out;
}

FailoverRoute DecodeFailoverRoute(const std::string& s) {
  FailoverRoute r;
  const size_t a = s.find(kSep);
  r.kernel = s.substr(0, a);
  if (a == std::string::npos) return r;
  const size_t b = s.find(kSep, a + 1);
  r.function_key = s.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
  if (b == std::string::npos) return r;
  std::string classes = s.substr(b + 1);
  size_t start = 0;
  while (start < classes.size()) {
    size_t comma = classes.find(',', start);
    if (comma == std::string::npos) comma = classes.size();
    if (comma > start) r.device_classes.push_back(classes.substr(start, comma - start));
    start = comma + 1;
  }
  return r;
}

FailoverTarget MakeFailoverTarget(const v1::EndpointRecord& e) {
  FailoverTarget t;
  t.endpoint = e.id();
  for (const auto& k : e.kernels()) t.kernels.push_back(k.name() + "@" + k.version());
  std::set<std::string> classes;
  for (const auto& d : e.devices()) {
    if (d.count() > 0) classes.insert(d.kind());
  }
  t.device_classes.assign(classes.begin(), classes.end());
  if (!Listed(e.allowed_users(), "*")) {
    t.users.push_back(e.owner());
    t.users.insert(t.users.end(), e.allowed_users().begin(), e.allowed_users().end());
  }
  for (const auto& f : e.allowed_functions()) {
    t.functions.push_back(f.find('/') == std::string::npos ? FunctionKey(e.owner(), f) : f);
  }
  return t;
}

bool FailoverAdmits(const FailoverTarget& target, const FailoverRoute& route, const std::string& owner) {
  auto has = [](const std::vector<std::string>& v, const std::string& x) {
    return std::find(v.begin(), v.end(), x) != v.end();
  };
  if (!has(target.kernels, route.kernel)) return false;
  if (!target.users.empty() && !has(target.users, owner)) return false;
  if (!target.functions.empty() && (route.function_key.empty() || !has(target.functions, route.function_key))) {
    return false;
  }
  for (const auto& c : route.device_classes) {
    if (!has(target.device_classes, c)) return false;
  }
  return true;
}

}  // namespace loom::service
