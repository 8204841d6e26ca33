// `loom endpoint configure NAME | start | status | list | stop` against a real service: the
// daemon runs detached with its pid and log files, tasks run on it, and stop leaves no process
// of the endpoint behind (checked in /proc); stale pid files are recognised.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/local_fabric.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "loom/client.h"
#include "tests/support/fabric_client.h"
#include "tests/support/test_env.h"

namespace loom {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct CliResult {
  int code = -1;
  std::string output;
};

// True while `pid` is a live process (a zombie is dead: its reaper is not us).
bool Alive(pid_t pid) {
  std::string stat = ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  return stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

class EndpointLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fabric_ = loom::testing::MakeFabric("lifecycle");
    ASSERT_TRUE(fabric_->StartRedis().ok());
    ASSERT_TRUE(fabric_->StartService().ok());
    home_ = std::make_unique<loom::testing::TempDir>("loom-home");
    dir_ = home_->path() + "/endpoints/lc";
  }

  // Runs `loom ARGS...` with LOOM_HOME and the admin token; returns its exit code and output.
  CliResult Loom(std::vector<std::string> args, std::vector<std::string> env = {}) {
    std::vector<std::string> argv = {loom::testing::BinDir() + "/loom", "--service", fabric_->grpc_address()};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string out = home_->path() + "/cli-" + std::to_string(++calls_) + ".out";
    SpawnOptions o;
    o.log_path = out;
    o.env = {"LOOM_HOME=" + home_->path(), "LOOM_TOKEN_FILE=" + fabric_->token_file()};
    o.env.insert(o.env.end(), env.begin(), env.end());
    auto proc = Subprocess::Spawn(argv, o);
    EXPECT_TRUE(proc.ok()) << proc.status().ToString();
    if (!proc.ok()) return {};
    auto status = proc->Wait(30s);
    EXPECT_TRUE(status.has_value()) << "loom did not finish in time";
    if (!status) return {};
    return {WIFEXITED(*status) ? WEXITSTATUS(*status) : 128 + WTERMSIG(*status), ReadFileOrEmpty(out)};
  }

  void Configure() {
    CliResult r = Loom({"endpoint", "configure", "lc", "--service-public-key", fabric_->service_public_key(),
                        "--endpoint-address", fabric_->endpoint_address()});
    ASSERT_EQ(r.code, 0) << r.output;
    ASSERT_NE(r.output.find("config written: " + dir_ + "/config.yaml"), std::string::npos) << r.output;
  }

  pid_t PidFromFile() {
    std::ifstream in(dir_ + "/endpoint.pid");
    pid_t pid = 0;
    in >> pid;
    return pid;
  }

  std::unique_ptr<LocalFabric> fabric_;
  std::unique_ptr<loom::testing::TempDir> home_;
  std::string dir_;
  int calls_ = 0;
};

TEST_F(EndpointLifecycleTest, ConfigureWritesACommentedTemplateAndKeepsAnEditedOne) {
  Configure();
  const std::string config = ReadFileOrEmpty(dir_ + "/config.yaml");
  EXPECT_NE(config.find("id: lc\n"), std::string::npos) << config;
  EXPECT_NE(config.find("service: " + fabric_->endpoint_address()), std::string::npos) << config;
  EXPECT_NE(config.find("curve_secret_key_file: " + dir_ + "/endpoint.key"), std::string::npos) << config;
  EXPECT_NE(config.find("service_public_key: \"" + fabric_->service_public_key() + "\""), std::string::npos);
  EXPECT_NE(config.find("# sandbox:"), std::string::npos) << "the optional sections are there, commented out";
  EXPECT_NE(config.find("# container:"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir_ + "/endpoint.key"));

  std::ofstream(dir_ + "/config.yaml", std::ios::app) << "workers: 3\n";
  const std::string edited = ReadFileOrEmpty(dir_ + "/config.yaml");
  CliResult again = Loom({"endpoint", "configure", "lc"});
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_NE(again.output.find("config kept"), std::string::npos) << again.output;
  EXPECT_EQ(ReadFileOrEmpty(dir_ + "/config.yaml"), edited);
}

