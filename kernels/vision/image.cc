#include "kernels/vision/image.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

namespace loom::vision {
namespace {

std::string Prefix(std::string_view who) { return std::string(who) + ": "; }

Status CheckSize(int64_t rows, int64_t cols, std::string_view who) {
  if (rows <= 0 || cols <= 0) {
    return InvalidArgument(Prefix(who) + "the image is empty (" + std::to_string(rows) + "x" + std::to_string(cols) +
                           "); give a 2-D image with at least one pixel");
  }
  if (rows > kMaxImageSide || cols > kMaxImageSide || rows * cols > kMaxImagePixels) {
    return InvalidArgument(Prefix(who) + "the image is " + std::to_string(rows) + "x" + std::to_string(cols) +
                           ", over the limit of " + std::to_string(kMaxImageSide) + " pixels a side and " +
                           std::to_string(kMaxImagePixels) + " pixels in all");
  }
  return Status::Ok();
}

// Converts an 8- or 16-bit or float single-channel Mat to `depth`, integers scaled to [0, 1].
Result<cv::Mat> ToFloat(const cv::Mat& m, int depth, std::string_view who) {
  cv::Mat out;
  switch (m.depth()) {
    case CV_8U:
      m.convertTo(out, depth, 1.0 / 255.0);
      break;
    case CV_16U:
      m.convertTo(out, depth, 1.0 / 65535.0);
      break;
    case CV_32F:
    case CV_64F:
      if (!cv::checkRange(m, /*quiet=*/true)) {
        return InvalidArgument(Prefix(who) + "the image holds NaN or infinite values; give finite floats");
      }
      m.convertTo(out, depth);
      break;
    default:
      return InvalidArgument(Prefix(who) + "the decoded image has an unsupported pixel depth (OpenCV depth " +
                             std::to_string(m.depth()) + "); give 8- or 16-bit grayscale");
  }
  return out;
}

Result<cv::Mat> FromTensor(const Tensor& t, int depth, std::string_view who) {
  LOOM_RETURN_IF_ERROR(ValidateTensor(t));
  if (t.shape_size() != 2) {
    std::string shape;
    for (int i = 0; i < t.shape_size(); ++i) shape += (i ? "x" : "") + std::to_string(t.shape(i));
    return InvalidArgument(Prefix(who) + "the image must be a 2-D tensor [height, width] of one channel; got " +
                           std::to_string(t.shape_size()) + "-D [" + shape + "]");
  }
  LOOM_RETURN_IF_ERROR(CheckSize(t.shape(0), t.shape(1), who));
  int type;
  switch (t.dtype()) {
    case v1::DTYPE_UINT8:
      type = CV_8UC1;
      break;
    case v1::DTYPE_UINT16:
      type = CV_16UC1;
      break;
    case v1::DTYPE_FLOAT32:
      type = CV_32FC1;
      break;
    case v1::DTYPE_FLOAT64:
      type = CV_64FC1;
      break;
    default:
      return InvalidArgument(Prefix(who) + "image tensors of dtype " + DTypeName(t.dtype()) +
                             " are not supported; use uint8, uint16, float32 or float64");
  }
  const int rows = static_cast<int>(t.shape(0));
  const int cols = static_cast<int>(t.shape(1));
  // A view over the tensor's bytes (ValidateTensor checked the count); ToFloat copies.
  const cv::Mat view(rows, cols, type, const_cast<char*>(t.data().data()));
  return ToFloat(view, depth, who);
}

Result<cv::Mat> FromBytes(const std::string& bytes, int depth, std::string_view who) {
  if (bytes.empty()) return InvalidArgument(Prefix(who) + "the image bytes are empty; give a PNG or TIFF file");
  const bool png = bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0;
  const bool tiff =
      bytes.size() >= 4 && (std::memcmp(bytes.data(), "II*\0", 4) == 0 || std::memcmp(bytes.data(), "MM\0*", 4) == 0);
  if (!png && !tiff) {
    return InvalidArgument(Prefix(who) +
                           "the image bytes are not a PNG or TIFF file (unrecognised signature); "
                           "give PNG or TIFF bytes, or a 2-D tensor");
  }
  const char* format = png ? "PNG" : "TIFF";
  cv::Mat decoded;
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
    decoded = cv::imdecode(raw, cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR);
  } catch (const cv::Exception& e) {
    return InvalidArgument(Prefix(who) + "cannot decode the " + format + " bytes: " + e.what());
  }
  if (decoded.empty()) {
    return InvalidArgument(Prefix(who) + "cannot decode the " + format + " bytes (" + std::to_string(bytes.size()) +
                           " bytes): the file is corrupt or truncated");
  }
  LOOM_RETURN_IF_ERROR(CheckSize(decoded.rows, decoded.cols, who));
  if (decoded.channels() == 3 || decoded.channels() == 4) {
    cv::Mat gray;
    cv::cvtColor(decoded, gray, decoded.channels() == 3 ? cv::COLOR_BGR2GRAY : cv::COLOR_BGRA2GRAY);
    decoded = gray;
  } else if (decoded.channels() != 1) {
    return InvalidArgument(Prefix(who) + "the " + format + " image has " + std::to_string(decoded.channels()) +
                           " channels; give grayscale (or RGB, converted to gray)");
  }
  return ToFloat(decoded, depth, who);
}

}  // namespace

