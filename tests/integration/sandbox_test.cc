// Workers in a bubblewrap sandbox (common/launch.h), for real: a real fabric whose endpoint
// starts its workers under bwrap, and test kernels (tests/support/probe_plugin) that try to
// write files and open connections. A second endpoint without the sandbox runs the same probes
// as the control, so a probe that fails in the sandbox fails because of the sandbox.
// And workers in containers, through a stand-in for docker (tests/support/fake_container_runtime.sh):
// the endpoint's real supervision with the default docker template and clean-up.
#include <arpa/inet.h>
#include <signal.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/local_fabric.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A TCP listener on 127.0.0.1 (the kernel completes connections into its backlog; nobody needs
// to accept them).
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1";
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class SandboxTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fabric_ = loom::testing::MakeFabric("sandbox").release();
    writable_ = new loom::testing::TempDir("sandbox-writable");
    // Not under /tmp (the sandbox has its own /tmp, where any host path is simply missing): a
    // directory of the build tree, on the read-only root.
    outside_ = new std::string(fs::weakly_canonical(loom::testing::BinDir() + "/../sandbox-outside-" + NewId()));
    fs::create_directories(*outside_);
    ASSERT_TRUE(fabric_->StartRedis().ok());
    ASSERT_TRUE(fabric_->StartService().ok());
    Status s = fabric_->StartEndpoint(
        "boxed", 1,
        {"--plugin", LOOM_PROBE_PLUGIN, "--sandbox", "bubblewrap", "--sandbox-writable", writable_->path()});
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << fabric_->LogTail("endpoint-boxed");
    s = fabric_->StartEndpoint("open", 1, {"--plugin", LOOM_PROBE_PLUGIN});
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    delete fabric_;
    delete writable_;
    std::error_code ec;
    if (outside_ != nullptr) fs::remove_all(*outside_, ec);
    delete outside_;
    fabric_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(fabric_, nullptr);
    client_ = loom::testing::ConnectClient(*fabric_);
    ASSERT_NE(client_, nullptr);
    loom::testing::RegisterBuiltins(*client_);
    ASSERT_TRUE(client_->RegisterFunction("probe_write", "probe_write@1").ok());
    ASSERT_TRUE(client_->RegisterFunction("probe_connect", "probe_connect@1").ok());
  }

  v1::TaskRecord Run(const std::string& ep, const std::string& fn, std::vector<Value> args) {
    auto id = client_->Submit(ep, fn, std::move(args));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (!id.ok()) return {};
    auto r = client_->GetResult(*id, 30s);
    EXPECT_TRUE(r.ok() && r->has_value()) << "task " << *id << " did not finish";
    return r.ok() && r->has_value() ? **r : v1::TaskRecord();
  }

  static LocalFabric* fabric_;
  static loom::testing::TempDir* writable_;  // allow-listed for the sandboxed workers
  static std::string* outside_;              // any other directory of the host
  std::unique_ptr<Client> client_;
};
LocalFabric* SandboxTest::fabric_ = nullptr;
loom::testing::TempDir* SandboxTest::writable_ = nullptr;
std::string* SandboxTest::outside_ = nullptr;

TEST_F(SandboxTest, TheEndpointStartsItsWorkersUnderBubblewrap) {
  Subprocess* ep = fabric_->endpoint("boxed");
  ASSERT_NE(ep, nullptr);
  auto children = loom::testing::ChildPids(ep->pid());
  ASSERT_FALSE(children.empty());
  for (pid_t pid : children) {
    std::string cmdline = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/cmdline");
    EXPECT_EQ(fs::path(cmdline.substr(0, cmdline.find('\0'))).filename(), "bwrap") << cmdline;
    EXPECT_NE(cmdline.find(std::string("--unshare-net") + '\0'), std::string::npos);
  }
}

