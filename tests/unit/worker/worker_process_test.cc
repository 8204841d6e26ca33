// Tests of the real loom-worker process on a real socket: this test plays the endpoint, with a
// ZeroMQ ROUTER bound on ipc:// in a fresh temporary directory, and starts loom-worker with
// common/subprocess.h. Every wait has a deadline (ZeroMQ poll timeouts, Subprocess::Wait); no
// sleep is used to synchronise.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/frame_link.h"
#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "common/wire.h"

namespace loom {
namespace {

using namespace std::chrono_literals;

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

constexpr auto kDeadline = 20s;  // generous: sanitizer builds and loaded CI machines are slow
const std::string kWorkerId = "w-1";

v1::TaskSpec Task(const std::string& id, const std::string& kernel, std::vector<Value> args = {}) {
  v1::TaskSpec t;
  t.set_task_id(id);
  t.set_kernel(kernel);
  for (auto& a : args) *t.add_args() = std::move(a);
  return t;
}

class WorkerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/loom-worker-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    address_ = "ipc://" + dir_ + "/endpoint.ipc";
    router_ = zmq::socket_t(context_, zmq::socket_type::router);
    router_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::router_mandatory, 1);  // a send to an unknown worker fails loudly
    router_.bind(address_);
  }

  void TearDown() override {
    worker_ = Subprocess();  // kills and reaps a worker that is still running
    router_.close();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string LogPath() const { return dir_ + "/worker.log"; }
  std::string Log() const { return ReadFileOrEmpty(LogPath()); }

  // Starts loom-worker with `args` after the program name; the standard flags unless `bare`.
  void Start(std::vector<std::string> args = {}, bool bare = false) {
    std::vector<std::string> argv = {LOOM_WORKER_PATH};
    if (!bare) argv.insert(argv.end(), {"--endpoint", address_, "--worker-id", kWorkerId});
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnOptions options;
    options.log_path = LogPath();
    auto p = Subprocess::Spawn(argv, options);
    ASSERT_TRUE(p.ok()) << p.status().message();
    worker_ = std::move(*p);
  }

  // The next envelope from the worker, or nullopt at the deadline.
  std::optional<v1::WorkerEnvelope> Receive(std::chrono::milliseconds timeout = kDeadline) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, left) == 0) continue;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(router_, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
      EXPECT_EQ(parts.size(), 2u) << "a worker message is [routing id, envelope]";
      if (parts.size() != 2) continue;
      EXPECT_EQ(parts[0].to_string(), kWorkerId);
      v1::WorkerEnvelope e;
      EXPECT_TRUE(FromMessage(parts[1], &e)) << "the worker sent a frame that is not a WorkerEnvelope";
      return e;
    }
  }

  v1::WorkerHello ExpectHello() {
    auto e = Receive();
    EXPECT_TRUE(e.has_value()) << "no hello from loom-worker; its log:\n" << Log();
    if (!e) return {};
    EXPECT_TRUE(e->has_hello());
    return e->hello();
  }

  void SendFrame(zmq::message_t payload) {
    ASSERT_TRUE(router_.send(zmq::buffer(kWorkerId), zmq::send_flags::sndmore));
    ASSERT_TRUE(router_.send(std::move(payload), zmq::send_flags::none));
  }

  void SendTasks(const std::vector<v1::TaskSpec>& tasks) {
    v1::WorkerEnvelope e;
    for (const auto& t : tasks) *e.mutable_tasks()->add_tasks() = t;
    SendFrame(ToMessage(e));
  }

  // Results until `n` have arrived, or as many as arrived by the deadline.
  std::vector<v1::TaskResult> CollectResults(size_t n) {
    std::vector<v1::TaskResult> out;
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (out.size() < n) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      auto e = Receive(std::max(left, 1ms));
      if (!e) break;
      EXPECT_TRUE(e->has_results()) << "expected a ResultBatch, got body case " << e->body_case();
      for (const auto& r : e->results().results()) out.push_back(r);
    }
    EXPECT_EQ(out.size(), n) << "loom-worker log:\n" << Log();
    return out;
  }

  // The wait status once the worker has ended, or nullopt at the deadline.
  std::optional<int> WaitForExit() {
    return worker_.Wait(std::chrono::duration_cast<std::chrono::milliseconds>(kDeadline));
  }

  zmq::context_t context_{1};
  zmq::socket_t router_;
  std::string dir_;
  std::string address_;
  Subprocess worker_;
};

