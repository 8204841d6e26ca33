// Small shared utilities: ids, wall-clock time, free loopback ports.
#pragma once

#include <cstdint>
#include <string>

namespace loom {

// A random 128-bit id as 32 lowercase hex characters.
std::string NewId();
// Nanoseconds since the Unix epoch (wall clock: comparable across processes on one host).
int64_t NowNanos();
// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
int FreeLoopbackPort();
// The directory of the running executable (where its sibling binaries live); "." if unknown.
std::string ExecutableDir();
// Reads a whole file; empty string if it cannot be read.
std::string ReadFileOrEmpty(const std::string& path);
// Sets the level of the default spdlog logger from "trace|debug|info|warn|error|off".
void InitLogging(const std::string& level, const std::string& process_name);

}  // namespace loom
