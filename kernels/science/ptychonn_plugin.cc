// libloom_ptychonn.so: the PtychoNN kernels as a kernel plugin (common/kernel_api.h), which
// loom-worker loads when one of them is first called.
#include "kernels/science/ptychonn_kernels.h"

extern "C" int loom_register_kernels(loom::KernelRegistry* registry) {
  return loom::kernels::RegisterPtychoKernels(registry).ok() ? 0 : 1;
}
