// loom-focus-calibrate: chooses the focus kernel's in-focus threshold from labelled images.
//
//   loom-focus-calibrate --in-focus DIR --out-of-focus DIR      your own PNG/TIFF images
//   loom-focus-calibrate --synthetic --seeds 16                 the synthetic tissue series
//
// It scores every image with DetectFocus (the same options the kernel will run with: pass them
// here too), prints each class's score range and the threshold that maximises balanced accuracy
// (the midpoint between neighbouring scores), and the accuracy it gives on these images. Pass the
// threshold to the `focus` kernel (its `threshold` argument). docs/VISION-FOCUS.md explains more.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "common/value.h"
#include "kernels/vision/focus.h"
#include "kernels/vision/image.h"
#include "kernels/vision/tissue.h"

namespace fs = std::filesystem;
using namespace loom;          // NOLINT
using namespace loom::vision;  // NOLINT

namespace {

struct Scored {
  std::string name;
  double score = 0;
};

bool IsImageFile(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".tif" || ext == ".tiff";
}

// Scores every PNG/TIFF file in `dir` (not recursive, sorted by name).
Result<std::vector<Scored>> ScoreDirectory(const std::string& dir, const FocusOptions& options, bool verbose) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return InvalidArgument("'" + dir + "' is not a readable directory");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && IsImageFile(entry.path())) files.push_back(entry.path());
  }
  if (ec) return InvalidArgument("cannot list '" + dir + "': " + ec.message());
  if (files.empty()) return InvalidArgument("'" + dir + "' holds no .png, .tif or .tiff files");
  std::sort(files.begin(), files.end());
  std::vector<Scored> out;
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) return InvalidArgument("cannot open '" + f.string() + "'");
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return InvalidArgument("cannot read '" + f.string() + "'");
    auto image = ImageFromValue(BytesValue(std::move(bytes)), "focus");
    if (!image.ok()) return InvalidArgument("'" + f.string() + "': " + image.status().message());
    auto result = DetectFocus(*image, options);
    if (!result.ok()) return InvalidArgument("'" + f.string() + "': " + result.status().message());
    out.push_back({f.filename().string(), result->score});
    if (verbose) std::printf("  %-40s %10.0f\n", f.filename().string().c_str(), result->score);
  }
  return out;
}

std::vector<double> Scores(const std::vector<Scored>& v) {
  std::vector<double> s;
  for (const auto& x : v) s.push_back(x.score);
  return s;
}

