// AllocatorName() in two binaries built from this file: common_allocator_test links glibc's
// malloc only, common_allocator_jemalloc_test links loom_malloc as Loom's executables do
// (jemalloc unless LOOM_JEMALLOC is off or the build uses sanitizers).
#include "common/allocator.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>

namespace loom {
namespace {

TEST(AllocatorTest, NamesTheMallocThatReallyServesThisProcess) {
  const std::string name = AllocatorName();
  if (name == "sanitizer malloc") GTEST_SKIP() << "a sanitizer build: its malloc replaces both";
#if LOOM_EXPECT_JEMALLOC
  EXPECT_EQ(name.rfind("jemalloc 5.", 0), 0u) << name;
#else
  EXPECT_EQ(name.rfind("glibc ", 0), 0u) << name;
  EXPECT_NE(name.find(" malloc"), std::string::npos) << name;
#endif
}

TEST(AllocatorTest, IsComputedOnceAndIsTheSameOnEveryThread) {
  const std::string* here = &AllocatorName();
  const std::string* there = nullptr;
  std::thread([&] { there = &AllocatorName(); }).join();
  EXPECT_EQ(here, there);
}

}  // namespace
}  // namespace loom
