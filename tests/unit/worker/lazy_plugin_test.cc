// Tests for worker/lazy_plugin.h with the example plugin (stats@1). A test executable of its own,
// built like loom-worker (loom_host_plugins), so nothing else in the process loads the plugin
// before the lazy registration does.
#include "worker/lazy_plugin.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "common/kernel_api.h"
#include "common/value.h"
#include "worker/builtin_kernels.h"

namespace loom::worker {
namespace {

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

v1::KernelInfo StatsInfo() {
  return MakeKernelInfo("stats", "1", "announced without loading the plugin",
                        {Param("values", v1::VALUE_TYPE_TENSOR, "a non-empty numeric tensor")}, v1::VALUE_TYPE_MAP);
}

v1::TaskSpec Task(const std::string& kernel, Value arg) {
  v1::TaskSpec spec;
  spec.set_task_id("t1");
  spec.set_kernel(kernel);
  *spec.add_args() = std::move(arg);
  return spec;
}

Value Floats(std::vector<float> v) { return TensorValue({static_cast<int64_t>(v.size())}, std::span<const float>(v)); }

bool InProcess(const char* path) {
  void* h = ::dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (h != nullptr) ::dlclose(h);
  return h != nullptr;
}

TEST(LazyPluginTest, AdvertisesAtOnceAndLoadsOnTheFirstCallOnly) {
  KernelRegistry registry;
  ASSERT_TRUE(RegisterLazyPlugin(&registry, LOOM_EXAMPLE_PLUGIN_PATH, {StatsInfo()}).ok());
  ASSERT_NE(registry.Find("stats@1"), nullptr);
  EXPECT_EQ(registry.Find("stats@1")->info.description(), "announced without loading the plugin");
  EXPECT_FALSE(LazyPluginLoaded(LOOM_EXAMPLE_PLUGIN_PATH));
  EXPECT_FALSE(InProcess(LOOM_EXAMPLE_PLUGIN_PATH));
  // A call whose arguments are refused before the kernel runs does not load it either.
  EXPECT_FALSE(registry.Run(Task("stats@1", IntValue(3))).ok());
  EXPECT_FALSE(InProcess(LOOM_EXAMPLE_PLUGIN_PATH));

  // Several first calls at once: one load, every call answered by the plugin's kernel.
  std::vector<Result<Value>> got(4, Internal("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = registry.Run(Task("stats@1", Floats({1, 2, 3, 6}))); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : got) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_DOUBLE_EQ(r->map_value().entries().at("mean").double_value(), 3.0);
    EXPECT_EQ(r->map_value().entries().at("count").int_value(), 4);
  }
  EXPECT_TRUE(LazyPluginLoaded(LOOM_EXAMPLE_PLUGIN_PATH));
  EXPECT_TRUE(InProcess(LOOM_EXAMPLE_PLUGIN_PATH));
}

TEST(LazyPluginTest, ALibraryThatCannotLoadFailsItsKernelsWithTheReasonAndNothingElse) {
  KernelRegistry registry;
  ASSERT_TRUE(RegisterBuiltinKernels(&registry).ok());
  const std::string missing = "/nonexistent/libloom_missing.so";
  ASSERT_TRUE(RegisterLazyPlugin(&registry, missing, {StatsInfo()}).ok());
  for (int i = 0; i < 2; ++i) {  // the failure stays: no retry per call
    auto r = registry.Run(Task("stats@1", Floats({1})));
    ASSERT_FALSE(r.ok());
    EXPECT_CONTAINS(r.status().message(), "stats@1 is not available on this worker");
    EXPECT_CONTAINS(r.status().message(), missing);
  }
  EXPECT_FALSE(LazyPluginLoaded(missing));
  auto echo = registry.Run(Task("echo@1", IntValue(7)));
  ASSERT_TRUE(echo.ok()) << echo.status().ToString();
  EXPECT_EQ(echo->int_value(), 7);
}

TEST(LazyPluginTest, AKernelThePluginDoesNotProvideIsAnErrorNamingIt) {
  KernelRegistry registry;
  v1::KernelInfo other = StatsInfo();
  other.set_version("9");
  ASSERT_TRUE(RegisterLazyPlugin(&registry, LOOM_EXAMPLE_PLUGIN_PATH, {other}).ok());
  auto r = registry.Run(Task("stats@9", Floats({1})));
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(), "stats@9 is announced but");
  EXPECT_CONTAINS(r.status().message(), "does not provide it");
}

TEST(LazyPluginTest, RegisteringAnAnnouncedKernelTwiceIsRefused) {
  KernelRegistry registry;
  ASSERT_TRUE(RegisterBuiltinKernels(&registry).ok());
  v1::KernelInfo echo = StatsInfo();
  echo.set_name("echo");
  EXPECT_FALSE(RegisterLazyPlugin(&registry, LOOM_EXAMPLE_PLUGIN_PATH, {echo}).ok());
}

}  // namespace
}  // namespace loom::worker
