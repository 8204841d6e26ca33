// loom-bench-dog: the DoG blob kernel's speed on 1000x1000 frames of 100 Gaussian spheres
// (MakeSpheresFrame, seeds 1..--images), in both modes, and the Gaussian filter's direct-vs-FFT
// sweep that sets kFftSigmaThreshold (docs/VISION-DOG.md).
//   dog:   ms per frame, with a DogWorkspace kept across frames, (median and p90 over --images frames x --repeats) for
//   n_bin = 3, 10, 50:
//          kPaper (sigma 1.5..16 arithmetic, threshold 0.1, float32) and kSkimage (the same
//          scale count, geometric: sigma_ratio = (16 / 1.5)^(1 / n_bin), float64), with the blob
//          count and the precision / recall against the known spheres.
//   sweep: ms for one GaussianFilter per sigma, direct and FFT (each allocating its result), and
//          the FFT cost per scale inside GaussianFilterBank (forward transform shared by 8 scales,
//          buffers reused), single-threaded.
// --out-dir writes the frames as 16-bit PNG (frame_<seed>.png) for bench/vision/skimage_dog.py;
// the kernel runs on the same 16-bit-quantised pixels.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/util.h"
#include "kernels/vision/dog.h"
#include "kernels/vision/gaussian.h"
#include "kernels/vision/spheres.h"

using namespace loom::vision;  // NOLINT
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kMinSigma = 1.5;
constexpr double kMaxSigma = 16.0;
constexpr double kThreshold = 0.1;

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct Frame {
  int seed = 0;
  cv::Mat f32;  // 16-bit-quantised pixels as float32 (kPaper) ...
  cv::Mat f64;  // ... and as float64 = u16 * (1 / 65535), img_as_float's conversion (kSkimage)
  std::vector<Sphere> truth;
};

// The options for `mode` with n_bin + 1 scales from kMinSigma to kMaxSigma. For kSkimage,
// sigma_ratio = (max / min)^(1 / n_bin) and max_sigma is lowered by half a ratio step so that
// blob_dog's k = int(log(max / min) / log(ratio) + 1) is n_bin, not an off-by-one from rounding.
DogOptions OptionsFor(DogMode mode, int n_bin) {
  DogOptions o;
  o.mode = mode;
  o.min_sigma = kMinSigma;
  o.max_sigma = kMaxSigma;
  o.n_bin = n_bin;
  o.threshold = kThreshold;
  o.overlap = 0.5;
  if (mode == DogMode::kSkimage) {
    o.sigma_ratio = std::pow(kMaxSigma / kMinSigma, 1.0 / n_bin);
    o.max_sigma = kMaxSigma / std::sqrt(o.sigma_ratio);
  }
  return o;
}

template <typename F>
double TimeMs(int reps, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = Clock::now();
    f();
    t.push_back(Ms(a, Clock::now()));
  }
  return Percentile(t, 50);
}

}  // namespace

