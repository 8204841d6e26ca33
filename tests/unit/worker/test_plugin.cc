// Deliberately broken kernel plugins for plugin_loader_test.cc, one per compile definition:
//   LOOM_TEST_PLUGIN_NO_ENTRY    exports no loom_register_kernels
//   LOOM_TEST_PLUGIN_REFUSES     its entry point returns 3
//   LOOM_TEST_PLUGIN_BAD_KERNEL  registers one good kernel, then one without a version, and
//                                ignores the error (so the loader must notice it)
//   LOOM_TEST_PLUGIN_THROWS      its entry point throws
// Like any plugin, they link the shared loom_common and nothing else of Loom.
#include <stdexcept>

#include "common/kernel_api.h"

#if defined(LOOM_TEST_PLUGIN_NO_ENTRY)

extern "C" int loom_register_kernels_misspelled(loom::KernelRegistry*) { return 0; }

#else

namespace {
[[maybe_unused]] loom::Result<loom::Value> Nothing(const loom::KernelCall&) { return loom::NullValue(); }
}  // namespace

extern "C" int loom_register_kernels(loom::KernelRegistry* registry) {
#if defined(LOOM_TEST_PLUGIN_REFUSES)
  (void)registry;
  return 3;
#elif defined(LOOM_TEST_PLUGIN_BAD_KERNEL)
  (void)registry->Register({loom::MakeKernelInfo("good", "1", "fine", {}, loom::v1::VALUE_TYPE_NULL), Nothing});
  (void)registry->Register({loom::MakeKernelInfo("versionless", "", "bad", {}, loom::v1::VALUE_TYPE_NULL), Nothing});
  return 0;
#elif defined(LOOM_TEST_PLUGIN_THROWS)
  (void)registry;
  throw std::runtime_error("no licence for this detector");
#else
#error "define one of the LOOM_TEST_PLUGIN_* macros"
#endif
}

#endif
