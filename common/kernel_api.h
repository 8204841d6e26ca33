// The kernel interface: what a kernel is (name, version, inputs, output: v1::KernelInfo) and
// the function that computes it. Built-in kernels, the science kernels and user plugins all
// register through KernelRegistry.
//
// A plugin is a shared library with one C entry point:
//
//   extern "C" int loom_register_kernels(loom::KernelRegistry* registry) {
//     registry->Register({info, [](const loom::KernelCall& call) -> loom::Result<loom::Value> {...}});
//     return 0;  // non-zero: the plugin refused to load
//   }
//
// A plugin is built against these headers and links the shared libloom_common (which brings
// libloom_proto and libprotobuf): the worker that loads it uses the same shared libraries, so
// there is one copy of every Loom and protobuf symbol in the process.
#pragma once

#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/value.h"
#include "common/warm_cache.h"

namespace loom {

// One invocation's inputs, already checked against the kernel's KernelInfo.
struct KernelCall {
  // params[i] is the value for KernelInfo.inputs(i), or nullptr if an optional one was omitted.
  std::span<const Value* const> params;
  const google::protobuf::Map<std::string, Value>* config = nullptr;  // the function's defaults
  std::string task_id;
  // State kept between invocations in this worker process (models, bitstreams): see
  // common/warm_cache.h. Set by KernelRegistry::Run (the process's cache); never null there.
  WarmCache* cache = nullptr;

  // The parameter's value, or nullptr if an optional parameter was omitted.
  const Value* param(size_t i) const { return i < params.size() ? params[i] : nullptr; }
};

// A non-OK Result becomes a failed task carrying the status message.
using KernelFn = std::function<Result<Value>(const KernelCall&)>;

struct KernelDef {
  v1::KernelInfo info;
  KernelFn fn;
};

// Kernels by "name@version". Register is virtual so plugins call it without linking Loom.
// Not thread-safe: fill it at start-up, then only read.
class KernelRegistry {
 public:
  virtual ~KernelRegistry() = default;
  virtual Status Register(KernelDef def);

  // Looks up "name@version" (or "name", meaning the highest registered version).
  const KernelDef* Find(const std::string& ref) const;
  std::vector<v1::KernelInfo> List() const;
  // Checks a task's arguments and runs the kernel.
  Result<Value> Run(const v1::TaskSpec& task) const;

 private:
  std::map<std::string, KernelDef> kernels_;  // key: name@version
};

// Small helpers for building KernelInfo.
v1::ParamSpec Param(std::string name, v1::ValueType type, std::string description, bool optional = false);
v1::KernelInfo MakeKernelInfo(std::string name, std::string version, std::string description,
                              std::vector<v1::ParamSpec> inputs, v1::ValueType output,
                              std::string output_description = "");

// Splits "name@version"; version is empty when absent.
std::pair<std::string, std::string> SplitKernelRef(const std::string& ref);

}  // namespace loom

extern "C" {
// The plugin entry point's signature and symbol name.
typedef int (*LoomRegisterKernelsFn)(loom::KernelRegistry* registry);
}
#define LOOM_PLUGIN_ENTRY_SYMBOL "loom_register_kernels"
