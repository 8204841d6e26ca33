#include "kernels/vision/dog.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <opencv2/core/utility.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>

namespace loom::vision {
namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

Status Bad(const std::string& what) { return InvalidArgument("dog_blobs: " + what); }

// One scale-space maximum: DoG scale `s` at (y, x).
struct Peak {
  double value = 0;
  int y = 0;
  int x = 0;
  int s = 0;
};

template <typename T>
void ComputeDog(std::vector<cv::Mat>& gauss, const std::vector<double>& scale) {
  const int k = static_cast<int>(gauss.size()) - 1;
  const int rows = gauss[0].rows;
  const int cols = gauss[0].cols;
  cv::parallel_for_(cv::Range(0, rows), [&](const cv::Range& range) {
    for (int y = range.start; y < range.end; ++y) {
      // Ascending i: L_i is overwritten by DoG_i only after DoG_i-1 has read it.
      for (int i = 0; i < k; ++i) {
        T* a = gauss[i].ptr<T>(y);
        const T* b = gauss[i + 1].ptr<T>(y);
        const T sf = static_cast<T>(scale[i]);
        for (int x = 0; x < cols; ++x) a[x] = (a[x] - b[x]) * sf;
      }
    }
  });
}

// The local maxima of the DoG cube over a 3x3x3 neighbourhood (scale, y, x) that exceed
// `threshold`, as peak_local_max(footprint=ones((3,3,3)), exclude_border=False) finds them: a
// voxel is a peak when no neighbour is larger (ties are all peaks). Outside the cube counts as 0
// (maximum_filter's mode='constant'), which cannot matter because a peak exceeds threshold >= 0.
template <typename T>
std::vector<Peak> FindPeaks(const std::vector<cv::Mat>& dog, int k, double threshold, int64_t* maxima_count) {
  const int rows = dog[0].rows;
  const int cols = dog[0].cols;
  std::vector<std::vector<Peak>> per_row(static_cast<size_t>(rows));
  std::vector<int64_t> row_maxima(static_cast<size_t>(rows), 0);
  cv::parallel_for_(cv::Range(0, rows), [&](const cv::Range& range) {
    for (int y = range.start; y < range.end; ++y) {
      const int y0 = std::max(0, y - 1);
      const int y1 = std::min(rows - 1, y + 1);
      for (int s = 0; s < k; ++s) {
        const int s0 = std::max(0, s - 1);
        const int s1 = std::min(k - 1, s + 1);
        const T* row = dog[s].ptr<T>(y);
        for (int x = 0; x < cols; ++x) {
          const T v = row[x];
          if (!(static_cast<double>(v) > threshold)) continue;
          const int x0 = std::max(0, x - 1);
          const int x1 = std::min(cols - 1, x + 1);
          bool is_max = true;
          for (int ss = s0; ss <= s1 && is_max; ++ss) {
            for (int yy = y0; yy <= y1 && is_max; ++yy) {
              const T* p = dog[ss].ptr<T>(yy);
              for (int xx = x0; xx <= x1; ++xx) {
                if (p[xx] > v) {
                  is_max = false;
                  break;
                }
              }
            }
          }
          if (is_max) {
            Peak peak;
            peak.value = static_cast<double>(v);
            peak.y = y;
            peak.x = x;
            peak.s = s;
            per_row[y].push_back(peak);
          }
        }
      }
      row_maxima[y] = static_cast<int64_t>(per_row[y].size());
    }
  });
  std::vector<Peak> peaks;
  int64_t total = 0;
  for (size_t y = 0; y < per_row.size(); ++y) {
    total += row_maxima[y];
    peaks.insert(peaks.end(), per_row[y].begin(), per_row[y].end());
  }
  *maxima_count = total;
  return peaks;
}

// skimage.feature.blob._compute_disk_overlap, operation for operation.
double DiskOverlap(double d, double r1, double r2) {
  const double ratio1 = std::clamp((d * d + r1 * r1 - r2 * r2) / (2 * d * r1), -1.0, 1.0);
  const double acos1 = std::acos(ratio1);
  const double ratio2 = std::clamp((d * d + r2 * r2 - r1 * r1) / (2 * d * r2), -1.0, 1.0);
  const double acos2 = std::acos(ratio2);
  const double a = -d + r2 + r1;
  const double b = d - r2 + r1;
  const double c = d + r2 - r1;
  const double e = d + r2 + r1;
  const double area = r1 * r1 * acos1 + r2 * r2 * acos2 - 0.5 * std::sqrt(std::abs(a * b * c * e));
  const double rmin = std::min(r1, r2);
  return area / (std::numbers::pi * (rmin * rmin));
}

struct Blob3 {
  double y;
  double x;
  double sigma;  // 0 once pruned
};

// skimage.feature.blob._blob_overlap for 2-D blobs with one sigma.
double BlobOverlap(const Blob3& b1, const Blob3& b2) {
  const double root_ndim = std::sqrt(2.0);
  if (b1.sigma == 0 && b2.sigma == 0) return 0.0;
  double max_sigma, r1, r2;
  if (b1.sigma > b2.sigma) {
    max_sigma = b1.sigma;
    r1 = 1;
    r2 = b2.sigma / b1.sigma;
  } else {
    max_sigma = b2.sigma;
    r2 = 1;
    r1 = b1.sigma / b2.sigma;
  }
  const double scale = max_sigma * root_ndim;
  const double dy = b2.y / scale - b1.y / scale;
  const double dx = b2.x / scale - b1.x / scale;
  const double d = std::sqrt(dy * dy + dx * dx);
  if (d > r1 + r2) return 0.0;
  if (d <= std::abs(r1 - r2)) return 1.0;
  return DiskOverlap(d, r1, r2);
}

// skimage.feature.blob._prune_blobs: for each pair closer than 2 sqrt(2) max(sigma) whose overlap
// exceeds `overlap`, the smaller blob (on equal sigmas, the first of the pair) is dropped. The
// pairs are visited in ascending (i, j) order; scikit-image visits them in the iteration order of
// a Python set, which only matters for chains (A drops B, B drops C), see docs/VISION-DOG.md.
void PruneBlobs(std::vector<Blob3>& blobs, double overlap) {
  if (blobs.size() < 2) return;
  double sigma_max = 0;
  for (const Blob3& b : blobs) sigma_max = std::max(sigma_max, b.sigma);
  const double distance = 2 * sigma_max * std::sqrt(2.0);
  // A grid of cells `distance` wide: pairs within `distance` lie in neighbouring cells.
  const double cell = std::max(distance, 1.0);
  std::unordered_map<int64_t, std::vector<int>> grid;
  auto key = [](int64_t cy, int64_t cx) { return (cy << 32) ^ (cx & 0xffffffff); };
  for (size_t i = 0; i < blobs.size(); ++i) {
    grid[key(static_cast<int64_t>(std::floor(blobs[i].y / cell)), static_cast<int64_t>(std::floor(blobs[i].x / cell)))]
        .push_back(static_cast<int>(i));
  }
  // Visiting i ascending and, for each i, its partners j > i ascending is the ascending (i, j)
  // order without holding every pair.
  std::vector<int> partners;
  for (size_t i = 0; i < blobs.size(); ++i) {
    const int64_t cy = static_cast<int64_t>(std::floor(blobs[i].y / cell));
    const int64_t cx = static_cast<int64_t>(std::floor(blobs[i].x / cell));
    partners.clear();
    for (int64_t dy = -1; dy <= 1; ++dy) {
      for (int64_t dx = -1; dx <= 1; ++dx) {
        auto it = grid.find(key(cy + dy, cx + dx));
        if (it == grid.end()) continue;
        for (int j : it->second) {
          if (j <= static_cast<int>(i)) continue;
          const double ey = blobs[i].y - blobs[j].y;
          const double ex = blobs[i].x - blobs[j].x;
          if (std::sqrt(ey * ey + ex * ex) <= distance) partners.push_back(j);
        }
      }
    }
    std::sort(partners.begin(), partners.end());
    for (int j : partners) {
      Blob3& b1 = blobs[i];
      Blob3& b2 = blobs[j];
      if (BlobOverlap(b1, b2) > overlap) {
        if (b1.sigma > b2.sigma) {
          b2.sigma = 0;
        } else {
          b1.sigma = 0;
        }
      }
    }
  }
}

template <typename T>
std::vector<Peak> DogPeaks(std::vector<cv::Mat>& gauss, const std::vector<double>& scale, double threshold) {
  ComputeDog<T>(gauss, scale);
  const int k = static_cast<int>(gauss.size()) - 1;
  int64_t maxima = 0;
  std::vector<Peak> peaks = FindPeaks<T>(gauss, k, threshold, &maxima);
  const int64_t voxels = static_cast<int64_t>(k) * gauss[0].rows * gauss[0].cols;
  // peak_local_max returns nothing for a "trivial" cube where every voxel is a maximum.
  if (voxels > 1 && maxima == voxels) peaks.clear();
  return peaks;
}

}  // namespace

