#include "worker/lazy_plugin.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>

#include "worker/plugin_loader.h"

namespace loom::worker {
namespace {

struct Loaded {
  std::once_flag once;
  Status status = Status::Ok();
  KernelRegistry registry;  // the plugin's kernels, filled once
  std::atomic<bool> loaded{false};
};

std::mutex g_mu;
std::map<std::string, std::shared_ptr<Loaded>>& Plugins() {  // GUARDED_BY(g_mu)
  static auto* plugins = new std::map<std::string, std::shared_ptr<Loaded>>();
  return *plugins;
}

std::shared_ptr<Loaded> PluginAt(const std::string& path) {
  std::lock_guard lock(g_mu);
  auto& p = Plugins()[path];
  if (!p) p = std::make_shared<Loaded>();
  return p;
}

}  // namespace

Status RegisterLazyPlugin(KernelRegistry* registry, const std::string& path, const std::vector<v1::KernelInfo>& infos) {
  std::shared_ptr<Loaded> plugin = PluginAt(path);
  for (const auto& info : infos) {
    const std::string ref = info.name() + "@" + info.version();
    LOOM_RETURN_IF_ERROR(registry->Register(
        {info, [plugin, path, ref](const KernelCall& call) -> Result<Value> {
           std::call_once(plugin->once, [&] {
             const auto t0 = std::chrono::steady_clock::now();
             plugin->status = LoadPlugin(path, &plugin->registry);
             const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
             if (plugin->status.ok()) {
               plugin->loaded = true;
               spdlog::info("loaded {} on the first call of {} ({:.0f} ms)", path, ref, ms);
             } else {
               spdlog::error("cannot load {} for {}: {}", path, ref, plugin->status.message());
             }
           });
           if (!plugin->status.ok()) {
             return Internal("kernel " + ref + " is not available on this worker: " + plugin->status.message());
           }
           const KernelDef* def = plugin->registry.Find(ref);
           if (def == nullptr) return Internal("kernel " + ref + " is announced but " + path + " does not provide it");
           return def->fn(call);
         }}));
  }
  return Status::Ok();
}

bool LazyPluginLoaded(const std::string& path) {
  std::shared_ptr<Loaded> plugin;
  {
    std::lock_guard lock(g_mu);
    auto it = Plugins().find(path);
    if (it == Plugins().end()) return false;
    plugin = it->second;
  }
  return plugin->loaded;
}

}  // namespace loom::worker
