#include "worker/plugin_loader.h"

#include <dlfcn.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <system_error>
#include <utility>

namespace loom::worker {
namespace {

// Collects what a plugin registers so LoadPlugin can check it all before committing any of it.
// The plugin calls Register through the vtable, so this override is what it reaches.
class StagingRegistry : public KernelRegistry {
 public:
  explicit StagingRegistry(const KernelRegistry& target) : target_(target) {}

  Status Register(KernelDef def) override {
    const std::string key = def.info.name() + "@" + def.info.version();
    // The base class checks the definition itself and duplicates within this plugin.
    Status s = KernelRegistry::Register(def);
    if (s.ok() && target_.Find(key) != nullptr) s = AlreadyExists("kernel '" + key + "' is already registered");
    if (!s.ok()) {
      if (first_error_.ok()) first_error_ = s;
      return s;
    }
    staged_.push_back(std::move(def));
    return Status::Ok();
  }

  const Status& first_error() const { return first_error_; }
  std::vector<KernelDef>& staged() { return staged_; }

 private:
  const KernelRegistry& target_;
  std::vector<KernelDef> staged_;
  Status first_error_;
};

std::string DlError() {
  const char* e = ::dlerror();
  return e != nullptr ? e : "unknown dlopen error";
}

}  // namespace

Status LoadPlugin(const std::string& path, KernelRegistry* registry) {
  const std::string who = "plugin '" + path + "'";
  ::dlerror();  // clear a stale error
  // RTLD_NOW: an unresolved symbol fails here, with a message naming it, not in the middle of a
  // task. RTLD_LOCAL: two plugins may define the same helper symbols without clashing.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return InvalidArgument("cannot load " + who + ": " + DlError());
  ::dlerror();
  void* sym = ::dlsym(handle, LOOM_PLUGIN_ENTRY_SYMBOL);
  if (sym == nullptr) {
    return InvalidArgument(who + " has no entry point '" LOOM_PLUGIN_ENTRY_SYMBOL
                           "'; define extern \"C\" int " LOOM_PLUGIN_ENTRY_SYMBOL "(loom::KernelRegistry*) in it");
  }
  auto entry = reinterpret_cast<LoomRegisterKernelsFn>(sym);
  StagingRegistry staging(*registry);
  int rc = 0;
  try {
    rc = entry(&staging);
  } catch (const std::exception& e) {
    return Internal(who + ": " LOOM_PLUGIN_ENTRY_SYMBOL " threw: " + e.what());
  } catch (...) {
    return Internal(who + ": " LOOM_PLUGIN_ENTRY_SYMBOL " threw an unknown exception");
  }
  // A failed registration explains more than the non-zero return it usually leads to.
  if (!staging.first_error().ok()) {
    return InvalidArgument(who + ": registering a kernel failed: " + staging.first_error().message());
  }
  if (rc != 0) {
    return FailedPrecondition(who + ": " LOOM_PLUGIN_ENTRY_SYMBOL " returned " + std::to_string(rc) +
                              " (the plugin refused to load; see its log output)");
  }
  for (auto& def : staging.staged()) {
    // Cannot fail: StagingRegistry already ran the same checks against `registry`.
    Status s = registry->Register(std::move(def));
    LOOM_CHECK(s.ok());
  }
  return Status::Ok();
}

Result<std::vector<std::string>> PluginsInDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("plugin directory '" + dir + "' does not exist or is not a directory");
  std::vector<std::string> out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code file_ec;
    if (it->path().extension() == ".so" && it->is_regular_file(file_ec)) out.push_back(it->path().string());
  }
  if (ec) return Unavailable("cannot list plugin directory '" + dir + "': " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace loom::worker
