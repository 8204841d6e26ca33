// Small shared utilities: ids, wall-clock time, free loopback ports.
#pragma once

#include <cstdint>
#include <string>

namespace loom {

// A random 128-bit id as 32 lowercase hex characters.
std::string NewId();
// Nanoseconds since the Unix epoch (wall clock: comparable across processes on one host).
int64_t NowNanos();
// "2026-11-28T10:15:00Z" (UTC, whole seconds).
std::string FormatUnixNanos(int64_t unix_nanos);
// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
int FreeLoopbackPort();
// The directory of the running executable (where its sibling binaries live); "." if unknown.
std::string ExecutableDir();
// Reads a whole file; empty string if it cannot be read.
std::string ReadFileOrEmpty(const std::string& path);
// Sets the level of the default spdlog logger from "trace|debug|info|warn|error|off".
void InitLogging(const std::string& level, const std::string& process_name);

// Keeps glibc from giving each large buffer (a task's payload, a decoded image) its own mmap:
// by default a block over 128 KiB is mapped on malloc and unmapped on free, so every message of a
// megabyte costs its page faults again (measured: about 4 ms per MB on our VMs, half of Loom's
// overhead on a 1 MB task). Blocks up to 32 MiB come from the heap and up to 256 MiB of freed
// heap is kept for reuse. Does nothing when the user tunes malloc through the environment
// (GLIBC_TUNABLES or MALLOC_*_). Call first thing in main(); loom-service, loom-endpoint and
// loom-worker do.
void TuneAllocatorForLargeMessages();

}  // namespace loom