Status ValidateDogOptions(const DogOptions& o) {
  if (!(o.min_sigma > 0) || !(o.min_sigma <= kMaxDogSigma)) {
    return Bad("min_sigma is " + Num(o.min_sigma) + "; it must be > 0 and <= " + Num(kMaxDogSigma));
  }
  if (!(o.max_sigma > o.min_sigma) || !(o.max_sigma <= kMaxDogSigma)) {
    return Bad("max_sigma is " + Num(o.max_sigma) + "; it must be > min_sigma (" + Num(o.min_sigma) +
               ") and <= " + Num(kMaxDogSigma));
  }
  if (o.n_bin < 1 || o.n_bin > kMaxDogScales - 1) {
    return Bad("n_bin is " + std::to_string(o.n_bin) + "; it must be in 1.." + std::to_string(kMaxDogScales - 1));
  }
  if (!(o.sigma_ratio > 1) || !std::isfinite(o.sigma_ratio)) {
    return Bad("sigma_ratio is " + Num(o.sigma_ratio) + "; it must be a finite number > 1");
  }
  if (!(o.threshold >= 0) || !std::isfinite(o.threshold)) {
    return Bad("threshold is " + Num(o.threshold) + "; it must be a finite number >= 0");
  }
  if (!(o.overlap >= 0 && o.overlap <= 1)) {
    return Bad("overlap is " + Num(o.overlap) + "; it must be in [0, 1]");
  }
  if (!(o.truncate > 0 && o.truncate <= 10)) {
    return Bad("truncate is " + Num(o.truncate) + "; it must be in (0, 10]");
  }
  if (o.histogram_bins < 1 || o.histogram_bins > 1000) {
    return Bad("histogram_bins is " + std::to_string(o.histogram_bins) + "; it must be in 1..1000");
  }
  if (!(o.presmooth_sigma > 0 && o.presmooth_sigma <= kMaxDogSigma)) {
    return Bad("presmooth_sigma is " + Num(o.presmooth_sigma) + "; it must be > 0 and <= " + Num(kMaxDogSigma));
  }
  if (o.mode != DogMode::kPaper && o.mode != DogMode::kSkimage) return Bad("mode is not kPaper or kSkimage");
  return Status::Ok();
}

