// loom-bench-focus: the focus kernel's speed and accuracy, next to the paper's figure and the two
// standard focus measures (docs/VISION-FOCUS.md).
//   speed:    ms per image (median, p90 over --images images) for DetectFocus on a 1024x1024 input
//             and on a 2048x2048 input (the resize to 1024 included), with the stages
//             (prepare = resize + contrast stretch; DoG scale space by FFT; blob extraction), and
//             for VarianceOfLaplacian and Tenengrad on the 1024x1024 input.
//   accuracy: on the synthetic tissue blur series (0..8 px), per measure: Spearman rho between the
//             measure and the blur per seed, and the accuracy on held-out seeds of a threshold fitted
//             on calibration seeds (in focus: blur <= 1 px; out of focus: >= 2 px).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <opencv2/core.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/util.h"
#include "kernels/vision/focus.h"
#include "kernels/vision/tissue.h"

using namespace loom;          // NOLINT
using namespace loom::vision;  // NOLINT
using Clock = std::chrono::steady_clock;

namespace {

// The paper's figure: focus detection on a 1024x1024 image in 20 ms, on a GPU.
constexpr double kPaperMs = 20.0;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

struct Timing {
  std::string name;
  std::vector<double> ms;
};

void Report(const Timing& t, bool json, const char* note = "") {
  if (json) {
    std::printf(
        "{\"bench\":\"focus\",\"metric\":\"ms_per_image\",\"case\":\"%s\",\"images\":%zu,\"median_ms\":%.3f,"
        "\"p90_ms\":%.3f}\n",
        t.name.c_str(), t.ms.size(), Percentile(t.ms, 50), Percentile(t.ms, 90));
  } else {
    std::printf("  %-34s median %8.2f ms   p90 %8.2f ms  %s\n", t.name.c_str(), Percentile(t.ms, 50),
                Percentile(t.ms, 90), note);
  }
}

struct Measure {
  std::string name;
  std::function<double(const cv::Mat&)> score;
};

}  // namespace

