// The vision kernels (focus, dog_blobs) end to end: real redis-server, loom-service,
// loom-endpoint and loom-worker processes, driven through the C++ SDK and the `loom` CLI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <vector>

#include "common/local_fabric.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "kernels/vision/spheres.h"
#include "kernels/vision/tissue.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// A CV_32F image in [0, 1] as an 8-bit or 16-bit tensor [rows, cols].
template <typename T>
Value ImageTensor(const cv::Mat& image, v1::DType dtype, double max) {
  std::vector<T> px(image.total());
  for (int r = 0; r < image.rows; ++r)
    for (int c = 0; c < image.cols; ++c)
      px[static_cast<size_t>(r) * image.cols + c] = static_cast<T>(std::lround(image.at<float>(r, c) * max));
  return TensorValueOf(dtype, {image.rows, image.cols}, px);
}

std::string Png8(const cv::Mat& image) {
  cv::Mat u8;
  image.convertTo(u8, CV_8U, 255.0);
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(".png", u8, buf));
  return std::string(buf.begin(), buf.end());
}

const Value& Field(const Value& map, const std::string& key) {
  static const Value kNull = NullValue();
  auto it = map.map_value().entries().find(key);
  EXPECT_NE(it, map.map_value().entries().end()) << "no '" << key << "' in " << DebugString(map);
  return it == map.map_value().entries().end() ? kNull : it->second;
}

int64_t SumOf(const Tensor& t) {
  int64_t sum = 0;
  for (int64_t i = 0; i < ElementCount(t); ++i) sum += TensorElementAsInt(t, i);
  return sum;
}

class VisionFabricTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fabric_ = loom::testing::MakeFabric("vision").release();
    Status s = fabric_->StartAll("ep", 2);
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto client = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client, nullptr);
    ASSERT_TRUE(client->RegisterFunction("focus", "focus@1").ok());
    ASSERT_TRUE(client->RegisterFunction("dog_blobs", "dog_blobs@1").ok());
    // A function whose configuration sets the kernel's options: a threshold no blob reaches.
    ASSERT_TRUE(client->RegisterFunction("dog-strict", "dog_blobs@1", "", {{"threshold", DoubleValue(1e6)}}).ok());
  }
  static void TearDownTestSuite() {
    delete fabric_;
    fabric_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(fabric_, nullptr);
    client_ = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client_, nullptr);
  }

  v1::TaskRecord Run(const std::string& fn, std::vector<Value> args, const Kwargs& kwargs = {}) {
    return loom::testing::SubmitAndWait(*client_, "ep", fn, std::move(args), kwargs);
  }

  // Runs `loom --service ... args`; returns the exit code and the output.
  std::pair<int, std::string> Cli(std::vector<std::string> args) {
    return loom::testing::RunCli(*fabric_, LOOM_CLI_PATH, std::move(args));
  }

  std::string TempFile(const std::string& name, const std::string& bytes) {
    const std::string path = ::testing::TempDir() + name + "_" + std::to_string(getpid());
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  static LocalFabric* fabric_;
  std::unique_ptr<Client> client_;
};
LocalFabric* VisionFabricTest::fabric_ = nullptr;

TEST_F(VisionFabricTest, EndpointAdvertisesTheVisionKernels) {
  auto ep = client_->GetEndpoint("ep");
  ASSERT_TRUE(ep.ok()) << ep.status().ToString();
  std::set<std::string> kernels;
  for (const auto& k : ep->kernels()) kernels.insert(k.name() + "@" + k.version());
  EXPECT_TRUE(kernels.contains("focus@1"));
  EXPECT_TRUE(kernels.contains("dog_blobs@1"));
}

TEST_F(VisionFabricTest, FocusScoresASharpImageAboveABlurredOneAndTensorsMatchPngBytes) {
  const cv::Mat sharp = vision::MakeTissueImage(7, {.size = 512, .blur_sigma = 0.0});
  const cv::Mat blurred = vision::MakeTissueImage(7, {.size = 512, .blur_sigma = 6.0});
  const Kwargs options = {{"resize", IntValue(512)}, {"return_blobs", BoolValue(true)}};

  auto s = Run("focus", {ImageTensor<uint8_t>(sharp, v1::DTYPE_UINT8, 255)}, options);
  ASSERT_EQ(s.state(), v1::TASK_STATE_SUCCESS) << s.error();
  auto b = Run("focus", {ImageTensor<uint8_t>(blurred, v1::DTYPE_UINT8, 255)}, options);
  ASSERT_EQ(b.state(), v1::TASK_STATE_SUCCESS) << b.error();
  const double sharp_score = Field(s.result(), "score").double_value();
  EXPECT_GT(sharp_score, 2 * Field(b.result(), "score").double_value());
  EXPECT_GT(Field(s.result(), "laplacian_variance").double_value(),
            Field(b.result(), "laplacian_variance").double_value());
  EXPECT_GT(Field(s.result(), "tenengrad").double_value(), Field(b.result(), "tenengrad").double_value());
  EXPECT_TRUE(Field(s.result(), "in_focus").has_bool_value());

  // Every blob is counted at one scale.
  const Tensor& blobs = Field(s.result(), "blobs").tensor_value();
  ASSERT_EQ(blobs.shape_size(), 2);
  EXPECT_EQ(blobs.shape(1), 3);
  EXPECT_EQ(blobs.shape(0), SumOf(Field(s.result(), "per_scale_counts").tensor_value()));

  // The same pixels as PNG bytes give the same answer.
  auto p = Run("focus", {BytesValue(Png8(sharp))}, options);
  ASSERT_EQ(p.state(), v1::TASK_STATE_SUCCESS) << p.error();
  EXPECT_EQ(Field(p.result(), "score").double_value(), sharp_score);

  // The threshold is an option: a threshold above the score says out of focus.
  auto t = Run("focus", {ImageTensor<uint8_t>(sharp, v1::DTYPE_UINT8, 255)},
               {{"resize", IntValue(512)}, {"threshold", DoubleValue(sharp_score + 1)}});
  ASSERT_EQ(t.state(), v1::TASK_STATE_SUCCESS) << t.error();
  EXPECT_FALSE(Field(t.result(), "in_focus").bool_value());
  EXPECT_EQ(Field(t.result(), "threshold").double_value(), sharp_score + 1);
}