TEST_F(SandboxTest, NormalTasksStillRun) {
  auto r = Run("boxed", "add", {IntValue(2), IntValue(40)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(r.result().int_value(), 42);
  r = Run("boxed", "echo", {StringValue("inside")});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(r.result().string_value(), "inside");
}

TEST_F(SandboxTest, AKernelCannotWriteOutsideItsSandbox) {
  const std::string target = *outside_ + "/from-boxed";
  auto r = Run("boxed", "probe_write", {StringValue(target)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(r.error().find("Read-only file system"), std::string::npos) << r.error();
  EXPECT_FALSE(fs::exists(target));
  // Nor into the fabric's files: its state directory is under /tmp, which inside is the
  // sandbox's own tmpfs (a write there may succeed, but lands in the sandbox, never on the host).
  r = Run("boxed", "probe_write", {StringValue(fabric_->state_dir() + "/from-boxed")});
  EXPECT_NE(r.state(), v1::TASK_STATE_UNSPECIFIED);
  EXPECT_FALSE(fs::exists(fabric_->state_dir() + "/from-boxed"));

  // The control: the same kernel without the sandbox writes there.
  const std::string control = *outside_ + "/from-open";
  r = Run("open", "probe_write", {StringValue(control)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_TRUE(fs::exists(control));
}

TEST_F(SandboxTest, AllowListedDirectoriesAreWritableAndTmpIsPrivate) {
  const std::string allowed = writable_->path() + "/result.txt";
  auto r = Run("boxed", "probe_write", {StringValue(allowed)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(ReadFileOrEmpty(allowed), "written by probe_write\n");

  // /tmp inside is the sandbox's own: writable there, never seen by the host.
  const std::string in_tmp = "/tmp/loom-sandbox-probe-" + NewId();
  r = Run("boxed", "probe_write", {StringValue(in_tmp)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_FALSE(fs::exists(in_tmp));
}

// A worker built or installed under /tmp: the sandbox's private /tmp would hide it, so its top
// directory there is bound in, read-only (before, bwrap failed to exec it and the endpoint
// restarted it thousands of times a minute).
TEST_F(SandboxTest, AWorkerInstalledUnderTmpRunsInTheSandboxReadOnly) {
  std::string top = "/tmp/loom-tmp-install-XXXXXX";
  ASSERT_NE(::mkdtemp(top.data()), nullptr);
  struct Remove {
    std::string path;
    ~Remove() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } remove{top};
  fs::create_directories(top + "/bin");
  fs::create_directories(top + "/lib");
  const std::string worker = top + "/bin/loom-worker";
  const std::string plugin = top + "/lib/" + fs::path(LOOM_PROBE_PLUGIN).filename().string();
  fs::copy_file(loom::testing::BinDir() + "/loom-worker", worker);
  fs::copy_file(LOOM_PROBE_PLUGIN, plugin);
  Status s = fabric_->StartEndpoint(
      "tmpinstall", 1, {"--worker-binary", worker, "--plugin", plugin, "--sandbox", "bubblewrap"});
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << fabric_->LogTail("endpoint-tmpinstall");
  auto r = Run("tmpinstall", "add", {IntValue(2), IntValue(40)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(r.result().int_value(), 42);
  // The plugin loaded from there too, and the bound directory is read-only.
  r = Run("tmpinstall", "probe_write", {StringValue(top + "/bin/written")});
  ASSERT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(r.error().find("Read-only file system"), std::string::npos) << r.error();
  EXPECT_FALSE(fs::exists(top + "/bin/written"));
  fabric_->KillEndpoint("tmpinstall", SIGTERM);
}

TEST_F(SandboxTest, AKernelCannotOpenANetworkConnection) {
  Listener listener;
  ASSERT_GT(listener.port(), 0);
  auto r = Run("boxed", "probe_connect", {StringValue("127.0.0.1"), IntValue(listener.port())});
  ASSERT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(r.error().find("Connection refused"), std::string::npos) << r.error();
  // Beyond loopback there is no route at all (TEST-NET-1, RFC 5737: never a real host).
  r = Run("boxed", "probe_connect", {StringValue("192.0.2.1"), IntValue(80)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(r.error().find("Network is unreachable"), std::string::npos) << r.error();

  // The control: without the sandbox the same kernel reaches the listener.
  r = Run("open", "probe_connect", {StringValue("127.0.0.1"), IntValue(listener.port())});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_EQ(r.result().string_value(), "connected");
}

// The endpoint starts each worker with the docker template, and runs the clean-up command once
// a worker has ended (crashed, or stopped with the endpoint).
TEST(ContainerLaunchTest, TheEndpointRunsWorkersThroughTheRuntimeAndCleansUpAfterThem) {
  auto fabric = loom::testing::MakeFabric("container-launch");
  const std::string log = fabric->state_dir() + "/runtime.log";
  const std::string image = "loom-worker:test";
  ::setenv("LOOM_FAKE_RUNTIME_LOG", log.c_str(), 1);  // inherited by the endpoint, then the runtime
  ::setenv("LOOM_FAKE_RUNTIME_IMAGE", image.c_str(), 1);
  const std::string config = fabric->state_dir() + "/container.yaml";
  std::ofstream(config) << "container:\n"
                        << "  runtime: docker\n"
                        << "  runtime_binary: " << LOOM_FAKE_RUNTIME << "\n"
                        << "  image: " << image << "\n"
                        << "  worker_binary: " << loom::testing::BinDir() << "/loom-worker\n";
  ASSERT_TRUE(fabric->StartRedis().ok());
  ASSERT_TRUE(fabric->StartService().ok());
  Status s = fabric->StartEndpoint("ctr", 1, {"--config", config});
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << fabric->LogTail("endpoint-ctr");
  auto client = loom::testing::ConnectClient(*fabric);
  ASSERT_NE(client, nullptr);
  loom::testing::RegisterBuiltins(*client);
  auto run = [&](const std::string& fn, std::vector<Value> args) {
    auto id = client->Submit("ctr", fn, std::move(args));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    auto r = client->GetResult(id.ok() ? *id : "", 30s);
    EXPECT_TRUE(r.ok() && r->has_value());
    return r.ok() && r->has_value() ? **r : v1::TaskRecord();
  };
  auto lines = [&](const std::string& prefix) {
    std::vector<std::string> out;
    std::istringstream in(ReadFileOrEmpty(log));
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with(prefix)) out.push_back(line);
    }
    return out;
  };

  auto r = run("add", {IntValue(1), IntValue(2)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  auto runs = lines("run ");
  ASSERT_EQ(runs.size(), 1u) << ReadFileOrEmpty(log);
  const std::string ids = std::to_string(::getuid()) + ":" + std::to_string(::getgid());
  const std::string run_dir = fabric->state_dir() + "/endpoint-ctr-run";
  EXPECT_TRUE(runs[0].starts_with("run --rm --init --name loom-ctr-")) << runs[0];
  EXPECT_NE(runs[0].find(" --user " + ids + " --volume " + run_dir + ":" + run_dir + " " + image + " " +
                         loom::testing::BinDir() + "/loom-worker --endpoint ipc://" + run_dir + "/workers.sock"),
            std::string::npos)
      << runs[0];
  const std::string first_name =
      runs[0].substr(std::string("run --rm --init --name ").size(),
                     runs[0].find(" --user") - std::string("run --rm --init --name ").size());

  // A worker that dies is cleaned up after, by name, and replaced through the runtime again.
  r = run("crash", {});
  EXPECT_NE(r.state(), v1::TASK_STATE_SUCCESS);
  ASSERT_TRUE(loom::testing::WaitFor([&] { return !lines("rm ").empty(); }, 10s)) << ReadFileOrEmpty(log);
  EXPECT_EQ(lines("rm ")[0], "rm --force " + first_name);
  r = run("add", {IntValue(2), IntValue(2)});
  ASSERT_EQ(r.state(), v1::TASK_STATE_SUCCESS) << r.error();
  EXPECT_GE(lines("run ").size(), 2u);

  // Stopping the endpoint cleans up after its last worker too.
  fabric->KillEndpoint("ctr", SIGTERM);
  EXPECT_EQ(lines("rm ").size(), lines("run ").size()) << ReadFileOrEmpty(log);
  ::unsetenv("LOOM_FAKE_RUNTIME_LOG");
  ::unsetenv("LOOM_FAKE_RUNTIME_IMAGE");
}

}  // namespace
}  // namespace loom
