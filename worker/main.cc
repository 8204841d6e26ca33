// loom-worker: runs kernels for one endpoint. See worker/worker.h for flags and behaviour.
// Wires in the science kernels (kernels/); plugins add more at run time.
#include "kernels/vision/vision_kernels.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  return loom::worker::WorkerMain(argc, argv, {loom::kernels::RegisterVisionKernels});
}
