// loom-worker: runs kernels for one endpoint. See worker/worker.h for flags and behaviour.
// Wires in the science kernels (kernels/): their descriptions now, their code (and OpenCV,
// oneDNN) from libloom_vision.so, libloom_braggnn.so and libloom_ptychonn.so when one of theirs
// is first called. Plugins add more at run time.
#include "common/util.h"
#include "kernels/science/braggnn_kernels.h"
#include "kernels/science/ptychonn_kernels.h"
#include "kernels/vision/vision_kernels.h"
#include "worker/lazy_plugin.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  auto vision = [](loom::KernelRegistry* registry) {
    return loom::worker::RegisterLazyPlugin(registry, loom::ExecutableDir() + "/../lib/libloom_vision.so",
                                            loom::kernels::VisionKernelInfos());
  };
  auto braggnn = [](loom::KernelRegistry* registry) {
    return loom::worker::RegisterLazyPlugin(registry, loom::ExecutableDir() + "/../lib/libloom_braggnn.so",
                                            loom::kernels::BraggKernelInfos());
  };
  auto ptychonn = [](loom::KernelRegistry* registry) {
    return loom::worker::RegisterLazyPlugin(registry, loom::ExecutableDir() + "/../lib/libloom_ptychonn.so",
                                            loom::kernels::PtychoKernelInfos());
  };
  return loom::worker::WorkerMain(argc, argv, {vision, braggnn, ptychonn});
}
