// Which malloc this process runs on. Loom's daemons and command-line tools link jemalloc (CMake
// option LOOM_JEMALLOC, on by default): on the fabric's hot paths glibc's malloc, free and
// malloc_consolidate were a third of the service's CPU, and jemalloc cut each process's CPU a
// task by 15-35 % (docs/BENCHMARKS.md, eleventh pass). Reported in logs and as the
// `allocator` label of `loom_build_info` (docs/METRICS.md).
#pragma once

#include <string>

namespace loom {

// "jemalloc 5.3.0" when malloc goes through jemalloc (linked or preloaded: an allocation is seen
// by jemalloc's per-thread counter), "sanitizer malloc" in an ASan or TSan build, else
// "glibc 2.36 malloc". Thread-safe; computed once.
const std::string& AllocatorName();

}  // namespace loom
