// libloom_vision.so: the vision kernels as a kernel plugin (common/kernel_api.h), which
// loom-worker loads when a vision kernel is first called.
#include "kernels/vision/vision_kernels.h"

extern "C" int loom_register_kernels(loom::KernelRegistry* registry) {
  return loom::kernels::RegisterVisionKernels(registry).ok() ? 0 : 1;
}