TEST_F(WorkerProcessTest, HelloListsBuiltinAndPluginKernelsAndLoadErrors) {
  Start({"--plugin", LOOM_EXAMPLE_PLUGIN_PATH, "--plugin", "/nonexistent/libgone.so", "--plugin-dir",
         "/nonexistent/plugins"});
  const v1::WorkerHello hello = ExpectHello();
  EXPECT_EQ(hello.pid(), worker_.pid());
  std::set<std::string> kernels;
  for (const auto& k : hello.kernels()) {
    kernels.insert(k.name() + "@" + k.version());
    EXPECT_FALSE(k.description().empty()) << k.name();
  }
  // The built-ins, the science kernels loom-worker compiles in (worker/main.cc), and the plugin's.
  EXPECT_EQ(kernels,
            (std::set<std::string>{"add@1", "braggnn-fpga@1", "braggnn@1", "crash@1", "dog_blobs@1", "echo@1", "fail@1",
                                   "focus@1", "ptychonn-edge@1", "ptychonn@1", "sleep@1", "stats@1"}));
  ASSERT_EQ(hello.load_errors_size(), 2) << "load errors: " << hello.DebugString();
  std::string errors = hello.load_errors(0) + "\n" + hello.load_errors(1);
  EXPECT_CONTAINS(errors, "/nonexistent/libgone.so");
  EXPECT_CONTAINS(errors, "/nonexistent/plugins");
}

TEST_F(WorkerProcessTest, RunsAPluginKernel) {
  Start({"--plugin", LOOM_EXAMPLE_PLUGIN_PATH});
  ExpectHello();
  const std::vector<double> data = {2, 4, 4, 4, 5, 5, 7, 9};
  SendTasks({Task("s", "stats@1", {TensorValue({8}, std::span<const double>(data))})});
  auto r = CollectResults(1);
  ASSERT_EQ(r.size(), 1u);
  ASSERT_TRUE(r[0].ok()) << r[0].error();
  EXPECT_EQ(r[0].value().map_value().entries().at("std").double_value(), 2.0);
}

TEST_F(WorkerProcessTest, Runs100EchoTasksAndAnswersInOrderWithTimestamps) {
  Start();
  ExpectHello();
  std::vector<v1::TaskSpec> tasks;
  for (int i = 0; i < 100; ++i) tasks.push_back(Task("t" + std::to_string(i), "echo@1", {IntValue(i)}));
  const int64_t sent_at = NowNanos();
  SendTasks(tasks);
  const auto results = CollectResults(100);
  const int64_t received_at = NowNanos();
  ASSERT_EQ(results.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    const auto& r = results[i];
    EXPECT_EQ(r.task_id(), "t" + std::to_string(i));
    EXPECT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r.value().int_value(), i);
    ASSERT_EQ(r.timestamps_size(), 2);
    EXPECT_EQ(r.timestamps(0).stage(), "worker_started");
    EXPECT_EQ(r.timestamps(1).stage(), "kernel_finished");
    EXPECT_LE(sent_at, r.timestamps(0).unix_nanos());
    EXPECT_LE(r.timestamps(0).unix_nanos(), r.timestamps(1).unix_nanos());
    EXPECT_LE(r.timestamps(1).unix_nanos(), received_at);
  }
}

TEST_F(WorkerProcessTest, FailTaskReturnsItsMessage) {
  Start();
  ExpectHello();
  SendTasks(
      {Task("f", "fail@1", {StringValue("beamline 7 is down")}), Task("ok", "add@1", {IntValue(1), IntValue(2)})});
  const auto r = CollectResults(2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].task_id(), "f");
  EXPECT_FALSE(r[0].ok());
  EXPECT_EQ(r[0].error(), "beamline 7 is down");
  EXPECT_TRUE(r[1].ok());
  EXPECT_EQ(r[1].value().int_value(), 3);
}

TEST_F(WorkerProcessTest, GarbageFramesDoNotKillIt) {
  Start();
  ExpectHello();
  SendFrame(zmq::message_t(std::string("\xff\xff\xff\xff not a protobuf")));
  // A multi-frame message is garbage too.
  ASSERT_TRUE(router_.send(zmq::buffer(kWorkerId), zmq::send_flags::sndmore));
  ASSERT_TRUE(router_.send(zmq::str_buffer("extra"), zmq::send_flags::sndmore));
  ASSERT_TRUE(router_.send(zmq::str_buffer("frames"), zmq::send_flags::none));
  SendTasks({Task("after", "echo@1", {StringValue("still here")})});
  const auto r = CollectResults(1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].task_id(), "after");
  EXPECT_EQ(r[0].value().string_value(), "still here");
  EXPECT_TRUE(worker_.Running());
  EXPECT_CONTAINS(Log(), "not a WorkerEnvelope");
}

