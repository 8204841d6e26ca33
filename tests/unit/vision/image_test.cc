// ImageFromValue (tensors and PNG/TIFF bytes) and the contrast stretches.
#include "kernels/vision/image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <vector>

namespace loom::vision {
namespace {

using ::testing::HasSubstr;

std::string Encode(const cv::Mat& m, const char* ext) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, m, buf));
  return std::string(buf.begin(), buf.end());
}

cv::Mat Ramp8(int rows, int cols) {
  cv::Mat m(rows, cols, CV_8UC1);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) m.at<uint8_t>(r, c) = static_cast<uint8_t>((r * cols + c) % 256);
  return m;
}

std::string ErrorOf(const Value& v) {
  auto r = ImageFromValue(v, "focus");
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.status().message();
}

TEST(ImageFromValue, Uint8TensorIsScaledToUnitRange) {
  std::vector<uint8_t> px = {0, 51, 255, 102, 204, 153};
  auto r = ImageFromValue(TensorValueOf(v1::DTYPE_UINT8, {2, 3}, px), "focus");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const cv::Mat& m = *r;
  ASSERT_EQ(m.type(), CV_32FC1);
  ASSERT_EQ(m.rows, 2);
  ASSERT_EQ(m.cols, 3);
  EXPECT_FLOAT_EQ(m.at<float>(0, 0), 0.0f);
  EXPECT_FLOAT_EQ(m.at<float>(0, 1), 0.2f);
  EXPECT_FLOAT_EQ(m.at<float>(0, 2), 1.0f);
  EXPECT_FLOAT_EQ(m.at<float>(1, 2), 0.6f);
}

TEST(ImageFromValue, Uint16AndFloatTensors) {
  std::vector<uint16_t> px16 = {0, 65535, 13107, 0};
  auto r16 = ImageFromValue(TensorValueOf(v1::DTYPE_UINT16, {2, 2}, px16), "focus", CV_64F);
  ASSERT_TRUE(r16.ok()) << r16.status().message();
  EXPECT_EQ(r16->type(), CV_64FC1);
  EXPECT_DOUBLE_EQ(r16->at<double>(0, 1), 1.0);
  EXPECT_DOUBLE_EQ(r16->at<double>(1, 0), 0.2);

  std::vector<float> pxf = {0.25f, -3.0f, 7.5f, 1.0f};
  auto rf = ImageFromValue(TensorValueOf(v1::DTYPE_FLOAT32, {1, 4}, pxf), "focus");
  ASSERT_TRUE(rf.ok());
  EXPECT_FLOAT_EQ(rf->at<float>(0, 1), -3.0f);  // floats are taken as they are
  EXPECT_FLOAT_EQ(rf->at<float>(0, 2), 7.5f);
}

TEST(ImageFromValue, BadTensorsGetClearErrors) {
  EXPECT_THAT(ErrorOf(TensorValueOf(v1::DTYPE_UINT8, {2, 2, 3}, std::vector<uint8_t>(12))),
              HasSubstr("must be a 2-D tensor [height, width] of one channel; got 3-D [2x2x3]"));
  EXPECT_THAT(ErrorOf(TensorValueOf(v1::DTYPE_UINT8, {0, 5}, std::vector<uint8_t>())), HasSubstr("empty"));
  EXPECT_THAT(ErrorOf(TensorValueOf(v1::DTYPE_INT32, {2, 2}, std::vector<int32_t>(4))),
              HasSubstr("dtype int32 are not supported; use uint8, uint16, float32 or float64"));
  // Shape and byte count disagree.
  EXPECT_FALSE(ImageFromValue(TensorValueOf(v1::DTYPE_UINT8, {4, 4}, std::vector<uint8_t>(3)), "focus").ok());
  std::vector<float> nan = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THAT(ErrorOf(TensorValueOf(v1::DTYPE_FLOAT32, {1, 2}, nan)), HasSubstr("NaN or infinite"));
  EXPECT_THAT(ErrorOf(StringValue("image.png")), HasSubstr("2-D tensor or the bytes of a PNG/TIFF file; got string"));
  EXPECT_THAT(ErrorOf(TensorValueOf(v1::DTYPE_UINT8, {20000, 1}, std::vector<uint8_t>(20000))),
              HasSubstr("over the limit"));
  EXPECT_THAT(ErrorOf(TensorValueOf(v1::DTYPE_UINT8, {2}, std::vector<uint8_t>(2))), ::testing::StartsWith("focus: "))
      << "errors name the kernel";
}

