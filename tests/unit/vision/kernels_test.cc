// The vision kernels as Loom kernels (kernels/vision/vision_kernels.cc): registration, option
// handling (call arguments, then the function's configuration, then defaults) and the results.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/vision/focus.h"
#include "kernels/vision/spheres.h"
#include "kernels/vision/tissue.h"
#include "kernels/vision/vision_kernels.h"

namespace loom::kernels {
namespace {

using ::testing::HasSubstr;

Value Float32Image(const cv::Mat& image) {
  std::vector<float> px(image.begin<float>(), image.end<float>());
  return TensorValueOf(v1::DTYPE_FLOAT32, {image.rows, image.cols}, px);
}

const Value& Field(const Value& map, const std::string& key) {
  static const Value kNull = NullValue();
  auto it = map.map_value().entries().find(key);
  EXPECT_NE(it, map.map_value().entries().end()) << "no '" << key << "' in " << DebugString(map);
  return it == map.map_value().entries().end() ? kNull : it->second;
}

class VisionKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(RegisterVisionKernels(&registry_).ok()); }

  Result<Value> Run(const std::string& kernel, Value image, std::map<std::string, Value> kwargs = {},
                    std::map<std::string, Value> config = {}) {
    v1::TaskSpec task;
    task.set_kernel(kernel);
    *task.add_args() = std::move(image);
    for (auto& [k, v] : kwargs) (*task.mutable_kwargs())[k] = v;
    for (auto& [k, v] : config) (*task.mutable_config())[k] = v;
    return registry_.Run(task);
  }

  KernelRegistry registry_;
};

TEST_F(VisionKernelsTest, RegistersFocusAndDogBlobsWithDocumentedInputs) {
  const KernelDef* focus = registry_.Find("focus@1");
  const KernelDef* dog = registry_.Find("dog_blobs@1");
  ASSERT_NE(focus, nullptr);
  ASSERT_NE(dog, nullptr);
  EXPECT_EQ(focus->info.inputs(0).name(), "image");
  EXPECT_FALSE(focus->info.inputs(0).optional());
  for (int i = 1; i < focus->info.inputs_size(); ++i) EXPECT_TRUE(focus->info.inputs(i).optional());
  for (int i = 1; i < dog->info.inputs_size(); ++i) EXPECT_TRUE(dog->info.inputs(i).optional());
  KernelRegistry twice;
  ASSERT_TRUE(RegisterVisionKernels(&twice).ok());
  EXPECT_FALSE(RegisterVisionKernels(&twice).ok()) << "registering the same kernels twice is refused";
}

TEST_F(VisionKernelsTest, FocusOptionsComeFromTheCallThenTheConfigurationThenDefaults) {
  const Value image = Float32Image(vision::MakeTissueImage(5, {.size = 256}));
  auto plain = Run("focus", image, {{"resize", IntValue(256)}});
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  const double score = Field(*plain, "score").double_value();
  EXPECT_GT(score, 0);
  EXPECT_EQ(Field(*plain, "threshold").double_value(), vision::kDefaultFocusThreshold);
  EXPECT_EQ(Field(*plain, "per_scale_counts").tensor_value().shape(0), 30);
  EXPECT_EQ(Field(*plain, "sigmas").tensor_value().shape(0), 30);
  EXPECT_FALSE(plain->map_value().entries().contains("blobs"));

  // The configuration's threshold applies when the call gives none; the call's wins over it.
  auto configured = Run("focus", image, {{"resize", IntValue(256)}}, {{"threshold", DoubleValue(score + 1)}});
  ASSERT_TRUE(configured.ok());
  EXPECT_FALSE(Field(*configured, "in_focus").bool_value());
  auto overridden = Run("focus", image, {{"resize", IntValue(256)}, {"threshold", IntValue(1)}},
                        {{"threshold", DoubleValue(score + 1)}});
  ASSERT_TRUE(overridden.ok());
  EXPECT_EQ(Field(*overridden, "threshold").double_value(), 1.0);
  EXPECT_TRUE(Field(*overridden, "in_focus").bool_value());
}

TEST_F(VisionKernelsTest, DogBlobsReturnsBlobsSigmasAndAHistogramThatAddUp) {
  const vision::SpheresFrame frame = vision::MakeSpheresFrame(3, {.width = 300, .height = 300, .count = 10});
  auto r = Run("dog_blobs", Float32Image(frame.image), {{"min_sigma", DoubleValue(2)}, {"max_sigma", DoubleValue(15)}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const int64_t n = Field(*r, "count").int_value();
  EXPECT_GT(n, 0);
  const Tensor& blobs = Field(*r, "blobs").tensor_value();
  const Tensor& sigmas = Field(*r, "sigmas").tensor_value();
  ASSERT_EQ(blobs.shape(0), n);
  ASSERT_EQ(sigmas.shape(0), n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(TensorElementAsDouble(blobs, 3 * i + 2), std::sqrt(2.0) * TensorElementAsDouble(sigmas, i), 1e-9);
  }
  const Value& h = Field(*r, "histogram");
  const Tensor& counts = Field(h, "counts").tensor_value();
  int64_t total = 0;
  for (int64_t i = 0; i < ElementCount(counts); ++i) total += TensorElementAsInt(counts, i);
  EXPECT_EQ(total, n);
  EXPECT_EQ(ElementCount(Field(h, "edges").tensor_value()), ElementCount(counts) + 1);
}

TEST_F(VisionKernelsTest, BadOptionsGetClearErrors) {
  const Value image = Float32Image(cv::Mat(32, 32, CV_32F, cv::Scalar(0.5)));
  auto wrong_type = Run("dog_blobs", image, {}, {{"n_bin", StringValue("ten")}});
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_THAT(wrong_type.status().message(), HasSubstr("dog_blobs: option 'n_bin' must be an int, got string"));
  auto bad_conv = Run("dog_blobs", image, {{"conv", StringValue("gpu")}});
  ASSERT_FALSE(bad_conv.ok());
  EXPECT_THAT(bad_conv.status().message(), HasSubstr("'conv' must be 'auto', 'direct' or 'fft'"));
  auto bad_range = Run("dog_blobs", image, {{"min_sigma", DoubleValue(5)}, {"max_sigma", DoubleValue(2)}});
  ASSERT_FALSE(bad_range.ok());
  EXPECT_THAT(bad_range.status().message(), HasSubstr("dog_blobs: "));
  auto bad_focus = Run("focus", image, {{"num_scales", IntValue(0)}});
  ASSERT_FALSE(bad_focus.ok());
  EXPECT_THAT(bad_focus.status().message(), HasSubstr("num_scales"));
  auto wrong_kind = Run("focus", image, {{"return_blobs", StringValue("yes")}});
  ASSERT_FALSE(wrong_kind.ok()) << "a call argument of the wrong type is refused before the kernel runs";
}

}  // namespace
}  // namespace loom::kernels
