#include "common/allocator.h"

#include <dlfcn.h>
#include <gnu/libc-version.h>

#include <cstdint>
#include <cstdlib>

namespace loom {
namespace {

// jemalloc's control interface, looked up at run time so that this file builds and links
// without jemalloc (the sanitizer builds, LOOM_JEMALLOC=OFF).
using Mallctl = int (*)(const char* name, void* oldp, size_t* oldlenp, void* newp, size_t newlen);

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LOOM_SANITIZER_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LOOM_SANITIZER_MALLOC 1
#endif
#endif

std::string Probe() {
#ifdef LOOM_SANITIZER_MALLOC
  return "sanitizer malloc";  // ASan's or TSan's, which replace every other
#endif
  const std::string glibc = std::string("glibc ") + gnu_get_libc_version() + " malloc";
  auto* mallctl = reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"));
  if (mallctl == nullptr) return glibc;
  // A library could export mallctl while malloc itself stays glibc's: ask jemalloc whether it
  // saw an allocation made through plain malloc.
  auto allocated = [&]() -> uint64_t {
    uint64_t v = 0;
    size_t len = sizeof(v);
    return mallctl("thread.allocated", &v, &len, nullptr, 0) == 0 ? v : 0;
  };
  const uint64_t before = allocated();
  void* volatile p = std::malloc(4096);
  const uint64_t after = allocated();
  std::free(p);
  if (after < before + 4096) return glibc;
  const char* version = nullptr;
  size_t len = sizeof(version);
  if (mallctl("version", static_cast<void*>(&version), &len, nullptr, 0) != 0 || version == nullptr) {
    return "jemalloc";
  }
  std::string v(version);
  return "jemalloc " + v.substr(0, v.find('-'));  // "5.3.0-0-g54eaed1d..." -> "5.3.0"
}

}  // namespace

const std::string& AllocatorName() {
  static const std::string name = Probe();
  return name;
}

}  // namespace loom