void PrintRange(const char* label, std::vector<double> s) {
  std::sort(s.begin(), s.end());
  std::printf("%-14s n=%-5zu min %10.1f  median %10.1f  max %10.1f\n", label, s.size(), s.front(), s[s.size() / 2],
              s.back());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Chooses the focus kernel's in-focus threshold from labelled images: scores each image with the focus "
      "method, prints the per-class score ranges and the threshold that maximises balanced accuracy."};
  std::string in_dir, out_dir;
  bool synthetic = false, verbose = false;
  int seeds = 16, first_seed = 1, size = 1024;
  FocusOptions options;
  app.add_option("--in-focus", in_dir, "directory of in-focus PNG/TIFF images");
  app.add_option("--out-of-focus", out_dir, "directory of out-of-focus PNG/TIFF images");
  app.add_flag("--synthetic", synthetic,
               "use the synthetic tissue blur series instead (in focus: blur <= 1 px, out: >= 2 px)");
  app.add_option("--seeds", seeds, "synthetic: number of seeds")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--first-seed", first_seed, "synthetic: first seed")
      ->check(CLI::Range(0, 1 << 30))
      ->capture_default_str();
  app.add_option("--size", size, "synthetic: image side in pixels")->check(CLI::Range(16, 8192))->capture_default_str();
  app.add_option("--resize", options.resize, "focus option: analysis size (0 keeps the size)")->capture_default_str();
  app.add_option("--saturated-percent", options.saturated_percent, "focus option")->capture_default_str();
  app.add_option("--num-scales", options.num_scales, "focus option")->capture_default_str();
  app.add_option("--sigma-min", options.sigma_min, "focus option")->capture_default_str();
  app.add_option("--sigma-max", options.sigma_max, "focus option")->capture_default_str();
  app.add_option("--min-response", options.min_response, "focus option")->capture_default_str();
  app.add_option("--noise-floor", options.noise_floor, "focus option")->capture_default_str();
  app.add_option("--fine-sigma-max", options.fine_sigma_max, "focus option")->capture_default_str();
  app.add_flag("--verbose,-v", verbose, "print every image's score");
  CLI11_PARSE(app, argc, argv);

  if (Status s = ValidateFocusOptions(options); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 2;
  }
  if (synthetic == (!in_dir.empty() || !out_dir.empty())) {
    std::fprintf(stderr, "error: give either --in-focus DIR and --out-of-focus DIR, or --synthetic (see --help)\n");
    return 2;
  }
  if (!synthetic && (in_dir.empty() || out_dir.empty())) {
    std::fprintf(stderr, "error: give both --in-focus DIR and --out-of-focus DIR\n");
    return 2;
  }

  std::vector<double> in_scores, out_scores, transition;
  if (synthetic) {
    std::printf("synthetic tissue, %dx%d, seeds %d..%d, blur levels:", size, size, first_seed, first_seed + seeds - 1);
    for (double b : TissueBlurSeries()) std::printf(" %g", b);
    std::printf(" px\n");
    for (int seed = first_seed; seed < first_seed + seeds; ++seed) {
      if (verbose) std::printf("  seed %d:", seed);
      for (double blur : TissueBlurSeries()) {
        TissueOptions t;
        t.size = size;
        t.blur_sigma = blur;
        auto r = DetectFocus(MakeTissueImage(static_cast<uint64_t>(seed), t), options);
        if (!r.ok()) {
          std::fprintf(stderr, "error: %s\n", r.status().message().c_str());
          return 1;
        }
        if (verbose) std::printf(" %g:%.0f", blur, r->score);
        if (blur <= kInFocusMaxBlur) {
          in_scores.push_back(r->score);
        } else if (blur >= kOutOfFocusMinBlur) {
          out_scores.push_back(r->score);
        } else {
          transition.push_back(r->score);
        }
      }
      if (verbose) std::printf("\n");
    }
  } else {
    if (verbose) std::printf("in focus (%s):\n", in_dir.c_str());
    auto in = ScoreDirectory(in_dir, options, verbose);
    if (!in.ok()) {
      std::fprintf(stderr, "error: %s\n", in.status().message().c_str());
      return 1;
    }
    if (verbose) std::printf("out of focus (%s):\n", out_dir.c_str());
    auto out = ScoreDirectory(out_dir, options, verbose);
    if (!out.ok()) {
      std::fprintf(stderr, "error: %s\n", out.status().message().c_str());
      return 1;
    }
    in_scores = Scores(*in);
    out_scores = Scores(*out);
  }

  PrintRange("in focus", in_scores);
  PrintRange("out of focus", out_scores);
  if (!transition.empty()) PrintRange("transition", transition);
  const ThresholdFit fit = FitFocusThreshold(in_scores, out_scores);
  std::printf("threshold %.1f (in focus when score >= threshold)\n", fit.threshold);
  std::printf("accuracy %.2f%%, balanced accuracy %.2f%% on these %zu images\n", 100 * fit.accuracy,
              100 * fit.balanced_accuracy, in_scores.size() + out_scores.size());
  const double lowest_in = *std::min_element(in_scores.begin(), in_scores.end());
  const double highest_out = *std::max_element(out_scores.begin(), out_scores.end());
  if (lowest_in <= highest_out) {
    std::printf("note: the classes overlap (lowest in-focus score %.0f <= highest out-of-focus %.0f)\n", lowest_in,
                highest_out);
  }
  return 0;
}