TEST_F(EndpointLifecycleTest, StartRunTasksStopLeavesNoProcessBehind) {
  Configure();
  CliResult start = Loom({"endpoint", "start", "lc", "--wait", "20"});
  ASSERT_EQ(start.code, 0) << start.output << "\n" << ReadFileOrEmpty(dir_ + "/endpoint.log");
  EXPECT_NE(start.output.find("registered"), std::string::npos) << start.output;
  const pid_t pid = PidFromFile();
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(Alive(pid));
  EXPECT_TRUE(fs::exists(dir_ + "/endpoint.log"));

  CliResult twice = Loom({"endpoint", "start", "lc", "--wait", "0"});
  EXPECT_NE(twice.code, 0);
  EXPECT_NE(twice.output.find("already runs (pid " + std::to_string(pid) + ")"), std::string::npos) << twice.output;

  CliResult status = Loom({"endpoint", "status", "lc"});
  ASSERT_EQ(status.code, 0) << status.output;
  EXPECT_NE(status.output.find("on this host running (pid " + std::to_string(pid) + ", registered)"), std::string::npos)
      << status.output;
  EXPECT_NE(status.output.find("online"), std::string::npos) << "the service's view follows: " << status.output;
  CliResult list = Loom({"endpoint", "list", "--local"});
  ASSERT_EQ(list.code, 0) << list.output;
  EXPECT_NE(list.output.find("lc"), std::string::npos);
  EXPECT_NE(list.output.find("running"), std::string::npos) << list.output;
  CliResult json = Loom({"--json", "endpoint", "list", "--local"});
  ASSERT_EQ(json.code, 0) << json.output;
  EXPECT_NE(json.output.find("{\"name\":\"lc\",\"state\":\"running\",\"pid\":" + std::to_string(pid) +
                             ",\"registered\":true,\"dir\":\"" + dir_ + "\"}"),
            std::string::npos)
      << json.output;

  auto client = loom::testing::ConnectClient(*fabric_);
  ASSERT_NE(client, nullptr);
  loom::testing::RegisterBuiltins(*client);
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    auto id = client->Submit("lc", "add", {IntValue(i), IntValue(100)});
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    auto r = client->GetResult(ids[i], 30s);
    ASSERT_TRUE(r.ok() && r->has_value()) << "task " << ids[i];
    ASSERT_EQ((*r)->state(), v1::TASK_STATE_SUCCESS) << (*r)->error();
    EXPECT_EQ((*r)->result().int_value(), static_cast<int64_t>(i) + 100);
  }

  const std::set<pid_t> workers = loom::testing::ChildPids(pid);
  ASSERT_EQ(workers.size(), 2u) << "the template's 2 workers";
  CliResult stop = Loom({"endpoint", "stop", "lc"});
  ASSERT_EQ(stop.code, 0) << stop.output;
  EXPECT_NE(stop.output.find("endpoint lc stopped"), std::string::npos) << stop.output;
  EXPECT_EQ(stop.output.find("SIGKILL"), std::string::npos) << "SIGTERM was enough: " << stop.output;
  EXPECT_EQ(stop.output.find("leftover"), std::string::npos) << "the endpoint stopped its workers: " << stop.output;
  EXPECT_FALSE(Alive(pid));
  for (pid_t w : workers) EXPECT_FALSE(Alive(w)) << "worker " << w << " outlived its endpoint";
  EXPECT_FALSE(fs::exists(dir_ + "/endpoint.pid"));

  list = Loom({"endpoint", "list", "--local"});
  ASSERT_EQ(list.code, 0) << list.output;
  EXPECT_NE(list.output.find("stopped"), std::string::npos) << list.output;
  EXPECT_EQ(list.output.find("running"), std::string::npos) << list.output;
  CliResult again = Loom({"endpoint", "stop", "lc"});
  EXPECT_EQ(again.code, 0);
  EXPECT_NE(again.output.find("is not running"), std::string::npos) << again.output;
}

