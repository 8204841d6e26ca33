// loom-bench-braggnn: microseconds per patch of BraggNN (float32), the FPGA-class network
// (float32 and the emulated e5m4 format) at several batch sizes, and of the pseudo-Voigt LM fit
// and centre of mass on the same peaks; one JSON line per measurement. Single-threaded, except
// the *_2threads rows (BraggNet::Forward's threads = 2) at the largest batch. Each line has the
// median wall time and the median CPU time of the process (both threads' for *_2threads).
// bench/science/run_braggnn_bench.sh runs it next to PyTorch (bench/peers/braggnn_torch.py).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/nn/safetensors.h"
#include "kernels/science/bitstream.h"
#include "kernels/science/bragg_synth.h"
#include "kernels/science/braggnn.h"
#include "kernels/science/braggnn_emulated.h"
#include "kernels/science/peak_fit.h"

namespace {

using Clock = std::chrono::steady_clock;

// The process's CPU time in seconds (all its threads): unlike the wall clock, it does not count
// the time another process holds the core, which on a shared machine is most of the noise.
double CpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

struct Timing {
  double wall = 0;  // median seconds per run
  double cpu = 0;   // median CPU seconds per run
};

double Median(std::vector<double> t) {
  std::nth_element(t.begin(), t.begin() + static_cast<long>(t.size() / 2), t.end());
  return t[t.size() / 2];
}

// Median seconds of fn() over at least min_reps runs and about budget_s seconds.
Timing MedianSeconds(const std::function<void()>& fn, int min_reps, double budget_s) {
  fn();  // warm: caches, first-touch pages
  std::vector<double> wall, cpu;
  const auto start = Clock::now();
  while (static_cast<int>(wall.size()) < min_reps ||
         std::chrono::duration<double>(Clock::now() - start).count() < budget_s) {
    const auto a = Clock::now();
    const double c = CpuSeconds();
    fn();
    cpu.push_back(CpuSeconds() - c);
    wall.push_back(std::chrono::duration<double>(Clock::now() - a).count());
    if (wall.size() >= 100000) break;
  }
  return {Median(wall), Median(cpu)};
}

}  // namespace

int main(int argc, char** argv) {
  using namespace loom::science;
  CLI::App app{"BraggNN CPU benchmark: us per patch at several batch sizes, and the pseudo-Voigt fit"};
  std::string data_dir = "kernels/science/data";
  std::vector<int> batches = {1, 64, 256, 1024};
  std::vector<int> emulated_batches = {1, 64, 1024};
  double budget = 1.0;
  int fit_peaks = 1024;
  std::string write_peaks;
  app.add_option("--data-dir", data_dir, "kernels/science/data (weights and bitstreams)");
  app.add_option("--batches", batches, "batch sizes for the float32 networks")->delimiter(',');
  app.add_option("--emulated-batches", emulated_batches, "batch sizes for the emulated e5m4 network")->delimiter(',');
  app.add_option("--budget", budget, "seconds spent per measurement (at least 3 repetitions)");
  app.add_option("--fit-peaks", fit_peaks, "peaks for the pseudo-Voigt fit and centre of mass timing");
  app.add_option("--write-peaks", write_peaks, "also write the peaks as safetensors (for the PyTorch peer)");
  CLI11_PARSE(app, argc, argv);

  const int max_batch = std::max({*std::max_element(batches.begin(), batches.end()), fit_peaks,
                                  *std::max_element(emulated_batches.begin(), emulated_batches.end())});
  const SyntheticPeaks peaks = GeneratePeaks(max_batch, 2024);
  if (!write_peaks.empty()) {
    loom::nn::Safetensors st;
    st.tensors["patches"] = loom::nn::Tensor({max_batch, kPatch, kPatch}, peaks.patches);
    if (auto s = loom::nn::WriteSafetensors(write_peaks, st); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.message().c_str());
      return 1;
    }
  }
  auto weights = loom::nn::ReadSafetensors(data_dir + "/braggnn_trained.safetensors");
  auto bitstream = ReadBitstream(data_dir + "/braggnn_fpga_e5m4.bitstream");
  if (!weights.ok() || !bitstream.ok()) {
    std::fprintf(stderr, "cannot read the data files in %s: %s%s\n", data_dir.c_str(),
                 weights.ok() ? "" : weights.status().message().c_str(),
                 bitstream.ok() ? "" : bitstream.status().message().c_str());
    return 1;
  }
  auto braggnn = BraggNet::Create(BraggNNArchitecture(), weights->tensors);
  auto fpga = BraggNet::Create(BraggNNFpgaArchitecture(), bitstream->weights);
  auto e5m4 = EmulatedBraggNet::Create(BraggNNFpgaArchitecture(), bitstream->weights, kE5M4);
  if (!braggnn.ok() || !fpga.ok() || !e5m4.ok()) {
    std::fprintf(stderr, "bad weights\n");
    return 1;
  }
  std::vector<float> out(static_cast<size_t>(max_batch) * 2);
  auto report = [](const std::string& what, int batch, Timing t) {
    std::printf("{\"bench\": \"%s\", \"batch\": %d, \"us_per_sample\": %.3f, \"cpu_us_per_sample\": %.3f}\n",
                what.c_str(), batch, t.wall * 1e6 / batch, t.cpu * 1e6 / batch);
    std::fflush(stdout);
  };
  const std::span<const float> all(peaks.patches);
  for (int b : batches) {
    const auto in = all.first(static_cast<size_t>(b) * kPatchPixels);
    report("braggnn_f32", b, MedianSeconds([&] { braggnn->Forward(in, b, out); }, 3, budget));
    report("fpga_f32", b, MedianSeconds([&] { fpga->Forward(in, b, out); }, 3, budget));
  }
  {
    // What a second core adds: the same call split across two threads.
    const int b = *std::max_element(batches.begin(), batches.end());
    const auto in = all.first(static_cast<size_t>(b) * kPatchPixels);
    report("braggnn_f32_2threads", b, MedianSeconds([&] { braggnn->Forward(in, b, out, 2); }, 3, budget));
    report("fpga_f32_2threads", b, MedianSeconds([&] { fpga->Forward(in, b, out, 2); }, 3, budget));
  }
  for (int b : emulated_batches) {
    const auto in = all.first(static_cast<size_t>(b) * kPatchPixels);
    report("fpga_e5m4_emulated", b, MedianSeconds([&] { e5m4->Forward(in, b, out); }, 3, budget));
  }
  const auto fit_in = all.first(static_cast<size_t>(fit_peaks) * kPatchPixels);
  report("pseudo_voigt_fit", fit_peaks,
         MedianSeconds(
             [&] {
               for (int i = 0; i < fit_peaks; ++i) (void)FitPseudoVoigt(fit_in.data() + i * kPatchPixels);
             },
             1, 0));
  double sink = 0;
  report("centre_of_mass", fit_peaks,
         MedianSeconds(
             [&] {
               for (int i = 0; i < fit_peaks; ++i) sink += CentreOfMass(fit_in.data() + i * kPatchPixels).x;
             },
             3, budget));
  report("braggnn_f32_same_peaks", fit_peaks,
         MedianSeconds([&] { braggnn->Forward(fit_in, fit_peaks, out); }, 3, budget));
  return sink == -1 ? 1 : 0;
}
