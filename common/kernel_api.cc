#include "common/kernel_api.h"

#include <cstdlib>

namespace loom {

std::pair<std::string, std::string> SplitKernelRef(const std::string& ref) {
  auto at = ref.find('@');
  if (at == std::string::npos) return {ref, ""};
  return {ref.substr(0, at), ref.substr(at + 1)};
}

Status KernelRegistry::Register(KernelDef def) {
  const auto& info = def.info;
  if (info.name().empty() || info.version().empty()) return InvalidArgument("a kernel needs a name and a version");
  if (info.name().find('@') != std::string::npos) return InvalidArgument("kernel name may not contain '@'");
  if (!def.fn) return InvalidArgument("kernel '" + info.name() + "' has no function");
  std::string key = info.name() + "@" + info.version();
  if (kernels_.contains(key)) return AlreadyExists("kernel '" + key + "' is registered twice");
  kernels_.emplace(std::move(key), std::move(def));
  return Status::Ok();
}

const KernelDef* KernelRegistry::Find(const std::string& ref) const {
  auto [name, version] = SplitKernelRef(ref);
  if (!version.empty()) {
    auto it = kernels_.find(ref);
    return it == kernels_.end() ? nullptr : &it->second;
  }
  // The highest version: numeric when both versions are numbers (10 > 9), else by text.
  auto higher = [](const std::string& a, const std::string& b) {
    char* ea = nullptr;
    char* eb = nullptr;
    long long na = std::strtoll(a.c_str(), &ea, 10), nb = std::strtoll(b.c_str(), &eb, 10);
    if (!a.empty() && !b.empty() && *ea == '\0' && *eb == '\0') return na > nb;
    return a > b;
  };
  const KernelDef* best = nullptr;
  for (const auto& [key, def] : kernels_) {
    if (def.info.name() == name && (best == nullptr || higher(def.info.version(), best->info.version()))) best = &def;
  }
  return best;
}

std::vector<v1::KernelInfo> KernelRegistry::List() const {
  std::vector<v1::KernelInfo> out;
  for (const auto& [key, def] : kernels_) out.push_back(def.info);
  return out;
}

Result<Value> KernelRegistry::Run(const v1::TaskSpec& task) const {
  const KernelDef* def = Find(task.kernel());
  if (def == nullptr) {
    std::string known;
    for (const auto& [key, unused] : kernels_) known += (known.empty() ? "" : ", ") + key;
    return NotFound("kernel '" + task.kernel() + "' is not loaded in this worker; loaded: " + known);
  }
  LOOM_RETURN_IF_ERROR(ValidateArgs(def->info, task.args(), task.kwargs()));
  std::vector<const Value*> params(def->info.inputs_size(), nullptr);
  for (int i = 0; i < def->info.inputs_size(); ++i) {
    if (i < task.args_size()) {
      params[i] = &task.args(i);
    } else if (auto it = task.kwargs().find(def->info.inputs(i).name()); it != task.kwargs().end()) {
      params[i] = &it->second;
    }
  }
  KernelCall call{params, &task.config(), task.task_id(), &WarmCache::ForProcess()};
  return def->fn(call);
}

v1::ParamSpec Param(std::string name, v1::ValueType type, std::string description, bool optional) {
  v1::ParamSpec p;
  p.set_name(std::move(name));
  p.set_type(type);
  p.set_description(std::move(description));
  p.set_optional(optional);
  return p;
}

v1::KernelInfo MakeKernelInfo(std::string name, std::string version, std::string description,
                              std::vector<v1::ParamSpec> inputs, v1::ValueType output, std::string output_description) {
  v1::KernelInfo k;
  k.set_name(std::move(name));
  k.set_version(std::move(version));
  k.set_description(std::move(description));
  for (auto& p : inputs) *k.add_inputs() = std::move(p);
  k.set_output(output);
  k.set_output_description(std::move(output_description));
  return k;
}

}  // namespace loom