TEST_F(EndpointLifecycleTest, AStalePidFileIsRecognisedAndReplaced) {
  Configure();
  // A pid that is alive but not this endpoint's daemon (pids are reused): this test itself.
  std::ofstream(dir_ + "/endpoint.pid") << ::getpid() << "\n";
  CliResult list = Loom({"endpoint", "list", "--local"});
  ASSERT_EQ(list.code, 0) << list.output;
  EXPECT_NE(list.output.find("stopped (stale pid file)"), std::string::npos) << list.output;
  CliResult stop = Loom({"endpoint", "stop", "lc"});
  ASSERT_EQ(stop.code, 0) << stop.output;
  EXPECT_NE(stop.output.find("removed a stale pid file"), std::string::npos) << stop.output;
  EXPECT_FALSE(fs::exists(dir_ + "/endpoint.pid"));
  EXPECT_TRUE(Alive(::getpid())) << "stop must never signal a process that is not its endpoint";

  // start over a stale file (a pid that no longer exists): replaced by the new daemon's.
  auto gone = Subprocess::Spawn({"true"});
  ASSERT_TRUE(gone.ok());
  const pid_t dead = gone->pid();
  ASSERT_TRUE(gone->Wait(10s).has_value());
  std::ofstream(dir_ + "/endpoint.pid") << dead << "\n";
  CliResult start = Loom({"endpoint", "start", "lc", "--wait", "20"});
  ASSERT_EQ(start.code, 0) << start.output << "\n" << ReadFileOrEmpty(dir_ + "/endpoint.log");
  const pid_t pid = PidFromFile();
  EXPECT_NE(pid, dead);
  EXPECT_TRUE(Alive(pid));
  CliResult stopped = Loom({"endpoint", "stop", "lc"});
  ASSERT_EQ(stopped.code, 0) << stopped.output;
  EXPECT_FALSE(Alive(pid));
}

TEST_F(EndpointLifecycleTest, StopKillsTheWholeGroupOfAnEndpointThatIgnoresSigterm) {
  Configure();
  const std::vector<std::string> env = {"LOOM_ENDPOINT_BINARY=" + std::string(LOOM_ENDPOINT_IGNORING_SIGTERM),
                                        "LOOM_TEST_REAL_ENDPOINT=" + loom::testing::BinDir() + "/loom-endpoint"};
  CliResult start = Loom({"endpoint", "start", "lc", "--wait", "20"}, env);
  ASSERT_EQ(start.code, 0) << start.output << "\n" << ReadFileOrEmpty(dir_ + "/endpoint.log");
  const pid_t pid = PidFromFile();  // the shell, whose child is the real loom-endpoint
  const std::set<pid_t> endpoint = loom::testing::ChildPids(pid);
  ASSERT_EQ(endpoint.size(), 1u);
  const std::set<pid_t> workers = loom::testing::ChildPids(*endpoint.begin());
  ASSERT_EQ(workers.size(), 2u);
  CliResult stop = Loom({"endpoint", "stop", "lc", "--timeout", "1"});
  ASSERT_EQ(stop.code, 0) << stop.output;
  EXPECT_NE(stop.output.find("SIGKILL after the timeout"), std::string::npos) << stop.output;
  EXPECT_FALSE(Alive(pid));
  EXPECT_FALSE(Alive(*endpoint.begin()));
  for (pid_t w : workers) EXPECT_FALSE(Alive(w)) << "worker " << w << " outlived its endpoint";
  EXPECT_FALSE(fs::exists(dir_ + "/endpoint.pid"));
}

TEST_F(EndpointLifecycleTest, StartWithoutAConfigOrWithABadOneSaysWhy) {
  CliResult missing = Loom({"endpoint", "start", "nowhere", "--wait", "5"});
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.output.find("run `loom endpoint configure nowhere` first"), std::string::npos) << missing.output;

  Configure();
  std::ofstream(dir_ + "/config.yaml", std::ios::app) << "sandbox:\n  type: jail\n";
  CliResult bad = Loom({"endpoint", "start", "lc", "--wait", "20"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.output.find("exited"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("sandbox.type 'jail' is not supported"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(dir_ + "/endpoint.pid"));

  CliResult bad_name = Loom({"endpoint", "start", "../etc", "--wait", "0"});
  EXPECT_NE(bad_name.code, 0);
  EXPECT_NE(bad_name.output.find("must start with a letter or digit"), std::string::npos) << bad_name.output;
}

}  // namespace
}  // namespace loom