TEST_F(WorkerProcessTest, CrashTaskKillsTheProcessWithSigkill) {
  Start();
  ExpectHello();
  SendTasks({Task("c", "crash@1")});
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value()) << "loom-worker still runs after crash@1";
  EXPECT_TRUE(WIFSIGNALED(*status)) << DescribeWaitStatus(*status);
  EXPECT_EQ(WTERMSIG(*status), SIGKILL) << DescribeWaitStatus(*status);
}

TEST_F(WorkerProcessTest, SigtermWhileIdleExitsWithCodeZero) {
  Start();
  ExpectHello();
  worker_.Signal(SIGTERM);
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value()) << "loom-worker ignored SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << DescribeWaitStatus(*status) << "\n" << Log();
}

TEST_F(WorkerProcessTest, SigintExitsWithCodeZero) {
  Start();
  ExpectHello();
  worker_.Signal(SIGINT);
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value()) << "loom-worker ignored SIGINT";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << DescribeWaitStatus(*status) << "\n" << Log();
}

TEST_F(WorkerProcessTest, SigtermWhileBusyExitsWithCodeZeroAfterTheTask) {
  Start();
  ExpectHello();
  SendTasks({Task("s", "sleep@1", {DoubleValue(0.2)}), Task("never", "sleep@1", {DoubleValue(60)})});
  worker_.Signal(SIGTERM);
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value()) << "loom-worker did not stop within the deadline";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << DescribeWaitStatus(*status) << "\n" << Log();
}

TEST_F(WorkerProcessTest, HelpListsTheFlagsAndExitsZero) {
  Start({"--help"}, /*bare=*/true);
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << DescribeWaitStatus(*status);
  const std::string help = Log();
  for (const char* flag : {"--endpoint", "--endpoint-fd", "--worker-id", "--plugin", "--plugin-dir",
                           "--max-message-bytes", "--log-level"}) {
    EXPECT_CONTAINS(help, flag);
  }
}

TEST_F(WorkerProcessTest, MissingRequiredFlagIsAUsageError) {
  Start({"--endpoint", address_}, /*bare=*/true);
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << DescribeWaitStatus(*status);
  EXPECT_CONTAINS(Log(), "--worker-id");
}

TEST_F(WorkerProcessTest, ItNeedsEitherEndpointOrEndpointFdAndNotBoth) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--worker-id", kWorkerId}, "--endpoint or --endpoint-fd"},
      {{"--worker-id", kWorkerId, "--endpoint", address_, "--endpoint-fd", "3"}, "excludes"},
  };
  for (const auto& [args, says] : cases) {
    Start(args, /*bare=*/true);
    auto status = WaitForExit();
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << DescribeWaitStatus(*status);
    EXPECT_CONTAINS(Log(), says);
  }
}

