#include "tests/support/fabric_client.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/curve.h"
#include "common/subprocess.h"
#include "common/util.h"

namespace loom::testing {

std::unique_ptr<Client> ConnectClient(const LocalFabric& fabric) {
  ClientOptions o;
  o.address = fabric.grpc_address();
  o.token = fabric.token();
  o.rpc_timeout = std::chrono::seconds(10);
  auto c = Client::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

void RegisterBuiltins(Client& client) {
  for (const auto& [name, kernel] : std::vector<std::pair<std::string, std::string>>{
           {"echo", "echo@1"}, {"add", "add@1"}, {"sleep", "sleep@1"}, {"fail", "fail@1"}, {"crash", "crash@1"}}) {
    auto r = client.RegisterFunction(name, kernel);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
}

v1::TaskRecord SubmitAndWait(Client& client, const std::string& endpoint, const std::string& function,
                             std::vector<Value> args, const Kwargs& kwargs, std::chrono::milliseconds timeout) {
  auto id = client.Submit(endpoint, function, std::move(args), kwargs);
  EXPECT_TRUE(id.ok()) << id.status().ToString();
  if (!id.ok()) return {};
  auto r = client.GetResult(*id, timeout);
  EXPECT_TRUE(r.ok() && r->has_value()) << (r.ok() ? "not finished in time" : r.status().ToString());
  return r.ok() && r->has_value() ? **r : v1::TaskRecord();
}

std::pair<int, std::string> RunCli(const LocalFabric& fabric, const std::string& cli, std::vector<std::string> args) {
  std::vector<std::string> argv = {cli, "--service", fabric.grpc_address(), "--token-file", fabric.token_file()};
  argv.insert(argv.end(), args.begin(), args.end());
  static int calls = 0;
  const std::string log =
      ::testing::TempDir() + "loom_cli_" + std::to_string(::getpid()) + "_" + std::to_string(++calls) + ".log";
  std::remove(log.c_str());
  SpawnOptions options;
  options.log_path = log;
  auto child = Subprocess::Spawn(argv, options);
  EXPECT_TRUE(child.ok()) << child.status().ToString();
  if (!child.ok()) return {-1, ""};
  auto status = child->Wait(std::chrono::seconds(60));
  EXPECT_TRUE(status.has_value()) << "loom did not exit in 60 s";
  std::string out = ReadFileOrEmpty(log);
  std::remove(log.c_str());
  return {status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1, out};
}

void ConnectAsEndpoint(LocalFabric& fabric, const std::string& id, zmq::socket_t& socket) {
  if (fabric.curve()) {
    Status enrolled = fabric.EnrollEndpoint(id);
    ASSERT_TRUE(enrolled.ok()) << enrolled.ToString();
    auto keys = curve::ReadSecretKeyFile(fabric.EndpointKeyFile(id));
    ASSERT_TRUE(keys.ok()) << keys.status().ToString();
    Status s = curve::MakeClient(socket, *keys, fabric.service_public_key());
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  socket.connect(fabric.endpoint_address());
}

std::set<pid_t> ChildPids(pid_t parent) {
  std::set<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') out.insert(pid);
  }
  ::closedir(d);
  return out;
}

}  // namespace loom::testing
