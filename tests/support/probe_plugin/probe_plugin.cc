// A test-only kernel plugin that probes what a worker may do, for the sandbox tests
// (tests/integration/sandbox_test.cc). Never installed and never loaded by a worker unless a test
// passes it with --plugin.
//   probe_write@1(path: string) -> string      writes a small file at `path`; returns the path
//   probe_connect@1(host: string, port: int) -> string   opens a TCP connection; returns "connected"
// Both fail (a failed task carrying the system's error) when the worker is not allowed to.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/kernel_api.h"
#include "common/value.h"

namespace {

using loom::KernelCall;
using loom::Result;
using loom::Value;

Result<Value> ProbeWrite(const KernelCall& call) {
  const std::string& path = call.param(0)->string_value();
  errno = 0;
  std::ofstream out(path, std::ios::trunc);
  out << "written by probe_write\n";
  if (!out.flush()) {
    return loom::PermissionDenied("cannot write '" + path + "': " + std::strerror(errno ? errno : EIO));
  }
  return loom::StringValue(path);
}

Result<Value> ProbeConnect(const KernelCall& call) {
  const std::string& host = call.param(0)->string_value();
  const int64_t port = call.param(1)->int_value();
  if (port <= 0 || port > 65535) return loom::InvalidArgument("port must be in 1..65535");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return loom::InvalidArgument("host must be an IPv4 address, got '" + host + "'");
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return loom::PermissionDenied(std::string("cannot open a socket: ") + std::strerror(errno));
  // A loopback connect is answered at once (accepted or refused), and an unreachable network
  // fails at once, so a blocking connect cannot hang here.
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return loom::Unavailable("cannot connect to " + host + ":" + std::to_string(port) + ": " + std::strerror(err));
  }
  return loom::StringValue("connected");
}

}  // namespace

extern "C" int loom_register_kernels(loom::KernelRegistry* registry) {
  loom::Status s =
      registry->Register({loom::MakeKernelInfo("probe_write", "1", "Test probe: writes a small file at `path`.",
                                               {loom::Param("path", loom::v1::VALUE_TYPE_STRING, "the file to write")},
                                               loom::v1::VALUE_TYPE_STRING, "the path written"),
                          ProbeWrite});
  if (!s.ok()) return 1;
  s = registry->Register({loom::MakeKernelInfo("probe_connect", "1", "Test probe: opens a TCP connection to host:port.",
                                               {loom::Param("host", loom::v1::VALUE_TYPE_STRING, "an IPv4 address"),
                                                loom::Param("port", loom::v1::VALUE_TYPE_INT, "a TCP port")},
                                               loom::v1::VALUE_TYPE_STRING, "\"connected\""),
                          ProbeConnect});
  return s.ok() ? 0 : 1;
}