// The link loom-endpoint gives the workers it starts: one end of a socketpair, inherited.
class WorkerOnASocketTest : public WorkerProcessTest {
 protected:
  void StartOnSocket() {
    int ends[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends), 0);
    link_ = std::make_unique<FrameLink>(ends[0], 64 << 20);
    std::vector<std::string> argv = {LOOM_WORKER_PATH, "--endpoint-fd", std::to_string(ends[1]), "--worker-id",
                                     kWorkerId};
    SpawnOptions options;
    options.log_path = LogPath();
    options.inherit_fds = {ends[1]};
    auto p = Subprocess::Spawn(argv, options);
    ::close(ends[1]);
    ASSERT_TRUE(p.ok()) << p.status().message();
    worker_ = std::move(*p);
  }

  // The next envelope on the link, or nullopt at the deadline or when it broke.
  std::optional<v1::WorkerEnvelope> Next() {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (frames_.empty() && !link_->broken()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{link_->fd(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      (void)link_->Read([&](std::string_view f) { frames_.emplace_back(f); });
    }
    if (frames_.empty()) return std::nullopt;
    v1::WorkerEnvelope e;
    EXPECT_TRUE(e.ParseFromString(frames_.front())) << "the worker sent a frame that is not a WorkerEnvelope";
    frames_.erase(frames_.begin());
    return e;
  }

  std::unique_ptr<FrameLink> link_;
  std::vector<std::string> frames_;
};

TEST_F(WorkerOnASocketTest, SaysHelloRunsTasksInOrderAndEndsWithTheLink) {
  StartOnSocket();
  auto hello = Next();
  ASSERT_TRUE(hello.has_value()) << "no hello; the worker's log:\n" << Log();
  ASSERT_TRUE(hello->has_hello());
  EXPECT_EQ(hello->hello().pid(), worker_.pid());
  // Two batches, one of them larger than a socket's buffer, so both sides queue and resume.
  v1::WorkerEnvelope first, second;
  for (int i = 0; i < 50; ++i)
    *first.mutable_tasks()->add_tasks() = Task("a" + std::to_string(i), "echo@1", {IntValue(i)});
  *second.mutable_tasks()->add_tasks() = Task("big", "echo@1", {StringValue(std::string(4 << 20, 'z'))});
  ASSERT_TRUE(link_->Send(first.SerializeAsString()));
  ASSERT_TRUE(link_->Send(second.SerializeAsString()));
  std::vector<v1::TaskResult> results;
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (results.size() < 51 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{link_->fd(), static_cast<short>(POLLIN | (link_->wants_write() ? POLLOUT : 0)), 0};
    ASSERT_GE(::poll(&p, 1, 1000), 0);
    if (p.revents & POLLOUT) {
      ASSERT_TRUE(link_->Flush());
    }
    if (p.revents & (POLLIN | POLLHUP)) {
      ASSERT_TRUE(link_->Read([&](std::string_view f) { frames_.emplace_back(f); })) << link_->error().message();
    }
    while (!frames_.empty()) {
      auto e = Next();
      ASSERT_TRUE(e.has_value());
      ASSERT_TRUE(e->has_results()) << "body case " << e->body_case();
      for (const auto& r : e->results().results()) results.push_back(r);
    }
  }
  ASSERT_EQ(results.size(), 51u) << "the worker's log:\n" << Log();
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(results[i].task_id(), "a" + std::to_string(i));
    ASSERT_TRUE(results[i].ok()) << results[i].error();
  }
  EXPECT_EQ(results[50].task_id(), "big");
  ASSERT_TRUE(results[50].ok()) << results[50].error();
  EXPECT_EQ(results[50].value().string_value().size(), size_t{4} << 20);
  // The endpoint goes away: the worker sees the link close and ends, saying why.
  link_.reset();
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value()) << "the worker outlived its endpoint's socket";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << DescribeWaitStatus(*status);
  EXPECT_CONTAINS(Log(), FrameLink::kClosedByPeer);
}

// The endpoint stops reading (its side shut for reading, still open for writing, so the worker
// sees no end of stream): the results the worker sends find the link broken, and it ends rather
// than retrying a write that cannot succeed.
TEST_F(WorkerOnASocketTest, ResultsTheEndpointNoLongerReadsEndTheWorker) {
  StartOnSocket();
  ASSERT_TRUE(Next().has_value()) << "no hello; the worker's log:\n" << Log();
  v1::WorkerEnvelope e;
  *e.mutable_tasks()->add_tasks() = Task("t", "echo@1", {IntValue(1)});
  ASSERT_EQ(::shutdown(link_->fd(), SHUT_RD), 0);
  ASSERT_TRUE(link_->Send(e.SerializeAsString()));
  auto status = WaitForExit();
  ASSERT_TRUE(status.has_value()) << "the worker did not end; its log:\n" << Log();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << DescribeWaitStatus(*status);
  EXPECT_CONTAINS(Log(), "the link to the endpoint broke");
}

TEST_F(WorkerOnASocketTest, AFrameThatIsNotAnEnvelopeIsDroppedAndTheWorkerGoesOn) {
  StartOnSocket();
  ASSERT_TRUE(Next().has_value()) << "no hello; the worker's log:\n" << Log();
  ASSERT_TRUE(link_->Send(std::string("\xff\xff\xff garbage")));
  v1::WorkerEnvelope e;
  *e.mutable_tasks()->add_tasks() = Task("after", "echo@1", {IntValue(7)});
  ASSERT_TRUE(link_->Send(e.SerializeAsString()));
  auto r = Next();
  ASSERT_TRUE(r.has_value()) << "the worker's log:\n" << Log();
  ASSERT_TRUE(r->has_results());
  ASSERT_EQ(r->results().results_size(), 1);
  EXPECT_EQ(r->results().results(0).task_id(), "after");
}

}  // namespace
}  // namespace loom
