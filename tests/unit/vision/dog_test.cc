// Tests for the Gaussian filter paths, the DoG blob detector (paper and scikit-image modes) and
// the synthetic spheres generator (kernels/vision/gaussian.h, dog.h, spheres.h).
#include "kernels/vision/dog.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/vision/gaussian.h"
#include "kernels/vision/spheres.h"

namespace loom::vision {
namespace {

// scipy.ndimage's index extension for each border mode; -1 means "outside, value 0".
int ExtendIndex(int i, int n, Border border) {
  if (i >= 0 && i < n) return i;
  switch (border) {
    case Border::kConstant:
      return -1;
    case Border::kNearest:
      return std::clamp(i, 0, n - 1);
    case Border::kReflect: {
      const int period = 2 * n;
      int m = ((i % period) + period) % period;
      return m < n ? m : period - 1 - m;
    }
    case Border::kMirror: {
      if (n == 1) return 0;
      const int period = 2 * n - 2;
      int m = ((i % period) + period) % period;
      return m < n ? m : period - m;
    }
  }
  return -1;
}

// Separable Gaussian in double precision, straight from the definition.
cv::Mat NaiveGaussian(const cv::Mat& image, double sigma, double truncate, Border border) {
  const std::vector<double> k = GaussianKernel1D(sigma, truncate);
  const int r = static_cast<int>(k.size() / 2);
  cv::Mat src;
  image.convertTo(src, CV_64F);
  cv::Mat tmp(src.size(), CV_64F), out(src.size(), CV_64F);
  for (int y = 0; y < src.rows; ++y) {
    for (int x = 0; x < src.cols; ++x) {
      double s = 0;
      for (int j = -r; j <= r; ++j) {
        const int yy = ExtendIndex(y + j, src.rows, border);
        if (yy >= 0) s += k[j + r] * src.at<double>(yy, x);
      }
      tmp.at<double>(y, x) = s;
    }
  }
  for (int y = 0; y < src.rows; ++y) {
    for (int x = 0; x < src.cols; ++x) {
      double s = 0;
      for (int j = -r; j <= r; ++j) {
        const int xx = ExtendIndex(x + j, src.cols, border);
        if (xx >= 0) s += k[j + r] * tmp.at<double>(y, xx);
      }
      out.at<double>(y, x) = s;
    }
  }
  return out;
}

cv::Mat RandomImage(int rows, int cols, int depth, uint64_t seed) {
  cv::Mat m(rows, cols, CV_64F);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  for (int y = 0; y < rows; ++y)
    for (int x = 0; x < cols; ++x) m.at<double>(y, x) = u(rng);
  cv::Mat out;
  m.convertTo(out, depth);
  return out;
}

double MaxAbsDiff(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat a64, b64;
  a.convertTo(a64, CV_64F);
  b.convertTo(b64, CV_64F);
  return cv::norm(a64, b64, cv::NORM_INF);
}

const char* BorderName(Border b) {
  switch (b) {
    case Border::kReflect:
      return "reflect";
    case Border::kMirror:
      return "mirror";
    case Border::kNearest:
      return "nearest";
    case Border::kConstant:
      return "constant";
  }
  return "?";
}

TEST(GaussianFilterTest, KernelMatchesScipyDefinition) {
  const std::vector<double> k = GaussianKernel1D(2.0, 4.0);
  ASSERT_EQ(k.size(), 17u);  // radius int(4 * 2 + 0.5) = 8
  double sum = 0;
  for (double w : k) sum += w;
  EXPECT_NEAR(sum, 1.0, 1e-15);
  EXPECT_DOUBLE_EQ(k[0], k[16]);
  EXPECT_NEAR(k[8] / k[7], std::exp(0.5 / 4.0), 1e-12);
}

TEST(GaussianFilterTest, DirectAndFftEqualNaiveReferenceForEveryBorder) {
  const Border borders[] = {Border::kReflect, Border::kMirror, Border::kNearest, Border::kConstant};
  // The last case has a kernel radius (36) larger than the image, so borders reflect repeatedly.
  const struct {
    int rows, cols;
    double sigma, truncate;
  } cases[] = {{37, 53, 0.7, 4.0}, {37, 53, 2.5, 4.0}, {41, 30, 5.0, 5.0}, {20, 23, 9.0, 4.0}};
  for (int depth : {CV_32F, CV_64F}) {
    const double tol = depth == CV_32F ? 1e-5 : 1e-12;
    for (const auto& c : cases) {
      const cv::Mat img = RandomImage(c.rows, c.cols, depth, 7);
      for (Border border : borders) {
        const cv::Mat ref = NaiveGaussian(img, c.sigma, c.truncate, border);
        for (ConvPath path : {ConvPath::kDirect, ConvPath::kFft}) {
          const cv::Mat got = GaussianFilter(img, c.sigma, c.truncate, border, path);
          ASSERT_EQ(got.type(), img.type());
          ASSERT_EQ(got.size(), img.size());
          EXPECT_LE(MaxAbsDiff(got, ref), tol)
              << "depth " << depth << " sigma " << c.sigma << " border " << BorderName(border) << " path "
              << (path == ConvPath::kFft ? "fft" : "direct") << " size " << c.rows << "x" << c.cols;
        }
      }
    }
  }
}

TEST(GaussianFilterTest, DirectAndFftAgreeOnAMegapixelFrame) {
  SpheresOptions so;
  const cv::Mat img = MakeSpheresFrame(5, so).image;
  for (double sigma : {2.0, 8.0, 20.0}) {
    const cv::Mat direct = GaussianFilter(img, sigma, 4.0, Border::kReflect, ConvPath::kDirect);
    const cv::Mat fft = GaussianFilter(img, sigma, 4.0, Border::kReflect, ConvPath::kFft);
    EXPECT_LE(MaxAbsDiff(direct, fft), 1e-5) << "sigma " << sigma;
  }
}

TEST(GaussianFilterTest, BankEqualsSingleFilters) {
  const cv::Mat img = RandomImage(64, 80, CV_64F, 3);
  const std::vector<double> sigmas = {1.0, 3.0, 4.0, 7.5, 12.0};
  const std::vector<cv::Mat> bank = GaussianFilterBank(img, sigmas, 4.0, Border::kReflect);
  ASSERT_EQ(bank.size(), sigmas.size());
  for (size_t i = 0; i < sigmas.size(); ++i) {
    const cv::Mat ref = NaiveGaussian(img, sigmas[i], 4.0, Border::kReflect);
    EXPECT_LE(MaxAbsDiff(bank[i], ref), 1e-12) << "sigma " << sigmas[i];
  }
}

TEST(DogOptionsTest, RejectsOutOfRangeOptionsNamingTheField) {
  struct Case {
    const char* field;
    void (*set)(DogOptions&);
  };
  const Case cases[] = {
      {"min_sigma", [](DogOptions& o) { o.min_sigma = 0; }},
      {"max_sigma", [](DogOptions& o) { o.max_sigma = 0.5; }},
      {"max_sigma", [](DogOptions& o) { o.max_sigma = 5000; }},
      {"n_bin", [](DogOptions& o) { o.n_bin = 0; }},
      {"n_bin", [](DogOptions& o) { o.n_bin = 201; }},
      {"sigma_ratio", [](DogOptions& o) { o.sigma_ratio = 1.0; }},
      {"threshold", [](DogOptions& o) { o.threshold = -0.1; }},
      {"overlap", [](DogOptions& o) { o.overlap = 1.5; }},
      {"truncate", [](DogOptions& o) { o.truncate = 0; }},
      {"truncate", [](DogOptions& o) { o.truncate = 11; }},
      {"histogram_bins", [](DogOptions& o) { o.histogram_bins = 0; }},
      {"histogram_bins", [](DogOptions& o) { o.histogram_bins = 1001; }},
      {"presmooth_sigma", [](DogOptions& o) { o.presmooth_sigma = -1; }},
  };
  EXPECT_TRUE(ValidateDogOptions(DogOptions{}).ok());
  for (const Case& c : cases) {
    DogOptions o;
    c.set(o);
    const Status st = ValidateDogOptions(o);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(st.message().find(c.field), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("must be"), std::string::npos) << st.message();
  }
}

TEST(DogOptionsTest, GuardsTheNumberOfScales) {
  DogOptions o;
  o.mode = DogMode::kSkimage;
  o.min_sigma = 1;
  o.max_sigma = 100;
  o.sigma_ratio = 1.001;  // log(100) / log(1.001) + 1 = 4607 scales
  auto sigmas = DogSigmas(o);
  ASSERT_FALSE(sigmas.ok());
  EXPECT_NE(sigmas.status().message().find("sigma_ratio"), std::string::npos);
  EXPECT_NE(sigmas.status().message().find("scales"), std::string::npos);

  auto r = DetectDogBlobs(cv::Mat(16, 16, CV_32F, cv::Scalar(0)), o);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);

