// Tests for worker/plugin_loader.h against real shared libraries: the example plugin
// (kernels/plugins/example) and the deliberately broken ones built from test_plugin.cc. This test
// executable is built like loom-worker (loom_host_plugins), so the plugins share its Loom and
// protobuf libraries exactly as they do in production.
#include "worker/plugin_loader.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/kernel_api.h"
#include "common/value.h"
#include "worker/builtin_kernels.h"

namespace loom::worker {
namespace {

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

v1::TaskSpec StatsTask(Value values) {
  v1::TaskSpec spec;
  spec.set_task_id("t-stats");
  spec.set_kernel("stats@1");
  *spec.add_args() = std::move(values);
  return spec;
}

class ExamplePluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status s = LoadPlugin(LOOM_EXAMPLE_PLUGIN_PATH, &registry_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // The stats map of a run that must succeed.
  google::protobuf::Map<std::string, Value> Stats(Value values) {
    auto r = registry_.Run(StatsTask(std::move(values)));
    EXPECT_TRUE(r.ok()) << r.status().message();
    if (!r.ok() || !r->has_map_value()) return {};
    return r->map_value().entries();
  }

  KernelRegistry registry_;
};

TEST_F(ExamplePluginTest, RegistersStatsWithADescribedTensorInput) {
  const KernelDef* stats = registry_.Find("stats@1");
  ASSERT_NE(stats, nullptr);
  EXPECT_FALSE(stats->info.description().empty());
  ASSERT_EQ(stats->info.inputs_size(), 1);
  EXPECT_EQ(stats->info.inputs(0).name(), "values");
  EXPECT_EQ(stats->info.inputs(0).type(), v1::VALUE_TYPE_TENSOR);
  EXPECT_EQ(stats->info.output(), v1::VALUE_TYPE_MAP);
}

TEST_F(ExamplePluginTest, ComputesExactStatisticsOverAllElements) {
  // Mean 5 and population standard deviation exactly 2, whatever the shape or dtype.
  const std::vector<double> data = {2, 4, 4, 4, 5, 5, 7, 9};
  for (const Value& values : {TensorValueOf<double>(v1::DTYPE_FLOAT64, {2, 4}, data),
                              TensorValueOf<float>(v1::DTYPE_FLOAT32, {8}, {2, 4, 4, 4, 5, 5, 7, 9}),
                              TensorValueOf<int32_t>(v1::DTYPE_INT32, {2, 2, 2}, {9, 7, 5, 5, 4, 4, 4, 2}),
                              TensorValueOf<uint8_t>(v1::DTYPE_UINT8, {1, 8}, {4, 2, 9, 4, 5, 7, 4, 5})}) {
    SCOPED_TRACE(DebugString(values));
    auto m = Stats(values);
    ASSERT_EQ(m.size(), 5u);
    ASSERT_TRUE(m.at("count").has_int_value());
    EXPECT_EQ(m.at("count").int_value(), 8);
    EXPECT_EQ(m.at("mean").double_value(), 5.0);
    EXPECT_EQ(m.at("min").double_value(), 2.0);
    EXPECT_EQ(m.at("max").double_value(), 9.0);
    EXPECT_EQ(m.at("std").double_value(), 2.0);
  }
}

TEST_F(ExamplePluginTest, SingleElementHasZeroSpread) {
  auto m = Stats(TensorValueOf<int64_t>(v1::DTYPE_INT64, {}, {-3}));
  EXPECT_EQ(m.at("count").int_value(), 1);
  EXPECT_EQ(m.at("mean").double_value(), -3.0);
  EXPECT_EQ(m.at("std").double_value(), 0.0);
}

TEST_F(ExamplePluginTest, EmptyTensorIsAnError) {
  auto r = registry_.Run(StatsTask(TensorValueOf<float>(v1::DTYPE_FLOAT32, {0, 3}, {})));
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(), "empty tensor");
}

TEST_F(ExamplePluginTest, NonTensorArgumentIsRejectedBeforeTheKernelRuns) {
  auto r = registry_.Run(StatsTask(ListValue({IntValue(1)})));
  ASSERT_FALSE(r.ok());
  EXPECT_CONTAINS(r.status().message(), "parameter 'values' must be tensor, got list");
}

TEST_F(ExamplePluginTest, LoadingTheSamePluginAgainFailsAndChangesNothing) {
  const size_t before = registry_.List().size();
  Status s = LoadPlugin(LOOM_EXAMPLE_PLUGIN_PATH, &registry_);
  EXPECT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "kernel 'stats@1' is already registered");
  EXPECT_CONTAINS(s.message(), LOOM_EXAMPLE_PLUGIN_PATH);
  EXPECT_EQ(registry_.List().size(), before);
}