Result<cv::Mat> ImageFromValue(const Value& v, std::string_view who, int depth) {
  if (depth != CV_32F && depth != CV_64F) return InvalidArgument(Prefix(who) + "internal: image depth must be float");
  if (v.has_tensor_value()) return FromTensor(v.tensor_value(), depth, who);
  if (v.kind_case() == v1::Value::kBytesValue) return FromBytes(v.bytes_value(), depth, who);
  return InvalidArgument(Prefix(who) + "the image must be a 2-D tensor or the bytes of a PNG/TIFF file; got " +
                         KindName(v));
}

cv::Mat StretchMinMax(const cv::Mat& image) {
  double lo = 0, hi = 0;
  cv::minMaxLoc(image, &lo, &hi);
  cv::Mat out;
  if (hi > lo) {
    image.convertTo(out, image.type(), 1.0 / (hi - lo), -lo / (hi - lo));
  } else {
    out = cv::Mat::zeros(image.size(), image.type());
  }
  return out;
}

cv::Mat StretchSaturated(const cv::Mat& image, double saturated_percent, int bins) {
  double lo = 0, hi = 0;
  cv::minMaxLoc(image, &lo, &hi);
  if (!(hi > lo)) return cv::Mat::zeros(image.size(), image.type());
  // Histogram over [lo, hi] in `bins` equal bins, then the cut points where the CDF crosses
  // saturated/2 % from each end (ImageJ's ContrastEnhancer does the same on its histogram).
  std::vector<int64_t> hist(static_cast<size_t>(bins), 0);
  const double scale = bins / (hi - lo);
  auto bin_of = [&](double x) { return std::min(bins - 1, static_cast<int>((x - lo) * scale)); };
  if (image.depth() == CV_32F) {
    for (int r = 0; r < image.rows; ++r) {
      const float* p = image.ptr<float>(r);
      for (int c = 0; c < image.cols; ++c) ++hist[bin_of(p[c])];
    }
  } else {
    for (int r = 0; r < image.rows; ++r) {
      const double* p = image.ptr<double>(r);
      for (int c = 0; c < image.cols; ++c) ++hist[bin_of(p[c])];
    }
  }
  const double total = static_cast<double>(image.total());
  const double tail = total * saturated_percent / 200.0;
  int low_bin = 0;
  for (double count = 0; low_bin < bins - 1; ++low_bin) {
    count += static_cast<double>(hist[low_bin]);
    if (count > tail) break;
  }
  int high_bin = bins - 1;
  for (double count = 0; high_bin > 0; --high_bin) {
    count += static_cast<double>(hist[high_bin]);
    if (count > tail) break;
  }
  double new_lo = lo + low_bin / scale;
  double new_hi = lo + (high_bin + 1) / scale;
  if (!(new_hi > new_lo)) {
    new_lo = lo;
    new_hi = hi;
  }
  cv::Mat out;
  image.convertTo(out, image.type(), 1.0 / (new_hi - new_lo), -new_lo / (new_hi - new_lo));
  cv::min(out, 1.0, out);
  cv::max(out, 0.0, out);
  return out;
}

}  // namespace loom::vision