  DogOptions paper;
  paper.n_bin = 200;
  auto big = DetectDogBlobs(cv::Mat(2000, 1000, CV_32F, cv::Scalar(0)), paper);  // 4e8 > 2^28
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("n_bin"), std::string::npos) << big.status().message();
}

TEST(DogBlobsTest, RejectsAThresholdThatFindsTooManyMaxima) {
  DogOptions o;
  o.mode = DogMode::kSkimage;
  o.threshold = 0;
  o.min_sigma = 1;
  o.max_sigma = 4;
  const cv::Mat noise = RandomImage(1000, 1000, CV_64F, 1);
  auto r = DetectDogBlobs(noise, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("raise threshold"), std::string::npos) << r.status().message();
}

TEST(DogOptionsTest, SigmaListsMatchEachMode) {
  DogOptions o;
  o.min_sigma = 2;
  o.max_sigma = 12;
  o.n_bin = 4;
  auto paper = DogSigmas(o);
  ASSERT_TRUE(paper.ok());
  EXPECT_EQ(*paper, (std::vector<double>{2, 4.5, 7, 9.5, 12}));

  o.mode = DogMode::kSkimage;
  o.min_sigma = 1;
  o.max_sigma = 10;
  o.sigma_ratio = 1.6;  // k = int(log(10) / log(1.6) + 1) = 5
  auto sk = DogSigmas(o);
  ASSERT_TRUE(sk.ok());
  ASSERT_EQ(sk->size(), 6u);
  EXPECT_DOUBLE_EQ(sk->back(), std::pow(1.6, 5));
}