TEST_F(VisionFabricTest, DogBlobsFindsTheSpheresAndHonoursTheFunctionsConfiguration) {
  const vision::SpheresFrame frame =
      vision::MakeSpheresFrame(11, {.width = 400, .height = 300, .count = 15, .min_radius = 4, .max_radius = 12});
  const Value image = ImageTensor<uint16_t>(frame.image, v1::DTYPE_UINT16, 65535);
  auto r = Run("dog_blobs", {image}, {{"min_sigma", DoubleValue(2)}, {"max_sigma", DoubleValue(10)}});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  const int64_t count = Field(r.result(), "count").int_value();
  EXPECT_GE(count, 13);
  EXPECT_LE(count, 17);
  const Tensor& blobs = Field(r.result(), "blobs").tensor_value();
  ASSERT_EQ(blobs.shape_size(), 2);
  EXPECT_EQ(blobs.shape(0), count);
  // Each true sphere has a blob within one radius of its centre.
  int found = 0;
  for (const auto& s : frame.spheres) {
    for (int64_t i = 0; i < count; ++i) {
      if (std::hypot(TensorElementAsDouble(blobs, 3 * i) - s.x, TensorElementAsDouble(blobs, 3 * i + 1) - s.y) <=
          s.radius) {
        ++found;
        break;
      }
    }
  }
  EXPECT_GE(found, 14) << "of " << frame.spheres.size();
  const Value& histogram = Field(r.result(), "histogram");
  EXPECT_EQ(SumOf(Field(histogram, "counts").tensor_value()), count);

  auto strict = Run("dog-strict", {image});
  ASSERT_EQ(strict.state(), v1::TASK_STATE_SUCCESS) << strict.error();
  EXPECT_EQ(Field(strict.result(), "count").int_value(), 0) << "the function's configured threshold applies";
}

TEST_F(VisionFabricTest, BadImagesAndOptionsFailWithClearErrors) {
  struct Case {
    std::string function;
    Value image;
    Kwargs kwargs;
    std::string error;
  };
  std::string tiff;
  {
    std::vector<uchar> buf;
    ASSERT_TRUE(cv::imencode(".tiff", cv::Mat(64, 64, CV_8UC1, cv::Scalar(9)), buf));
    tiff.assign(buf.begin(), buf.end());
  }
  const std::vector<Case> cases = {
      {"focus", TensorValueOf(v1::DTYPE_UINT8, {0, 0}, std::vector<uint8_t>()), {}, "the image is empty"},
      {"dog_blobs",
       TensorValueOf(v1::DTYPE_INT32, {4, 4}, std::vector<int32_t>(16)),
       {},
       "dtype int32 are not supported"},
      {"focus", TensorValueOf(v1::DTYPE_UINT8, {4, 4, 3}, std::vector<uint8_t>(48)), {}, "got 3-D [4x4x3]"},
      {"dog_blobs", BytesValue(tiff.substr(0, 12) + std::string(100, '\0')), {}, "cannot decode the TIFF bytes"},
      {"dog_blobs", BytesValue("not an image"), {}, "not a PNG or TIFF file"},
      {"focus", StringValue("image.png"), {}, "got string"},
      {"dog_blobs",
       TensorValueOf(v1::DTYPE_UINT8, {8, 8}, std::vector<uint8_t>(64)),
       {{"mode", StringValue("fast")}},
       "'mode' must be 'paper' or 'skimage'"},
  };
  for (const auto& c : cases) {
    auto r = Run(c.function, {c.image}, c.kwargs);
    EXPECT_EQ(r.state(), v1::TASK_STATE_FAILED) << c.error;
    EXPECT_THAT(r.error(), HasSubstr(c.error));
    EXPECT_THAT(r.error(), HasSubstr(c.function + ": "));
    EXPECT_EQ(r.attempts(), 1) << "a kernel error is final: " << c.error;
  }
}

TEST_F(VisionFabricTest, CliRunsFocusOnAnImageFile) {
  const std::string png = TempFile("tissue.png", Png8(vision::MakeTissueImage(3, {.size = 256})));
  auto [code, out] =
      Cli({"run", "--endpoint", "ep", "--function", "focus", "--arg-file", png, "--kwarg", "resize=256", "--json"});
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("\"score\""));
  EXPECT_THAT(out, HasSubstr("\"in_focus\""));

  const std::string bad = TempFile("broken.png", "\x89PNG\r\n\x1a\n broken");
  auto [bad_code, bad_out] = Cli({"run", "--endpoint", "ep", "--function", "focus", "--arg-file", bad});
  EXPECT_EQ(bad_code, 1) << bad_out;  // the task failed
  EXPECT_THAT(bad_out, HasSubstr("cannot decode the PNG bytes"));

  auto [missing_code, missing_out] =
      Cli({"run", "--endpoint", "ep", "--function", "focus", "--arg-file", "/nonexistent/image.png"});
  EXPECT_EQ(missing_code, 2) << missing_out;
  EXPECT_THAT(missing_out, HasSubstr("--arg-file: cannot open '/nonexistent/image.png'"));
  std::remove(png.c_str());
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace loom