Result<std::vector<double>> DogSigmas(const DogOptions& o) {
  LOOM_RETURN_IF_ERROR(ValidateDogOptions(o));
  std::vector<double> sigmas;
  if (o.mode == DogMode::kPaper) {
    const double step = (o.max_sigma - o.min_sigma) / o.n_bin;
    for (int i = 0; i <= o.n_bin; ++i) sigmas.push_back(i == o.n_bin ? o.max_sigma : o.min_sigma + i * step);
    return sigmas;
  }
  // blob_dog: k = int(mean(log(max_sigma / min_sigma) / log(sigma_ratio) + 1)), sigmas for i = 0..k.
  const double kf = std::log(o.max_sigma / o.min_sigma) / std::log(o.sigma_ratio) + 1;
  if (!(kf < kMaxDogScales)) {
    return Bad("sigma_ratio " + Num(o.sigma_ratio) + " from min_sigma " + Num(o.min_sigma) + " to max_sigma " +
               Num(o.max_sigma) + " needs more than " + std::to_string(kMaxDogScales) +
               " scales; raise sigma_ratio or narrow the sigma range");
  }
  const int k = static_cast<int>(kf);
  for (int i = 0; i <= k; ++i) sigmas.push_back(o.min_sigma * std::pow(o.sigma_ratio, static_cast<double>(i)));
  if (sigmas.back() > 4 * kMaxDogSigma) {
    return Bad("the largest scale, " + Num(sigmas.back()) + ", is too large; lower max_sigma or sigma_ratio");
  }
  return sigmas;
}