int main(int argc, char** argv) {
  // As in loom-worker, where these kernels run (see common/util.h).
  loom::TuneAllocatorForLargeMessages();
  CLI::App app{
      "Focus detection: ms per image next to the paper's 20 ms (GPU), and accuracy against the variance "
      "of the Laplacian and Tenengrad on the synthetic tissue blur series."};
  int images = 10, size = 1024, seeds = 4;
  bool json = false, skip_accuracy = false;
  app.add_option("--images", images, "images per timing")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--size", size, "input side for the first timing (the second uses 2x)")
      ->check(CLI::Range(16, 4096))
      ->capture_default_str();
  app.add_option("--seeds", seeds, "accuracy: calibration seeds 1..N and held-out seeds 1001..1000+N")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_flag("--no-accuracy", skip_accuracy, "timings only");
  app.add_flag("--json", json, "JSON lines instead of tables");
  CLI11_PARSE(app, argc, argv);

  if (json) {
    std::printf("{\"bench\":\"focus\",\"nproc\":%u,\"cpu\":\"%s\",\"opencv_threads\":%d,\"opencv\":\"%s\"}\n",
                std::thread::hardware_concurrency(), CpuModel().c_str(), cv::getNumThreads(), CV_VERSION);
  } else {
    std::printf("machine: %u CPUs (nproc), %s; OpenCV %s with %d threads\n", std::thread::hardware_concurrency(),
                CpuModel().c_str(), CV_VERSION, cv::getNumThreads());
  }

  const FocusOptions options;  // the kernel's defaults: resize 1024, 30 scales, sigma 1..30
  // --- speed ---
  for (const int input : {size, 2 * size}) {
    std::vector<cv::Mat> inputs;
    for (int i = 0; i < images; ++i) {
      TissueOptions t;
      t.size = input;
      t.blur_sigma = (i % 3) * 1.5;
      inputs.push_back(MakeTissueImage(static_cast<uint64_t>(500 + i), t));
    }
    const std::string tag = std::to_string(input) + "x" + std::to_string(input);
    Timing total{"DetectFocus " + tag, {}}, prep{"  prepare (resize + stretch)", {}},
        space{"  DoG scale space (FFT)", {}}, blobs{"  blobs (3x3 maxima, counts)", {}};
    (void)DetectFocus(inputs[0], options);  // warm-up: thread pool, allocator
    for (const cv::Mat& image : inputs) {
      const auto t0 = Clock::now();
      auto prepared = PrepareFocusImage(image, options);
      const auto t1 = Clock::now();
      const ScaleSpaceMax s = DogMaxOverScale(*prepared, options);
      const auto t2 = Clock::now();
      const FocusResult r = FindFocusBlobs(s, options);
      const auto t3 = Clock::now();
      if (r.per_scale_counts.empty()) return 1;
      total.ms.push_back(Ms(t0, t3));
      prep.ms.push_back(Ms(t0, t1));
      space.ms.push_back(Ms(t1, t2));
      blobs.ms.push_back(Ms(t2, t3));
    }
    if (!json)
      std::printf("input %s, analysed at %dx%d (%d scales, sigma %g..%g):\n", tag.c_str(), options.resize,
                  options.resize, options.num_scales, options.sigma_min, options.sigma_max);
    Report(total, json, input == 1024 ? "(paper: 20 ms on a GPU)" : "");
    for (const Timing* t : {&prep, &space, &blobs}) Report(*t, json);
    if (input == size) {
      Timing lap{"VarianceOfLaplacian " + tag, {}}, ten{"Tenengrad " + tag, {}};
      for (const cv::Mat& image : inputs) {
        auto t0 = Clock::now();
        volatile double v = VarianceOfLaplacian(image);
        auto t1 = Clock::now();
        v = Tenengrad(image);
        auto t2 = Clock::now();
        (void)v;
        lap.ms.push_back(Ms(t0, t1));
        ten.ms.push_back(Ms(t1, t2));
      }
      Report(lap, json);
      Report(ten, json);
    }
  }
  if (!json) std::printf("paper (Levental et al. 2021): %.0f ms per 1024x1024 image on a GPU\n", kPaperMs);
  if (skip_accuracy) return 0;

  // --- accuracy on the synthetic blur series ---
  const std::vector<Measure> measures = {
      {"focus (fine DoG blobs)",
       [&](const cv::Mat& m) {
         auto r = DetectFocus(m, options);
         return r.ok() ? r->score : -1.0;
       }},
      {"variance of Laplacian", [](const cv::Mat& m) { return VarianceOfLaplacian(m); }},
      {"Tenengrad", [](const cv::Mat& m) { return Tenengrad(m); }},
  };
  const std::vector<double>& blurs = TissueBlurSeries();
  // scores[measure][seed index][blur index]; seeds: calibration 1..N, held out 1001..1000+N.
  std::vector<uint64_t> seed_list;
  for (int s = 1; s <= seeds; ++s) seed_list.push_back(static_cast<uint64_t>(s));
  for (int s = 1; s <= seeds; ++s) seed_list.push_back(static_cast<uint64_t>(1000 + s));
  std::vector<std::vector<std::vector<double>>> scores(measures.size());
  for (auto& m : scores) m.assign(seed_list.size(), std::vector<double>(blurs.size()));
  for (size_t si = 0; si < seed_list.size(); ++si) {
    for (size_t bi = 0; bi < blurs.size(); ++bi) {
      TissueOptions t;
      t.size = size;
      t.blur_sigma = blurs[bi];
      const cv::Mat image = MakeTissueImage(seed_list[si], t);
      for (size_t mi = 0; mi < measures.size(); ++mi) scores[mi][si][bi] = measures[mi].score(image);
    }
  }
  if (!json) {
    std::printf("\naccuracy on the synthetic tissue series (%dx%d, blur", size, size);
    for (double b : blurs) std::printf(" %g", b);
    std::printf(
        " px; noise 0.02):\n  in focus: blur <= %g px, out of focus: >= %g px; the 1.5 px level is the "
        "transition band (in rho, not in accuracy)\n  threshold fitted on seeds 1..%d, accuracy on held-out "
        "seeds 1001..%d\n",
        kInFocusMaxBlur, kOutOfFocusMinBlur, seeds, 1000 + seeds);
    std::printf("  %-24s %9s %9s %11s %10s %10s\n", "measure", "rho max", "rho mean", "threshold", "accuracy",
                "balanced");
  }
  for (size_t mi = 0; mi < measures.size(); ++mi) {
    double rho_max = -1, rho_sum = 0;  // the worst (least negative) seed
    std::vector<double> fit_in, fit_out;
    int right = 0, total = 0, in_right = 0, in_total = 0, out_right = 0, out_total = 0;
    for (size_t si = 0; si < seed_list.size(); ++si) {
      const double rho = SpearmanRho(blurs, scores[mi][si]);
      rho_max = std::max(rho_max, rho);
      rho_sum += rho;
      if (static_cast<int>(si) < seeds) {
        for (size_t bi = 0; bi < blurs.size(); ++bi) {
          if (blurs[bi] <= kInFocusMaxBlur) fit_in.push_back(scores[mi][si][bi]);
          if (blurs[bi] >= kOutOfFocusMinBlur) fit_out.push_back(scores[mi][si][bi]);
        }
      }
    }
    const ThresholdFit fit = FitFocusThreshold(fit_in, fit_out);
    for (size_t si = static_cast<size_t>(seeds); si < seed_list.size(); ++si) {
      for (size_t bi = 0; bi < blurs.size(); ++bi) {
        const bool said_in = scores[mi][si][bi] >= fit.threshold;
        if (blurs[bi] <= kInFocusMaxBlur) {
          ++in_total;
          in_right += said_in ? 1 : 0;
        } else if (blurs[bi] >= kOutOfFocusMinBlur) {
          ++out_total;
          out_right += said_in ? 0 : 1;
        }
      }
    }
    right = in_right + out_right;
    total = in_total + out_total;
    const double accuracy = static_cast<double>(right) / total;
    const double balanced =
        0.5 * (static_cast<double>(in_right) / in_total + static_cast<double>(out_right) / out_total);
    const double rho_mean = rho_sum / static_cast<double>(seed_list.size());
    if (json) {
      std::printf(
          "{\"bench\":\"focus\",\"metric\":\"accuracy\",\"measure\":\"%s\",\"size\":%d,\"seeds\":%d,"
          "\"rho_max\":%.4f,\"rho_mean\":%.4f,\"threshold\":%.6g,\"heldout_accuracy\":%.4f,"
          "\"heldout_balanced_accuracy\":%.4f}\n",
          measures[mi].name.c_str(), size, seeds, rho_max, rho_mean, fit.threshold, accuracy, balanced);
    } else {
      std::printf("  %-24s %9.3f %9.3f %11.4g %9.1f%% %9.1f%%\n", measures[mi].name.c_str(), rho_max, rho_mean,
                  fit.threshold, 100 * accuracy, 100 * balanced);
    }
  }
  return 0;
}
