#include "tests/support/fabric_client.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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
