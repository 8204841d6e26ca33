// loom-bench-ptychonn: PtychoNN and PtychoNN-edge inference speed on this machine's CPU (oneDNN),
// frames per second at the given batch sizes. One JSON line per (model, batch) on stdout; the
// peer (PyTorch, ptychonn_torch.py) prints the same lines, and run_ptychonn_bench.sh puts them
// side by side (docs/BENCHMARKS.md).
//
//   loom-bench-ptychonn [--models ptychonn,ptychonn-edge] [--batches 1,8] [--seconds 3]
//                       [--weights-dir DIR]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/science/ptychonn.h"
#include "kernels/science/ptychonn_synth.h"
#include "kernels/science/ptychonn_weights.h"

namespace {

using loom::science::PtychoModel;

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

int Bench(PtychoModel model, const std::string& weights_dir, const std::vector<int>& batches, double seconds) {
  const bool edge = model == PtychoModel::kEdge;
  loom::nn::TensorMap weights;
  if (weights_dir.empty()) {
    weights = loom::science::SeededPtychoWeights(model, 7);
  } else {
    auto w =
        loom::science::LoadPtychoWeights(model, weights_dir + (edge ? "/ptychonn_edge" : "/ptychonn") + ".safetensors");
    if (!w.ok()) {
      std::fprintf(stderr, "%s\n", w.status().ToString().c_str());
      return 1;
    }
    weights = std::move(*w);
  }
  auto net = loom::science::PtychoNet::Create(model, std::move(weights));
  if (!net.ok()) {
    std::fprintf(stderr, "%s\n", net.status().ToString().c_str());
    return 1;
  }
  const int side = loom::science::PtychoInputSide(model);
  for (int batch : batches) {
    const auto samples = loom::science::MakePtychoSamples(5, side, batch);
    // The first call builds the pipeline (primitives, weight reorders): timed apart, as a warm
    // worker pays it once.
    const auto t0 = std::chrono::steady_clock::now();
    if (auto r = (*net)->Forward(samples.input, batch); !r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    const double first_ms = Seconds(std::chrono::steady_clock::now() - t0) * 1e3;
    std::vector<double> times;
    const auto start = std::chrono::steady_clock::now();
    while (Seconds(std::chrono::steady_clock::now() - start) < seconds || times.size() < 3) {
      const auto a = std::chrono::steady_clock::now();
      auto r = (*net)->Forward(samples.input, batch);
      times.push_back(Seconds(std::chrono::steady_clock::now() - a));
      if (!r.ok()) return 1;
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    std::printf(
        "{\"impl\": \"loom-onednn\", \"model\": \"%s\", \"batch\": %d, \"frames_per_s\": %.1f, "
        "\"ms_per_batch\": %.3f, \"first_call_ms\": %.1f, \"runs\": %zu}\n",
        loom::science::PtychoModelName(model), batch, batch / median, median * 1e3, first_ms, times.size());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PtychoNN inference speed (oneDNN, CPU): frames/s per model and batch size, as JSON lines"};
  std::vector<std::string> models = {"ptychonn", "ptychonn-edge"};
  std::vector<int> batches = {1, 8};
  double seconds = 3;
  std::string weights_dir;
  app.add_option("--models", models, "ptychonn and/or ptychonn-edge")->delimiter(',');
  app.add_option("--batches", batches, "batch sizes")->delimiter(',');
  app.add_option("--seconds", seconds, "time per (model, batch), after the first call");
  app.add_option("--weights-dir", weights_dir,
                 "directory with ptychonn{,_edge}.safetensors (default: seeded random weights; speed is the same)");
  CLI11_PARSE(app, argc, argv);
  for (const auto& m : models) {
    if (m != "ptychonn" && m != "ptychonn-edge") {
      std::fprintf(stderr, "--models: unknown model '%s' (ptychonn, ptychonn-edge)\n", m.c_str());
      return 2;
    }
    if (int rc = Bench(m == "ptychonn" ? PtychoModel::kOriginal : PtychoModel::kEdge, weights_dir, batches, seconds)) {
      return rc;
    }
  }
  return 0;
}