TEST(PluginLoaderTest, LoadsNextToTheBuiltins) {
  KernelRegistry registry;
  ASSERT_TRUE(RegisterBuiltinKernels(&registry).ok());
  ASSERT_TRUE(LoadPlugin(LOOM_EXAMPLE_PLUGIN_PATH, &registry).ok());
  EXPECT_NE(registry.Find("echo@1"), nullptr);
  EXPECT_NE(registry.Find("stats"), nullptr);
}

TEST(PluginLoaderTest, MissingFileNamesThePathAndTheLoaderError) {
  KernelRegistry registry;
  const std::string path = "/nonexistent/dir/libno_such_plugin.so";
  Status s = LoadPlugin(path, &registry);
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "cannot load plugin '" + path + "'");
  EXPECT_CONTAINS(s.message(), "No such file or directory");  // dlerror's text
}

TEST(PluginLoaderTest, FileThatIsNotASharedLibraryIsAnError) {
  char dir_template[] = "/tmp/loom-plugin-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string path = std::string(dir_template) + "/not_elf.so";
  std::ofstream(path) << "not an ELF file";
  KernelRegistry registry;
  Status s = LoadPlugin(path, &registry);
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "cannot load plugin '" + path + "'");
  std::filesystem::remove_all(dir_template);
}

TEST(PluginLoaderTest, LibraryWithoutTheEntrySymbolIsAnError) {
  KernelRegistry registry;
  Status s = LoadPlugin(LOOM_TEST_PLUGIN_NO_ENTRY_PATH, &registry);
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), LOOM_TEST_PLUGIN_NO_ENTRY_PATH);
  EXPECT_CONTAINS(s.message(), "has no entry point 'loom_register_kernels'");
}

TEST(PluginLoaderTest, EntryReturningNonZeroIsAnError) {
  KernelRegistry registry;
  Status s = LoadPlugin(LOOM_TEST_PLUGIN_REFUSES_PATH, &registry);
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "loom_register_kernels returned 3");
}

TEST(PluginLoaderTest, FailedRegistrationIsAnErrorAndRegistersNothing) {
  KernelRegistry registry;
  Status s = LoadPlugin(LOOM_TEST_PLUGIN_BAD_KERNEL_PATH, &registry);
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "registering a kernel failed: a kernel needs a name and a version");
  // All or nothing: the good kernel registered before the bad one is not there either.
  EXPECT_EQ(registry.Find("good@1"), nullptr);
  EXPECT_TRUE(registry.List().empty());
}

TEST(PluginLoaderTest, EntryThatThrowsIsAnError) {
  KernelRegistry registry;
  Status s = LoadPlugin(LOOM_TEST_PLUGIN_THROWS_PATH, &registry);
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.message(), "threw: no licence for this detector");
}

TEST(PluginsInDirTest, ListsOnlySoFilesSorted) {
  char dir_template[] = "/tmp/loom-plugin-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  for (const char* name : {"b.so", "a.so", "notes.txt", "c.so.1", "libx.so.bak"}) std::ofstream(dir + "/" + name) << "x";
  std::filesystem::create_directory(dir + "/d.so");  // a directory, not a plugin
  auto found = PluginsInDir(dir);
  ASSERT_TRUE(found.ok()) << found.status().message();
  EXPECT_EQ(*found, (std::vector<std::string>{dir + "/a.so", dir + "/b.so"}));
  std::filesystem::remove_all(dir);
}

TEST(PluginsInDirTest, MissingDirectoryIsAnErrorNamingIt) {
  auto found = PluginsInDir("/nonexistent/plugins");
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(found.status().message(), "/nonexistent/plugins");
}

}  // namespace
}  // namespace loom::worker
