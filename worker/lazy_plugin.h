// A kernel plugin loaded on first use. The worker registers the plugin's kernel descriptions at
// start-up (so its endpoint advertises them and submits are checked against them) and loads the
// shared library only when one of those kernels is first called. A worker that never runs them
// never pays for the library and what it links (for the vision kernels, OpenCV and GDAL: about
// 40 MiB and 0.2 s per worker process).
//
// The first call loads the library into a registry of its own (LoadPlugin: all or nothing) and
// every later call goes straight to the loaded kernel. A library that cannot be loaded, or that
// lacks one of the announced kernels, fails each call of that kernel with a message naming the
// library and what was wrong; the worker keeps serving other kernels. Thread-safe.
#pragma once

#include <string>
#include <vector>

#include "common/kernel_api.h"
#include "common/status.h"

namespace loom::worker {

// Registers `infos` into `registry`, each backed by the kernel of the same name@version in the
// plugin at `path`, loaded on the first call of any of them.
Status RegisterLazyPlugin(KernelRegistry* registry, const std::string& path, const std::vector<v1::KernelInfo>& infos);

// Whether the plugin at `path` has been loaded by a lazy registration in this process.
bool LazyPluginLoaded(const std::string& path);

}  // namespace loom::worker