TEST(DogBlobsTest, RejectsBadImages) {
  DogOptions o;
  EXPECT_EQ(DetectDogBlobs(cv::Mat(), o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DetectDogBlobs(cv::Mat(8, 8, CV_32FC3, cv::Scalar(0)), o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DetectDogBlobs(cv::Mat(8, 8, CV_8U, cv::Scalar(0)), o).status().code(), StatusCode::kInvalidArgument);
}

TEST(DogBlobsTest, FlatImageHasNoBlobs) {
  for (DogMode mode : {DogMode::kPaper, DogMode::kSkimage}) {
    DogOptions o;
    o.mode = mode;
    // Not 0: the DoG of a constant image is 0 only up to rounding (the kernel sums to 1 +- ulp).
    o.threshold = 1e-9;
    auto r = DetectDogBlobs(cv::Mat(50, 60, CV_64F, cv::Scalar(0.5)), o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->blobs.empty());
    EXPECT_EQ(r->histogram_counts.size(), 20u);
    EXPECT_EQ(r->histogram_edges.size(), 21u);
  }
}

DogOptions PaperOptions() {
  DogOptions o;
  o.mode = DogMode::kPaper;
  o.min_sigma = 1.5;  // radius 2.1 .. 22.6, around the generator's 3 .. 20
  o.max_sigma = 16.0;
  o.n_bin = 10;
  o.threshold = 0.1;
  return o;
}

TEST(DogBlobsTest, PaperModeFindsKnownSpheresWithHighPrecisionAndRecall) {
  const DogOptions o = PaperOptions();
  for (bool gaussian : {true, false}) {
    for (uint64_t seed : {1u, 2u, 3u}) {
      SpheresOptions so;
      so.gaussian = gaussian;
      const SpheresFrame frame = MakeSpheresFrame(seed, so);
      ASSERT_EQ(frame.spheres.size(), 100u);
      auto r = DetectDogBlobs(frame.image, o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      const TruthMatch s = MatchToTruth(frame.spheres, r->blobs);
      std::printf(
          "[ paper  ] %s seed %d: %d true, %d found, %d matched: precision %.3f recall %.3f; "
          "radius error mean %.2f px, max %.2f px\n",
          gaussian ? "gaussian" : "discs   ", static_cast<int>(seed), s.truth, s.found, s.matched, s.precision(),
          s.recall(), s.mean_radius_err, s.max_radius_err);
      EXPECT_GE(s.precision(), 0.95) << "seed " << seed;
      EXPECT_GE(s.recall(), 0.95) << "seed " << seed;
      // The sigma grid is 1.45 apart (radius 2.05): a detection lands on the nearest scale or so.
      EXPECT_LE(s.mean_radius_err, 2.0);
      int64_t total = 0;
      for (int64_t c : r->histogram_counts) total += c;
      EXPECT_EQ(total, static_cast<int64_t>(r->blobs.size()));
    }
  }
}

TEST(DogBlobsTest, DirectAndFftPathsFindTheSameBlobs) {
  const SpheresFrame frame = MakeSpheresFrame(4, SpheresOptions{});
  DogOptions o = PaperOptions();
  o.path = ConvPath::kDirect;
  auto direct = DetectDogBlobs(frame.image, o);
  o.path = ConvPath::kFft;
  auto fft = DetectDogBlobs(frame.image, o);
  ASSERT_TRUE(direct.ok() && fft.ok());
  ASSERT_EQ(direct->blobs.size(), fft->blobs.size());
  auto key = [](const DogBlob& b) { return std::tuple(b.y, b.x, b.sigma); };
  std::vector<std::tuple<double, double, double>> a, b;
  for (const DogBlob& x : direct->blobs) a.push_back(key(x));
  for (const DogBlob& x : fft->blobs) b.push_back(key(x));
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
  EXPECT_EQ(direct->histogram_counts, fft->histogram_counts);
}

TEST(DogBlobsTest, AReusedWorkspaceGivesTheSameResults) {
  DogWorkspace ws;
  SpheresOptions so;
  so.width = 300;
  so.height = 200;
  so.count = 12;
  for (DogMode mode : {DogMode::kPaper, DogMode::kSkimage, DogMode::kPaper}) {
    for (uint64_t seed : {1u, 2u}) {
      DogOptions o = PaperOptions();
      o.mode = mode;
      o.n_bin = seed == 1 ? 10 : 4;  // the cube changes depth between calls
      const cv::Mat img = MakeSpheresFrame(seed, so).image;
      auto fresh = DetectDogBlobs(img, o);
      auto reused = DetectDogBlobs(img, o, &ws);
      ASSERT_TRUE(fresh.ok() && reused.ok());
      ASSERT_EQ(fresh->blobs.size(), reused->blobs.size());
      EXPECT_GT(fresh->blobs.size(), 0u);
      for (size_t i = 0; i < fresh->blobs.size(); ++i) {
        EXPECT_EQ(fresh->blobs[i].x, reused->blobs[i].x);
        EXPECT_EQ(fresh->blobs[i].y, reused->blobs[i].y);
        EXPECT_EQ(fresh->blobs[i].sigma, reused->blobs[i].sigma);
      }
    }
  }
}

TEST(DogBlobsTest, SpheresFramesAreSeededAndInRange) {
  SpheresOptions so;
  so.width = 200;
  so.height = 150;
  so.count = 10;
  const SpheresFrame a = MakeSpheresFrame(9, so), b = MakeSpheresFrame(9, so), c = MakeSpheresFrame(10, so);
  EXPECT_EQ(MaxAbsDiff(a.image, b.image), 0.0);
  EXPECT_GT(MaxAbsDiff(a.image, c.image), 0.0);
  ASSERT_EQ(a.spheres.size(), 10u);
  for (const Sphere& s : a.spheres) {
    EXPECT_GE(s.x, s.radius);
    EXPECT_LE(s.x, so.width - 1 - s.radius);
    EXPECT_GE(s.radius, so.min_radius);
    EXPECT_LE(s.radius, so.max_radius);
  }
  double lo, hi;
  cv::minMaxLoc(a.image, &lo, &hi);
  EXPECT_GE(lo, 0.0);
  EXPECT_LE(hi, 1.0);
}

// ---- scikit-image golden files (tools/vision/skimage_golden.py) ----

std::vector<std::vector<std::string>> ReadCsv(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path << "; regenerate with tools/vision/skimage_golden.py";
  std::vector<std::vector<std::string>> rows;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

// img_as_float of a uint8 image: x * (1 / 255) in float64.
cv::Mat ReadAsFloat64(const std::string& path) {
  const cv::Mat u8 = cv::imread(path, cv::IMREAD_UNCHANGED);
  EXPECT_FALSE(u8.empty()) << path;
  EXPECT_EQ(u8.type(), CV_8UC1) << path;
  cv::Mat out(u8.size(), CV_64F);
  for (int y = 0; y < u8.rows; ++y)
    for (int x = 0; x < u8.cols; ++x) out.at<double>(y, x) = u8.at<uint8_t>(y, x) * (1.0 / 255.0);
  return out;
}

TEST(DogBlobsTest, SkimageModeMatchesBlobDogGoldenFiles) {
  const std::string dir = LOOM_VISION_DATA_DIR;
  const auto manifest = ReadCsv(dir + "/dog_golden.csv");
  ASSERT_EQ(manifest.size(), 9u);
  for (const auto& m : manifest) {
    ASSERT_EQ(m.size(), 7u);
    const cv::Mat image = ReadAsFloat64(dir + "/" + m[0]);
    DogOptions o;
    o.mode = DogMode::kSkimage;
    o.min_sigma = std::stod(m[2]);
    o.max_sigma = std::stod(m[3]);
    o.sigma_ratio = std::stod(m[4]);
    o.threshold = std::stod(m[5]);
    o.overlap = std::stod(m[6]);
    const auto golden = ReadCsv(dir + "/" + m[1]);
    for (ConvPath path : {ConvPath::kAuto, ConvPath::kDirect, ConvPath::kFft}) {
      o.path = path;
      auto r = DetectDogBlobs(image, o);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->blobs.size(), golden.size()) << m[1] << " path " << static_cast<int>(path);
      int matched = 0;
      for (const auto& g : golden) {
        const double y = std::stod(g[0]), x = std::stod(g[1]), sigma = std::stod(g[2]);
        const bool found = std::any_of(r->blobs.begin(), r->blobs.end(), [&](const DogBlob& b) {
          return b.y == y && b.x == x && std::abs(b.sigma - sigma) <= 1e-9;
        });
        EXPECT_TRUE(found) << m[1] << ": skimage blob y=" << y << " x=" << x << " sigma=" << sigma
                           << " not found (path " << static_cast<int>(path) << ")";
        matched += found ? 1 : 0;
      }
      EXPECT_EQ(matched, static_cast<int>(golden.size()));
    }
  }
}

}  // namespace
}  // namespace loom::vision