int main(int argc, char** argv) {
  // As in loom-worker, where these kernels run (see common/util.h).
  loom::TuneAllocatorForLargeMessages();
  CLI::App app{"loom-bench-dog: DoG blob kernel speed (paper and scikit-image modes) and the Gaussian path sweep"};
  int images = 5;
  int repeats = 1;
  int threads = 0;
  bool json = false;
  bool skip_sweep = false;
  bool skip_dog = false;
  std::string out_dir;
  std::vector<int> n_bins = {3, 10, 50};
  app.add_option("--images", images, "frames to time (seeds 1..N)")->check(CLI::Range(1, 1000));
  app.add_option("--repeats", repeats, "timed runs per frame")->check(CLI::Range(1, 100));
  app.add_option("--threads", threads, "OpenCV threads (0: OpenCV's default, all cores)")->check(CLI::Range(0, 1024));
  app.add_option("--n-bin", n_bins, "n_bin values to time")->check(CLI::Range(1, 200));
  app.add_option("--out-dir", out_dir, "write the frames here as 16-bit PNG for skimage_dog.py");
  app.add_flag("--json", json, "print JSON lines instead of tables");
  app.add_flag("--skip-sweep", skip_sweep, "skip the direct-vs-FFT sweep");
  app.add_flag("--skip-dog", skip_dog, "skip the DoG timings");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) cv::setNumThreads(threads);
  const int used_threads = cv::getNumThreads();

  std::vector<Frame> frames;
  if (!out_dir.empty()) std::filesystem::create_directories(out_dir);
  for (int seed = 1; seed <= images; ++seed) {
    SpheresFrame sf = MakeSpheresFrame(static_cast<uint64_t>(seed), SpheresOptions{});
    cv::Mat u16;
    sf.image.convertTo(u16, CV_16U, 65535.0);  // rounds to nearest
    Frame f;
    f.seed = seed;
    u16.convertTo(f.f32, CV_32F, 1.0 / 65535.0);
    f.f64.create(u16.size(), CV_64F);
    for (int y = 0; y < u16.rows; ++y)
      for (int x = 0; x < u16.cols; ++x) f.f64.at<double>(y, x) = u16.at<uint16_t>(y, x) * (1.0 / 65535.0);
    f.truth = sf.spheres;
    if (!out_dir.empty()) {
      const std::string path = out_dir + "/frame_" + std::to_string(seed) + ".png";
      if (!cv::imwrite(path, u16)) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        return 1;
      }
    }
    frames.push_back(std::move(f));
  }

  if (!json) {
    std::printf(
        "loom-bench-dog: %d frames 1000x1000, 100 Gaussian spheres (radius 3-20), OpenCV threads %d, "
        "hardware threads %u\n",
        images, used_threads, std::thread::hardware_concurrency());
  }

  if (!skip_dog) {
    if (!json) {
      std::printf("\n%-8s %6s %7s %10s %10s %8s %10s %8s\n", "mode", "n_bin", "scales", "ms_median", "ms_p90", "blobs",
                  "precision", "recall");
    }
    for (DogMode mode : {DogMode::kPaper, DogMode::kSkimage}) {
      for (int n_bin : n_bins) {
        const DogOptions o = OptionsFor(mode, n_bin);
        const auto sigmas = DogSigmas(o);
        if (!sigmas.ok()) {
          std::fprintf(stderr, "%s\n", sigmas.status().ToString().c_str());
          return 1;
        }
        const cv::Mat& warm = mode == DogMode::kPaper ? frames[0].f32 : frames[0].f64;
        // One workspace per configuration, as a worker streaming frames of one size would keep.
        DogWorkspace ws;
        (void)DetectDogBlobs(warm, o, &ws);  // first-touch allocations and thread pool start-up
        std::vector<double> ms;
        int64_t blobs = 0, matched = 0, truth = 0;
        for (const Frame& f : frames) {
          const cv::Mat& img = mode == DogMode::kPaper ? f.f32 : f.f64;
          for (int r = 0; r < repeats; ++r) {
            const auto a = Clock::now();
            auto res = DetectDogBlobs(img, o, &ws);
            ms.push_back(Ms(a, Clock::now()));
            if (!res.ok()) {
              std::fprintf(stderr, "%s\n", res.status().ToString().c_str());
              return 1;
            }
            if (r == 0) {
              blobs += static_cast<int64_t>(res->blobs.size());
              matched += MatchToTruth(f.truth, res->blobs).matched;
              truth += static_cast<int64_t>(f.truth.size());
            }
          }
        }
        const char* name = mode == DogMode::kPaper ? "paper" : "skimage";
        const double precision = blobs ? static_cast<double>(matched) / blobs : 0;
        const double recall = truth ? static_cast<double>(matched) / truth : 0;
        const int scales = static_cast<int>(sigmas->size());
        if (json) {
          std::printf(
              "{\"bench\":\"dog\",\"mode\":\"%s\",\"n_bin\":%d,\"scales\":%d,\"images\":%d,\"threads\":%d,"
              "\"ms_median\":%.3f,\"ms_p90\":%.3f,\"blobs_per_image\":%.1f,\"precision\":%.4f,"
              "\"recall\":%.4f,\"min_sigma\":%.17g,\"max_sigma\":%.17g,\"sigma_ratio\":%.17g,"
              "\"threshold\":%g}\n",
              name, n_bin, scales, images, used_threads, Percentile(ms, 50), Percentile(ms, 90),
              static_cast<double>(blobs) / images, precision, recall, o.min_sigma, o.max_sigma, o.sigma_ratio,
              o.threshold);
        } else {
          std::printf("%-8s %6d %7d %10.1f %10.1f %8.1f %10.3f %8.3f\n", name, n_bin, scales, Percentile(ms, 50),
                      Percentile(ms, 90), static_cast<double>(blobs) / images, precision, recall);
        }
        std::fflush(stdout);
      }
    }
  }

  if (!skip_sweep) {
    // One thread, so the per-filter costs compare like for like.
    cv::setNumThreads(1);
    const cv::Mat& img = frames[0].f32;
    constexpr int kBank = 8;
    if (!json) {
      std::printf("\nGaussian filter, 1000x1000 float32, truncate 4, reflect, 1 thread (ms, median of 5)\n");
      std::printf("%6s %8s %10s %8s %14s\n", "sigma", "radius", "direct", "fft", "fft_in_bank");
    }
    for (double sigma : {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0}) {
      const double direct =
          TimeMs(5, [&] { (void)GaussianFilter(img, sigma, 4.0, Border::kReflect, ConvPath::kDirect); });
      const double fft = TimeMs(5, [&] { (void)GaussianFilter(img, sigma, 4.0, Border::kReflect, ConvPath::kFft); });
      const std::vector<double> same(kBank, sigma);
      std::vector<cv::Mat> out;
      GaussianWorkspace ws;
      GaussianFilterBank(img, same, 4.0, Border::kReflect, ConvPath::kFft, out, ws);  // allocate once
      const double bank =
          TimeMs(3, [&] { GaussianFilterBank(img, same, 4.0, Border::kReflect, ConvPath::kFft, out, ws); }) / kBank;
      const int radius = static_cast<int>(4.0 * sigma + 0.5);
      if (json) {
        std::printf(
            "{\"bench\":\"gauss_sweep\",\"sigma\":%g,\"radius\":%d,\"direct_ms\":%.3f,\"fft_ms\":%.3f,"
            "\"fft_bank_ms\":%.3f}\n",
            sigma, radius, direct, fft, bank);
      } else {
        std::printf("%6g %8d %10.2f %8.2f %14.2f\n", sigma, radius, direct, fft, bank);
      }
      std::fflush(stdout);
    }
    if (!json) {
      std::printf("kFftSigmaThreshold = %g (GaussianFilter), kFftBankSigmaThreshold = %g (GaussianFilterBank)\n",
                  kFftSigmaThreshold, kFftBankSigmaThreshold);
    }
  }
  return 0;
}
