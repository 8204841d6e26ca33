// Tests for focus detection (kernels/vision/focus.h) and the synthetic tissue images it is
// validated on (kernels/vision/tissue.h). The accuracy tests use the blur series 0..8 px; in focus
// means blur <= 1 px, out of focus >= 2 px (docs/VISION-FOCUS.md). Thresholds are fitted on
// calibration seeds 1..2 and judged on held-out seeds 1001..1004.
#include "kernels/vision/focus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "kernels/vision/gaussian.h"
#include "kernels/vision/tissue.h"

namespace loom::vision {
namespace {

// --- options ---

TEST(FocusOptionsTest, DefaultsAreValid) { EXPECT_TRUE(ValidateFocusOptions(FocusOptions{}).ok()); }

TEST(FocusOptionsTest, RejectsEachOutOfRangeFieldNamingItAndTheRange) {
  struct Case {
    const char* field;
    void (*set)(FocusOptions&);
    const char* range;
  };
  const Case cases[] = {
      {"resize", [](FocusOptions& o) { o.resize = 8; }, "16..8192"},
      {"resize", [](FocusOptions& o) { o.resize = 9000; }, "16..8192"},
      {"saturated_percent", [](FocusOptions& o) { o.saturated_percent = -1; }, "0..50"},
      {"saturated_percent", [](FocusOptions& o) { o.saturated_percent = 60; }, "0..50"},
      {"num_scales", [](FocusOptions& o) { o.num_scales = 0; }, "1..100"},
      {"num_scales", [](FocusOptions& o) { o.num_scales = 101; }, "1..100"},
      {"sigma_min", [](FocusOptions& o) { o.sigma_min = 0; }, "> 0"},
      {"sigma_min", [](FocusOptions& o) { o.sigma_min = std::nan(""); }, "> 0"},
      {"sigma_max", [](FocusOptions& o) { o.sigma_max = 1.0; }, "greater than sigma_min"},
      {"sigma_max", [](FocusOptions& o) { o.sigma_max = 300; }, "at most 256"},
      {"truncate", [](FocusOptions& o) { o.truncate = 0.5; }, "1..10"},
      {"min_response", [](FocusOptions& o) { o.min_response = -1e-4; }, ">= 0"},
      {"noise_floor", [](FocusOptions& o) { o.noise_floor = -1; }, "0..100"},
      {"fine_sigma_max", [](FocusOptions& o) { o.fine_sigma_max = 0; }, "> 0"},
      {"threshold", [](FocusOptions& o) { o.threshold = -5; }, ">= 0"},
      {"threshold", [](FocusOptions& o) { o.threshold = std::numeric_limits<double>::infinity(); }, ">= 0"},
  };
  for (const Case& c : cases) {
    FocusOptions o;
    c.set(o);
    const Status s = ValidateFocusOptions(o);
    ASSERT_FALSE(s.ok()) << c.field;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(std::string("option ") + c.field + " must be"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(c.range), std::string::npos) << s.message();
    // DetectFocus validates too.
    EXPECT_EQ(DetectFocus(cv::Mat(32, 32, CV_32F, cv::Scalar(0.5)), o).status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(FocusOptionsTest, ResizeZeroIsAllowed) {
  FocusOptions o;
  o.resize = 0;
  EXPECT_TRUE(ValidateFocusOptions(o).ok());
}

TEST(DetectFocusTest, RejectsImagesItCannotAnalyseWithClearMessages) {
  const FocusOptions o;
  const auto empty = DetectFocus(cv::Mat(), o);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty"), std::string::npos);

  const auto colour = DetectFocus(cv::Mat(32, 32, CV_32FC3, cv::Scalar::all(0.5)), o);
  ASSERT_FALSE(colour.ok());
  EXPECT_NE(colour.status().message().find("single-channel float"), std::string::npos) << colour.status().message();

  const auto bytes = DetectFocus(cv::Mat(32, 32, CV_8U, cv::Scalar(7)), o);
  ASSERT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status().message().find("single-channel float"), std::string::npos);

  FocusOptions keep;
  keep.resize = 0;
  const auto tiny = DetectFocus(cv::Mat(8, 40, CV_32F, cv::Scalar(0.5)), keep);
  ASSERT_FALSE(tiny.ok());
  EXPECT_NE(tiny.status().message().find("at least 16x16"), std::string::npos) << tiny.status().message();

  cv::Mat nan(32, 32, CV_32F, cv::Scalar(0.5));
  nan.at<float>(3, 4) = std::numeric_limits<float>::quiet_NaN();
  const auto bad = DetectFocus(nan, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("NaN"), std::string::npos);
}

// --- the scale space ---

// The FFT scale space equals a direct one: separable convolution with the same truncated kernels
// and reflect borders, in double precision, then the per-pixel max and argmax over scale.
TEST(DogMaxOverScaleTest, MatchesDirectConvolutionOnANonSquareImage) {
  FocusOptions o;
  o.resize = 0;
  o.num_scales = 5;
  o.sigma_min = 1;
  o.sigma_max = 6;
  o.noise_floor = 0;
  TissueOptions t;
  t.size = 96;
  const cv::Mat image = MakeTissueImage(7, t)(cv::Rect(0, 0, 96, 70)).clone();
  auto prepared = PrepareFocusImage(image, o);
  ASSERT_TRUE(prepared.ok());
  const ScaleSpaceMax fft = DogMaxOverScale(*prepared, o);
  ASSERT_EQ(fft.response.size(), prepared->size());

  const std::vector<double> sigmas = FocusSigmas(o);
  ASSERT_EQ(sigmas.size(), 6u);
  EXPECT_DOUBLE_EQ(sigmas.front(), 1.0);
  EXPECT_DOUBLE_EQ(sigmas.back(), 6.0);
  cv::Mat p64;
  prepared->convertTo(p64, CV_64F);
  std::vector<cv::Mat> blurred;
  for (double s : sigmas) {
    const std::vector<double> k = GaussianKernel1D(s, o.truncate);
    const cv::Mat kernel(static_cast<int>(k.size()), 1, CV_64F, const_cast<double*>(k.data()));
    cv::Mat b;
    cv::sepFilter2D(p64, b, CV_64F, kernel, kernel, cv::Point(-1, -1), 0, cv::BORDER_REFLECT);
    blurred.push_back(b);
  }
  int compared_scales = 0;
  for (int r = 0; r < image.rows; ++r) {
    for (int c = 0; c < image.cols; ++c) {
      double best = -1e9, second = -1e9;
      int arg = -1;
      for (int i = 0; i < o.num_scales; ++i) {
        const double d = sigmas[i] * (blurred[i].at<double>(r, c) - blurred[i + 1].at<double>(r, c));
        if (d > best) {
          second = best;
          best = d;
          arg = i;
        } else {
          second = std::max(second, d);
        }
      }
      ASSERT_NEAR(fft.response.at<float>(r, c), best, 2e-5) << "at " << r << "," << c;
      if (best - second > 1e-4) {
        ASSERT_EQ(fft.scale.at<uint8_t>(r, c), arg) << "at " << r << "," << c;
        ++compared_scales;
      }
    }
  }
  EXPECT_GT(compared_scales, image.rows * image.cols / 2);
}

// A bright Gaussian spot of sigma 4 on a dark field: one blob, at the spot, at a scale near 4.
TEST(DetectFocusTest, FindsASingleSpotAtItsPlaceAndScale) {
  cv::Mat image(128, 128, CV_32F, cv::Scalar(0));
  image.at<float>(60, 70) = 1;
  cv::GaussianBlur(image, image, cv::Size(0, 0), 4.0);
  cv::normalize(image, image, 0, 1, cv::NORM_MINMAX);
  FocusOptions o;
  o.resize = 0;
  o.sigma_max = 12;
  o.num_scales = 11;  // sigma 1, 2, ..., 12
  o.noise_floor = 0;
  o.min_response = 0.01;
  o.return_blobs = true;
  auto r = DetectFocus(image, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->blobs.size(), 1u);
  EXPECT_EQ(r->blobs[0].row, 60);
  EXPECT_EQ(r->blobs[0].col, 70);
  EXPECT_GE(r->blobs[0].sigma, 2.5);
  EXPECT_LE(r->blobs[0].sigma, 5.0);
  EXPECT_EQ(r->score, 0);  // not a fine-scale feature (sigma > 3)
}

// --- result bookkeeping ---

TEST(DetectFocusTest, CountsAddUpAndBlobsOnlyWhenAsked) {
  TissueOptions t;
  t.size = 256;
  const cv::Mat image = MakeTissueImage(3, t);
  FocusOptions o;
  o.resize = 256;
  auto without = DetectFocus(image, o);
  o.return_blobs = true;
  auto with = DetectFocus(image, o);
  ASSERT_TRUE(without.ok() && with.ok());
  EXPECT_TRUE(without->blobs.empty());
  ASSERT_FALSE(with->blobs.empty());
  ASSERT_EQ(with->per_scale_counts.size(), static_cast<size_t>(o.num_scales));
  int64_t total = 0;
  for (int64_t n : with->per_scale_counts) total += n;
  EXPECT_EQ(total, static_cast<int64_t>(with->blobs.size()));
  EXPECT_EQ(without->per_scale_counts, with->per_scale_counts);
  EXPECT_EQ(without->score, with->score);
  const auto fine = std::count_if(with->blobs.begin(), with->blobs.end(),
                                  [&](const FocusBlob& b) { return b.sigma <= o.fine_sigma_max; });
  EXPECT_EQ(with->score, static_cast<double>(fine));
  EXPECT_GT(with->score, 0);
  for (const FocusBlob& b : with->blobs) {
    ASSERT_GE(b.response, o.min_response);
    ASSERT_TRUE(b.row >= 0 && b.row < 256 && b.col >= 0 && b.col < 256);
  }
  // The decision follows the threshold given.
  o.threshold = with->score;
  EXPECT_TRUE(DetectFocus(image, o)->in_focus);
  o.threshold = with->score + 1;
  auto above = DetectFocus(image, o);
  EXPECT_FALSE(above->in_focus);
  EXPECT_EQ(above->threshold, with->score + 1);
  o.threshold = 0;
  EXPECT_EQ(DetectFocus(image, o)->threshold, kDefaultFocusThreshold);
}

TEST(DetectFocusTest, ConstantImageScoresZero) {
  for (const float level : {0.0f, 0.4f, 1.0f}) {
    FocusOptions o;
    o.resize = 64;
    o.return_blobs = true;
    auto r = DetectFocus(cv::Mat(100, 80, CV_32F, cv::Scalar(level)), o);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->score, 0);
    EXPECT_TRUE(r->blobs.empty());
    EXPECT_FALSE(r->in_focus);
  }
}

TEST(DetectFocusTest, AcceptsDoubleImagesAndGivesTheSameAnswer) {
  TissueOptions t;
  t.size = 128;
  const cv::Mat f = MakeTissueImage(11, t);
  cv::Mat d;
  f.convertTo(d, CV_64F);
  FocusOptions o;
  o.resize = 128;
  EXPECT_EQ(DetectFocus(f, o)->score, DetectFocus(d, o)->score);
}

TEST(TissueTest, SameSeedSameImageAndSeedsDiffer) {
  TissueOptions t;
  t.size = 200;
  t.blur_sigma = 1.5;
  const cv::Mat a = MakeTissueImage(42, t), b = MakeTissueImage(42, t), c = MakeTissueImage(43, t);
  ASSERT_EQ(a.type(), CV_32FC1);
  ASSERT_EQ(a.size(), cv::Size(200, 200));
  EXPECT_EQ(cv::norm(a, b, cv::NORM_INF), 0);
  EXPECT_GT(cv::norm(a, c, cv::NORM_L1), 0);
  double lo = 0, hi = 0;
  cv::minMaxLoc(a, &lo, &hi);
  EXPECT_GE(lo, 0);
  EXPECT_LE(hi, 1);
  EXPECT_GT(hi - lo, 0.2);
  // The same focus answer every time.
  FocusOptions o;
  o.resize = 200;
  o.return_blobs = true;
  auto r1 = DetectFocus(a, o), r2 = DetectFocus(b, o);
  ASSERT_EQ(r1->blobs.size(), r2->blobs.size());
  EXPECT_EQ(r1->per_scale_counts, r2->per_scale_counts);
}

TEST(TissueTest, BlurSeriesVariesDefocusOnly) {
  // Without noise, the blurred image is the sharp one blurred: same tissue for every blur.
  TissueOptions t;
  t.size = 128;
  t.noise_sigma = 0;
  const cv::Mat sharp = MakeTissueImage(5, t);
  t.blur_sigma = 2;
  const cv::Mat blurred = MakeTissueImage(5, t);
  cv::Mat expected;
  cv::GaussianBlur(sharp, expected, cv::Size(0, 0), 2, 2, cv::BORDER_REFLECT);
  EXPECT_LT(cv::norm(blurred, expected, cv::NORM_INF), 1e-5);
  const auto& series = TissueBlurSeries();
  EXPECT_EQ(series.front(), 0);
  EXPECT_EQ(series.back(), 8);
}

// --- helpers ---

TEST(FocusCalibrationTest, FitsTheMidpointBetweenSeparatedClasses) {
  const ThresholdFit fit = FitFocusThreshold({100, 120, 90}, {10, 40, 30});
  EXPECT_DOUBLE_EQ(fit.threshold, 65);
  EXPECT_DOUBLE_EQ(fit.accuracy, 1);
  EXPECT_DOUBLE_EQ(fit.balanced_accuracy, 1);
  // Overlapping classes: the best balanced accuracy, reported honestly.
  const ThresholdFit overlap = FitFocusThreshold({50, 60, 70, 20}, {10, 30, 55});
  EXPECT_DOUBLE_EQ(overlap.threshold, 57.5);
  EXPECT_DOUBLE_EQ(overlap.balanced_accuracy, 0.5 * (2.0 / 4 + 3.0 / 3));
  EXPECT_DOUBLE_EQ(overlap.accuracy, 5.0 / 7);
}

TEST(FocusCalibrationTest, SpearmanRho) {
  EXPECT_DOUBLE_EQ(SpearmanRho({1, 2, 3, 4}, {10, 20, 30, 1000}), 1);
  EXPECT_DOUBLE_EQ(SpearmanRho({1, 2, 3, 4}, {4, 3, 2, 1}), -1);
  EXPECT_DOUBLE_EQ(SpearmanRho({1, 2, 3}, {5, 5, 5}), 0);
  EXPECT_NEAR(SpearmanRho({1, 2, 3, 4}, {1, 1, 2, 3}), 0.9486833, 1e-6);  // ties: average ranks
}

TEST(StandardMeasuresTest, ZeroOnConstantAndLowerWhenBlurred) {
  const cv::Mat flat(64, 64, CV_32F, cv::Scalar(0.3));
  EXPECT_NEAR(VarianceOfLaplacian(flat), 0, 1e-12);
  EXPECT_NEAR(Tenengrad(flat), 0, 1e-12);
  TissueOptions t;
  t.size = 128;
  t.noise_sigma = 0;
  const cv::Mat sharp = MakeTissueImage(1, t);
  t.blur_sigma = 3;
  const cv::Mat blurred = MakeTissueImage(1, t);
  EXPECT_GT(VarianceOfLaplacian(sharp), 2 * VarianceOfLaplacian(blurred));
  EXPECT_GT(Tenengrad(sharp), 2 * Tenengrad(blurred));
}

// --- accuracy on the synthetic blur series ---

enum Measure { kFocus, kLaplacian, kTenengrad, kMeasures };
const char* const kMeasureNames[kMeasures] = {"focus (fine DoG blobs)", "variance of Laplacian", "Tenengrad"};

// Scores of the three measures on the blur series of one seed.
struct SeriesScores {
  std::vector<double> scores[kMeasures];
};

SeriesScores ScoreSeries(uint64_t seed, int size, const FocusOptions& options) {
  SeriesScores out;
  for (double blur : TissueBlurSeries()) {
    TissueOptions t;
    t.size = size;
    t.blur_sigma = blur;
    const cv::Mat image = MakeTissueImage(seed, t);
    auto r = DetectFocus(image, options);
    LOOM_CHECK(r.ok());
    out.scores[kFocus].push_back(r->score);
    out.scores[kLaplacian].push_back(VarianceOfLaplacian(image));
    out.scores[kTenengrad].push_back(Tenengrad(image));
  }
  return out;
}

// The 512 x 512 series (analysed at 512, the property does not depend on the size), computed once.
class FocusSeriesTest : public ::testing::Test {
 protected:
  static constexpr int kSize = 512;
  static const std::map<uint64_t, SeriesScores>& Series() {
    static const std::map<uint64_t, SeriesScores>* const series = [] {
      auto* m = new std::map<uint64_t, SeriesScores>;
      FocusOptions o;
      o.resize = kSize;
      for (uint64_t seed : CalibrationSeeds()) (*m)[seed] = ScoreSeries(seed, kSize, o);
      for (uint64_t seed : HeldOutSeeds()) (*m)[seed] = ScoreSeries(seed, kSize, o);
      return m;
    }();
    return *series;
  }
  static std::vector<uint64_t> CalibrationSeeds() { return {1, 2}; }
  static std::vector<uint64_t> HeldOutSeeds() { return {1001, 1002, 1003, 1004}; }
};

struct Classified {
  ThresholdFit fit;
  int right = 0;
  int total = 0;
};

// Fits a threshold on the calibration seeds' labelled levels; counts right answers on held-out ones.
Classified FitAndClassify(const std::map<uint64_t, SeriesScores>& series, const std::vector<uint64_t>& fit_seeds,
                          const std::vector<uint64_t>& test_seeds, Measure m) {
  const auto& blurs = TissueBlurSeries();
  std::vector<double> in, out;
  for (uint64_t seed : fit_seeds) {
    for (size_t i = 0; i < blurs.size(); ++i) {
      if (blurs[i] <= kInFocusMaxBlur) in.push_back(series.at(seed).scores[m][i]);
      if (blurs[i] >= kOutOfFocusMinBlur) out.push_back(series.at(seed).scores[m][i]);
    }
  }
  Classified c;
  c.fit = FitFocusThreshold(in, out);
  for (uint64_t seed : test_seeds) {
    for (size_t i = 0; i < blurs.size(); ++i) {
      if (blurs[i] > kInFocusMaxBlur && blurs[i] < kOutOfFocusMinBlur) continue;  // transition band: no label
      const bool said_in = series.at(seed).scores[m][i] >= c.fit.threshold;
      c.right += said_in == (blurs[i] <= kInFocusMaxBlur) ? 1 : 0;
      ++c.total;
    }
  }
  return c;
}

TEST_F(FocusSeriesTest, ScoreFallsWithBlurForEverySeed) {
  for (uint64_t seed : HeldOutSeeds()) {
    const double rho = SpearmanRho(TissueBlurSeries(), Series().at(seed).scores[kFocus]);
    EXPECT_LE(rho, -0.9) << "seed " << seed;
  }
}

TEST_F(FocusSeriesTest, ThresholdFromCalibrationSeedsClassifiesHeldOutSeeds) {
  const Classified c = FitAndClassify(Series(), CalibrationSeeds(), HeldOutSeeds(), kFocus);
  EXPECT_GE(c.total, 40);
  EXPECT_GE(static_cast<double>(c.right) / c.total, 0.95)
      << c.right << "/" << c.total << " right with threshold " << c.fit.threshold;
}

// The comparison with the standard measures, printed (docs/VISION-FOCUS.md quotes the benchmark's
// larger run). Asserts only what holds for all three: they all fall with blur on average.
TEST_F(FocusSeriesTest, ReportsTheComparisonWithTheStandardMeasures) {
  std::printf("\n%dx%d synthetic tissue, blur 0..8 px; threshold fitted on seeds 1..2, judged on 1001..1004\n", kSize,
              kSize);
  std::printf("  %-24s %9s %9s %10s %14s\n", "measure", "rho max", "rho mean", "accuracy", "threshold");
  for (int m = 0; m < kMeasures; ++m) {
    double rho_max = -1, rho_sum = 0;
    for (uint64_t seed : HeldOutSeeds()) {
      const double rho = SpearmanRho(TissueBlurSeries(), Series().at(seed).scores[m]);
      rho_max = std::max(rho_max, rho);
      rho_sum += rho;
    }
    const Classified c = FitAndClassify(Series(), CalibrationSeeds(), HeldOutSeeds(), static_cast<Measure>(m));
    std::printf("  %-24s %9.3f %9.3f %9.1f%% %14.6g\n", kMeasureNames[m], rho_max,
                rho_sum / static_cast<double>(HeldOutSeeds().size()), 100.0 * c.right / c.total, c.fit.threshold);
    EXPECT_LT(rho_sum / static_cast<double>(HeldOutSeeds().size()), 0) << kMeasureNames[m];
  }
}

// At the default analysis size, the calibrated default threshold classifies held-out seeds.
TEST(FocusDefaultThresholdTest, ClassifiesHeldOutSeedsAt1024) {
  const FocusOptions defaults;
  ASSERT_EQ(defaults.resize, 1024);
  ASSERT_GT(kDefaultFocusThreshold, 0);
  const auto& blurs = TissueBlurSeries();
  int right = 0, total = 0;
  for (uint64_t seed : {1001u}) {
    for (double blur : blurs) {
      if (blur > kInFocusMaxBlur && blur < kOutOfFocusMinBlur) continue;
      TissueOptions t;
      t.blur_sigma = blur;
      auto r = DetectFocus(MakeTissueImage(seed, t), defaults);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->threshold, kDefaultFocusThreshold);
      const bool right_answer = r->in_focus == (blur <= kInFocusMaxBlur);
      if (!right_answer)
        std::printf("seed %u blur %g: score %.0f, in_focus %d\n", static_cast<unsigned>(seed), blur, r->score,
                    r->in_focus ? 1 : 0);
      right += right_answer ? 1 : 0;
      ++total;
    }
  }
  EXPECT_GE(static_cast<double>(right) / total, 0.95) << right << "/" << total;
}

}  // namespace
}  // namespace loom::vision