TEST(ImageFromValue, PngAndTiffBytesDecodeToTheSamePixels) {
  const cv::Mat img = Ramp8(17, 23);
  for (const char* ext : {".png", ".tiff"}) {
    auto r = ImageFromValue(BytesValue(Encode(img, ext)), "dog_blobs");
    ASSERT_TRUE(r.ok()) << ext << ": " << r.status().message();
    ASSERT_EQ(r->rows, 17);
    ASSERT_EQ(r->cols, 23);
    for (int y = 0; y < 17; ++y)
      for (int x = 0; x < 23; ++x) ASSERT_FLOAT_EQ(r->at<float>(y, x), img.at<uint8_t>(y, x) / 255.0f) << ext;
  }
  cv::Mat img16(5, 6, CV_16UC1, cv::Scalar(65535));
  img16.at<uint16_t>(2, 3) = 0;
  auto r16 = ImageFromValue(BytesValue(Encode(img16, ".png")), "focus");
  ASSERT_TRUE(r16.ok()) << r16.status().message();
  EXPECT_FLOAT_EQ(r16->at<float>(0, 0), 1.0f);
  EXPECT_FLOAT_EQ(r16->at<float>(2, 3), 0.0f);

  cv::Mat colour(4, 4, CV_8UC3, cv::Scalar(255, 255, 255));
  auto rc = ImageFromValue(BytesValue(Encode(colour, ".png")), "focus");
  ASSERT_TRUE(rc.ok()) << rc.status().message();
  EXPECT_EQ(rc->channels(), 1);
  EXPECT_NEAR(rc->at<float>(1, 1), 1.0f, 1e-6);
}

TEST(ImageFromValue, CorruptOrForeignBytesGetClearErrors) {
  std::string png = Encode(Ramp8(64, 64), ".png");
  EXPECT_THAT(ErrorOf(BytesValue(png.substr(0, 40))), HasSubstr("cannot decode the PNG bytes"));
  std::string tiff = Encode(Ramp8(64, 64), ".tiff");
  std::string broken = tiff.substr(0, 16) + std::string(64, '\x7f');
  EXPECT_THAT(ErrorOf(BytesValue(broken)), HasSubstr("TIFF"));
  EXPECT_THAT(ErrorOf(BytesValue("GIF89a not an image")), HasSubstr("not a PNG or TIFF file"));
  EXPECT_THAT(ErrorOf(BytesValue("")), HasSubstr("bytes are empty"));
}

TEST(Stretch, MinMaxMapsToUnitRangeAndConstantToZero) {
  cv::Mat m = (cv::Mat_<float>(1, 3) << 2.0f, 3.0f, 6.0f);
  cv::Mat s = StretchMinMax(m);
  EXPECT_FLOAT_EQ(s.at<float>(0, 0), 0.0f);
  EXPECT_FLOAT_EQ(s.at<float>(0, 1), 0.25f);
  EXPECT_FLOAT_EQ(s.at<float>(0, 2), 1.0f);
  EXPECT_EQ(cv::countNonZero(StretchMinMax(cv::Mat(3, 3, CV_32F, cv::Scalar(0.7)))), 0);
}

TEST(Stretch, SaturatedClipsTheTailsAndStretchesTheRest) {
  // 10,000 pixels spread over [0.2, 0.6], plus 10 very dark and 10 very bright outliers: 0.35%
  // saturation clips 17.5 pixels at each end, so the outliers saturate and the body fills [0, 1].
  cv::Mat m(1, 10020, CV_32F);
  for (int i = 0; i < 10000; ++i) m.at<float>(0, i) = 0.2f + 0.4f * static_cast<float>(i) / 9999.0f;
  for (int i = 0; i < 10; ++i) {
    m.at<float>(0, 10000 + i) = 0.0f;
    m.at<float>(0, 10010 + i) = 1.0f;
  }
  cv::Mat s = StretchSaturated(m, 0.35);
  double lo = 0, hi = 0;
  cv::minMaxLoc(s, &lo, &hi);
  EXPECT_EQ(lo, 0.0);
  EXPECT_EQ(hi, 1.0);
  EXPECT_EQ(s.at<float>(0, 10000), 0.0f);
  EXPECT_EQ(s.at<float>(0, 10019), 1.0f);
  // The body's middle stays in the middle, and its ends reach (nearly) the ends of the range.
  EXPECT_NEAR(s.at<float>(0, 5000), 0.5f, 0.01f);
  EXPECT_LT(s.at<float>(0, 20), 0.01f);
  EXPECT_GT(s.at<float>(0, 9980), 0.99f);
}

}  // namespace
}  // namespace loom::vision
