// Loads kernel plugins: shared libraries exporting `extern "C" int loom_register_kernels(
// loom::KernelRegistry*)` (see common/kernel_api.h). A plugin links the shared libloom_common
// (and through it libloom_proto and libprotobuf), the same libraries the loading executable
// uses, so the process holds one copy of every Loom and protobuf symbol (see
// loom_host_plugins() in worker/CMakeLists.txt).
//
// Plugin handles are never closed: kernels, and objects their code allocated, may be used until
// the process ends, and a plugin's static destructors must not outlive its code.
//
// Not thread-safe (dlerror() is per thread, but the registry is not): load at start-up.
#pragma once

#include <string>
#include <vector>

#include "common/kernel_api.h"
#include "common/status.h"

namespace loom::worker {

// Loads the plugin at `path` and registers its kernels into `registry`, all or nothing: a plugin
// whose entry point fails, or that registers one bad or duplicate kernel, adds no kernel.
// Errors name the path and say what was wrong: the file cannot be loaded (with dlerror's text),
// the entry symbol is missing, the entry returned non-zero or threw, or a registration failed.
Status LoadPlugin(const std::string& path, KernelRegistry* registry);

// The paths of the *.so files directly inside `dir`, sorted, so that load order (and which of two
// plugins registering the same kernel wins) does not depend on the file system.
Result<std::vector<std::string>> PluginsInDir(const std::string& dir);

}  // namespace loom::worker