Result<DogResult> DetectDogBlobs(const cv::Mat& image, const DogOptions& o, DogWorkspace* workspace) {
  LOOM_ASSIGN_OR_RETURN(std::vector<double> sigmas, DogSigmas(o));
  if (image.empty() || image.channels() != 1 || (image.depth() != CV_32F && image.depth() != CV_64F)) {
    return Bad("the image must be a non-empty single-channel float image (CV_32FC1 or CV_64FC1)");
  }
  const int k = static_cast<int>(sigmas.size()) - 1;  // DoG scales
  const int64_t cube = static_cast<int64_t>(k) * image.rows * image.cols;
  if (cube > kMaxDogCubeElements) {
    return Bad("the image (" + std::to_string(image.rows) + "x" + std::to_string(image.cols) + ") times " +
               std::to_string(k) + " DoG scales is " + std::to_string(cube) + " elements, over the limit of " +
               std::to_string(kMaxDogCubeElements) + "; use fewer scales (n_bin) or a smaller image");
  }

  DogWorkspace local;
  DogWorkspace& ws = workspace != nullptr ? *workspace : local;
  const bool paper = o.mode == DogMode::kPaper;
  cv::Mat work;
  Border border = Border::kReflect;
  std::vector<double> scale(static_cast<size_t>(k));
  if (paper) {
    const cv::Mat* input = &image;
    if (image.depth() != CV_32F) {
      image.convertTo(ws.converted, CV_32F);
      input = &ws.converted;
    }
    GaussianFilterBank(*input, {o.presmooth_sigma}, o.truncate, o.border, o.path, ws.smoothed, ws.gaussian);
    work = ws.smoothed[0];
    // StretchMinMax (kernels/vision/image.h), in place: the same min -> 0, max -> 1 map.
    double lo = 0, hi = 0;
    cv::minMaxLoc(work, &lo, &hi);
    if (hi > lo) {
      work.convertTo(work, work.type(), 1.0 / (hi - lo), -lo / (hi - lo));
    } else {
      work.setTo(0);
    }
    border = o.border;
    for (int i = 0; i < k; ++i) scale[i] = sigmas[i];
  } else {
    work = image;
    for (int i = 0; i < k; ++i) scale[i] = 1 / (o.sigma_ratio - 1);
  }

  std::vector<cv::Mat>& gauss = ws.cube;
  GaussianFilterBank(work, sigmas, o.truncate, border, o.path, gauss, ws.gaussian);
  std::vector<Peak> peaks =
      work.depth() == CV_32F ? DogPeaks<float>(gauss, scale, o.threshold) : DogPeaks<double>(gauss, scale, o.threshold);
  if (static_cast<int64_t>(peaks.size()) > kMaxDogPeaks) {
    return Bad("found " + std::to_string(peaks.size()) + " scale-space maxima above threshold " + Num(o.threshold) +
               ", more than the limit of " + std::to_string(kMaxDogPeaks) +
               " (pruning them is quadratic); raise threshold");
  }
  // Strongest first, as peak_local_max sorts; ties in C order of (row, col, scale).
  std::sort(peaks.begin(), peaks.end(), [](const Peak& a, const Peak& b) {
    if (a.value != b.value) return a.value > b.value;
    return std::tie(a.y, a.x, a.s) < std::tie(b.y, b.x, b.s);
  });
  std::vector<Blob3> blobs;
  blobs.reserve(peaks.size());
  for (const Peak& p : peaks) blobs.push_back({static_cast<double>(p.y), static_cast<double>(p.x), sigmas[p.s]});
  PruneBlobs(blobs, o.overlap);

  DogResult result;
  const double top = std::sqrt(2.0) * sigmas.back();
  const int bins = o.histogram_bins;
  result.histogram_counts.assign(static_cast<size_t>(bins), 0);
  for (int i = 0; i <= bins; ++i) result.histogram_edges.push_back(top * i / bins);
  for (size_t i = 0; i < blobs.size(); ++i) {
    if (!(blobs[i].sigma > 0)) continue;
    DogBlob b;
    b.x = blobs[i].x;
    b.y = blobs[i].y;
    b.sigma = blobs[i].sigma;
    b.radius = std::sqrt(2.0) * b.sigma;
    b.response = peaks[i].value;
    const int bin = std::clamp(static_cast<int>(b.radius / top * bins), 0, bins - 1);
    ++result.histogram_counts[bin];
    result.blobs.push_back(b);
  }
  result.sigmas = std::move(sigmas);
  return result;
}

}  // namespace loom::vision
