// WarmCache through the kernel interface: a kernel's second invocation in a worker finds what
// the first loaded (KernelRegistry::Run is the worker's call path), failures are not cached,
// and a type confusion is an error rather than a bad cast.
#include "common/warm_cache.h"

#include <gtest/gtest.h>

#include "common/kernel_api.h"

namespace loom {
namespace {

struct Model {
  std::vector<double> weights;
};

class WarmCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { WarmCache::ForProcess().Clear(); }
  void TearDown() override { WarmCache::ForProcess().Clear(); }
};

v1::TaskSpec Task(const std::string& kernel, int64_t x) {
  v1::TaskSpec t;
  t.set_task_id("t" + std::to_string(x));
  t.set_kernel(kernel);
  *t.add_args() = IntValue(x);
  return t;
}

TEST_F(WarmCacheTest, ASecondInvocationReusesWhatTheFirstLoaded) {
  int loads = 0;
  KernelRegistry registry;
  ASSERT_TRUE(
      registry
          .Register({MakeKernelInfo("scale", "1", "x * the model's weight", {Param("x", v1::VALUE_TYPE_INT, "")},
                                    v1::VALUE_TYPE_DOUBLE),
                     [&](const KernelCall& call) -> Result<Value> {
                       EXPECT_NE(call.cache, nullptr);
                       auto model =
                           call.cache->GetOrCreate<Model>("scale/model", [&]() -> Result<std::shared_ptr<Model>> {
                             ++loads;  // the expensive part: once per worker
                             return std::make_shared<Model>(Model{{2.5}});
                           });
                       if (!model.ok()) return model.status();
                       return DoubleValue(static_cast<double>(call.param(0)->int_value()) * (*model)->weights[0]);
                     }})
          .ok());
  auto first = registry.Run(Task("scale@1", 2));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_DOUBLE_EQ(first->double_value(), 5.0);
  auto second = registry.Run(Task("scale@1", 4));
  ASSERT_TRUE(second.ok());
  EXPECT_DOUBLE_EQ(second->double_value(), 10.0);
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(WarmCache::ForProcess().misses(), 1);
  EXPECT_EQ(WarmCache::ForProcess().hits(), 1);
  // The same object, not a copy.
  auto held = WarmCache::ForProcess().Find<Model>("scale/model");
  ASSERT_NE(held, nullptr);
  held->weights[0] = 1.0;
  EXPECT_DOUBLE_EQ(registry.Run(Task("scale@1", 4))->double_value(), 4.0);
  EXPECT_EQ(loads, 1);
}

TEST_F(WarmCacheTest, AFailedLoadIsNotCachedAndIsTriedAgain) {
  WarmCache cache;
  int tries = 0;
  auto loader = [&]() -> Result<std::shared_ptr<Model>> {
    if (++tries == 1) return Unavailable("bitstream server down");
    return std::make_shared<Model>();
  };
  auto failed = cache.GetOrCreate<Model>("k", loader);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().message(), "bitstream server down");
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_TRUE(cache.GetOrCreate<Model>("k", loader).ok());
  EXPECT_TRUE(cache.GetOrCreate<Model>("k", loader).ok());
  EXPECT_EQ(tries, 2);
  auto null_loader = []() -> Result<std::shared_ptr<Model>> { return std::shared_ptr<Model>(); };
  EXPECT_EQ(cache.GetOrCreate<Model>("null", null_loader).status().code(), StatusCode::kInternal);
}

TEST_F(WarmCacheTest, AnEntryOfAnotherTypeIsAnErrorNotACast) {
  WarmCache cache;
  cache.Put("k", std::make_shared<std::string>("bitstream"));
  auto wrong = cache.GetOrCreate<Model>("k", [] { return Result<std::shared_ptr<Model>>(std::make_shared<Model>()); });
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache.Find<Model>("k"), nullptr);
  ASSERT_NE(cache.Find<std::string>("k"), nullptr);
  EXPECT_EQ(*cache.Find<std::string>("k"), "bitstream");
  EXPECT_TRUE(cache.Erase("k"));
  EXPECT_FALSE(cache.Erase("k"));
  EXPECT_EQ(cache.size(), 0u);
}

}  // namespace
}  // namespace loom
