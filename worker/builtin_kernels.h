// The kernels every worker has, with no plugin loaded: small, dependency-free functions that
// tests, benchmarks and users exercise the fabric with.
//
//   echo@1(value: any)                       -> value, unchanged
//   add@1(a, b: number or tensor)            -> a + b (int overflow is an error; tensors are
//                                               elementwise, a scalar broadcasts, the result
//                                               keeps the tensor's dtype)
//   sleep@1(seconds: number)                 -> seconds actually slept, as a double
//   fail@1(message: string, optional)        -> always a failed task carrying `message`
//   crash@1()                                -> kills the worker process with SIGKILL
//
// The kernel functions are stateless and thread-safe.
#pragma once

#include "common/kernel_api.h"
#include "common/status.h"

namespace loom::worker {

// The message `fail` reports when it is given none.
inline constexpr const char* kDefaultFailMessage = "kernel 'fail' failed as asked";
// The longest `sleep` accepts: one day.
inline constexpr double kMaxSleepSeconds = 86400.0;

// Registers every built-in kernel, all at version "1".
Status RegisterBuiltinKernels(KernelRegistry* registry);

}  // namespace loom::worker
