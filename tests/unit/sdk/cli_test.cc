// The `loom` CLI, run as a process against the in-process fake service.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/subprocess.h"
#include "common/util.h"
#include "common/value.h"
#include "tests/unit/sdk/fake_loom_service.h"

namespace loom {
namespace {

using sdk_test::FakeLoomServer;
using sdk_test::FakeLoomState;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GT(server_.Start(), 0);
    state_.AddFunction("add", "add@1");
    state_.AddFunction("fail", "fail@1");
    state_.AddFunction("slow", "sleep@1");
    state_.set_on_submit(sdk_test::AutoComplete);
  }

  // Runs `loom --service <fake> args...` (no --service when with_service is false).
  CliResult Run(const std::vector<std::string>& args, bool with_service = true, std::vector<std::string> env = {}) {
    std::vector<std::string> argv{LOOM_CLI_PATH};
    if (with_service) {
      argv.push_back("--service");
      argv.push_back(server_.address());
    }
    argv.insert(argv.end(), args.begin(), args.end());
    // ctest runs tests in parallel processes: the pid keeps their logs apart.
    const std::string log =
        ::testing::TempDir() + "loom_cli_test_" + std::to_string(getpid()) + "_" + std::to_string(++runs_) + ".log";
    std::remove(log.c_str());
    SpawnOptions options;
    options.log_path = log;
    options.env = std::move(env);
    auto child = Subprocess::Spawn(argv, options);
    CliResult result;
    if (!child.ok()) {
      ADD_FAILURE() << child.status().ToString();
      return result;
    }
    std::optional<int> status = child->Wait(std::chrono::seconds(30));
    if (!status.has_value()) {
      ADD_FAILURE() << "loom did not exit within 30 s";
      return result;
    }
    result.exit_code = WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
    result.output = ReadFileOrEmpty(log);
    std::remove(log.c_str());
    return result;
  }

  FakeLoomState state_;
  FakeLoomServer server_{state_};
  int runs_ = 0;
};

TEST_F(CliTest, HelpWorksOnEveryCommand) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"--help"},
                                                                {"function", "--help"},
                                                                {"function", "register", "--help"},
                                                                {"endpoint", "list", "--help"},
                                                                {"run", "--help"},
                                                                {"submit", "--help"},
                                                                {"task", "result", "--help"},
                                                                {"task", "get", "--help"},
                                                                {"task", "delete", "--help"}}) {
    CliResult r = Run(args, /*with_service=*/false);
    EXPECT_EQ(r.exit_code, 0) << args.front() << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr("--help"));
  }
  EXPECT_THAT(Run({"run", "--help"}, false).output, HasSubstr("--timeout"));
  for (const char* command : {"run", "submit"}) {
    const std::string help = Run({command, "--help"}, false).output;
    for (const char* flag : {"--idempotency-key", "--max-attempts", "--timeout-ms", "--failover", "--trace"}) {
      EXPECT_THAT(help, HasSubstr(flag)) << command;
    }
  }
  const std::string help = Run({"function", "register", "--help"}, false).output;
  EXPECT_THAT(help, HasSubstr("--max-attempts"));
  EXPECT_THAT(help, HasSubstr("--timeout-ms"));
}

TEST_F(CliTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(Run({"run", "--function", "add"}).exit_code, 2);
  EXPECT_EQ(Run({"bogus"}).exit_code, 2);
  CliResult r = Run({"function", "register", "f", "--kernel", "add@1", "--config", "novalue"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("error: INVALID_ARGUMENT: --config takes key=literal"));
}

TEST_F(CliTest, RegistersAndListsFunctions) {
  CliResult r = Run({"function", "register", "scale", "--kernel", "echo@1", "--description", "scales", "--config",
                     "factor=2.5", "--config", "mode=\"fast\""});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("registered function scale -> echo@1"));
  EXPECT_THAT(Run({"function", "register", "scale", "--kernel", "echo@1"}).output, HasSubstr("already registered"));

  r = Run({"function", "list"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("NAME"));
  EXPECT_THAT(r.output, HasSubstr("factor=2.5 mode=\"fast\""));

  r = Run({"function", "list", "--json"});  // global options may follow the command
  EXPECT_EQ(r.exit_code, 0);
  std::istringstream lines(r.output);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) EXPECT_THAT(line, MatchesRegex("\\{.*\"name\":.*\\}"));
  EXPECT_EQ(n, 4);
}

TEST_F(CliTest, RegistersAFunctionThatRequiresDeviceClasses) {
  CliResult r = Run({"function", "register", "train", "--kernel", "echo@1", "--requires", "gpu", "--requires", "fpga"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Run({"function", "get", "train", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("\"deviceClasses\":[\"gpu\",\"fpga\"]"));
}

TEST_F(CliTest, CreatesListsAndShowsEndpoints) {
  CliResult r = Run({"endpoint", "create", "laptop", "--id", "local"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("created endpoint local (laptop)"));
  r = Run({"endpoint", "list"});
  EXPECT_THAT(r.output, MatchesRegex("ID +NAME +STATUS +WORKERS +KERNELS +QUEUE +IN-FLIGHT +GROUP\nlocal +laptop "
                                     "+never-connected +0 +0 +0 +0 +-\n"));
  r = Run({"endpoint", "status", "local"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("status       never-connected"));
  r = Run({"endpoint", "status", "elsewhere"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("error: NOT_FOUND: endpoint 'elsewhere' does not exist"));
}

TEST_F(CliTest, RunPrintsTheResultAndExitsByOutcome) {
  CliResult r = Run({"run", "--endpoint", "ep", "--function", "add", "-3", "5"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "2\n");

  r = Run({"run", "--endpoint", "ep", "--function", "fail", "\"why\""});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, MatchesRegex("error: task task-[0-9]+ failed: boom\n"));

  r = Run({"run", "--endpoint", "ep", "--function", "slow", "60", "--timeout", "0.2"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.output, HasSubstr("not finished after 0.2 s (state: received)"));

  r = Run({"run", "--endpoint", "ep", "--function", "nope"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("error: NOT_FOUND: function 'nope' is not registered"));

  r = Run({"--json", "run", "--endpoint", "ep", "--function", "add", "1", "2"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, MatchesRegex("\\{.*\"state\":\"TASK_STATE_SUCCESS\".*\\}\n"));
}

TEST_F(CliTest, RunPassesLiteralsAndKwargs) {
  CliResult r = Run({"run", "--endpoint", "ep", "--function", "slow", "2.5", "[1,2]", "text", "--kwarg", "scale=3",
                     "--kwarg", "tag=[\"x\",1]", "--timeout", "0.01"});
  EXPECT_EQ(r.exit_code, 3) << r.output;
  const v1::TaskRecord t = state_.task(state_.task_ids().back());
  ASSERT_EQ(t.args_size(), 3) << t.DebugString();
  EXPECT_EQ(t.args(0).double_value(), 2.5);
  EXPECT_EQ(t.args(1).list_value().items_size(), 2);
  EXPECT_EQ(t.args(2).string_value(), "text");
  EXPECT_EQ(t.kwargs().at("scale").int_value(), 3);
  EXPECT_EQ(t.kwargs().at("tag").list_value().items(0).string_value(), "x");
}

TEST_F(CliTest, TaskStatusResultAndCancel) {
  CliResult r = Run({"run", "--endpoint", "ep", "--function", "slow", "60", "--timeout", "0.01"});
  ASSERT_EQ(r.exit_code, 3);
  const std::string id = state_.task_ids().back();

  r = Run({"task", "result", id});
  EXPECT_EQ(r.exit_code, 3);
  r = Run({"task", "cancel", id});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "task " + id + ": cancelled\n");
  r = Run({"task", "result", id, "--wait", "5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("cancelled"));

  r = Run({"task", "status", id});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("state     cancelled"));
  EXPECT_THAT(r.output, MatchesRegex("(.|\n)*  received +\\+0\\.0 +0\\.0\n  cancelled +\\+[0-9.]+ +[0-9.]+\n"));

  r = Run({"task", "status", "task-9999"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output, "error: NOT_FOUND: task 'task-9999' does not exist\n");
}

TEST_F(CliTest, FunctionRegisterSetsTheTaskDefaults) {
  CliResult r =
      Run({"function", "register", "slow2", "--kernel", "sleep@1", "--max-attempts", "5", "--timeout-ms", "60000"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Run({"function", "get", "slow2"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("max attempts 5\n"));
  EXPECT_THAT(r.output, HasSubstr("timeout      60000 ms\n"));
  // Its tasks take them unless the submit overrides them.
  r = Run({"submit", "--endpoint", "ep", "--function", "slow2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(state_.task(state_.task_ids().back()).max_attempts(), 5);
  EXPECT_EQ(state_.task(state_.task_ids().back()).timeout_ms(), 60000);

  r = Run({"function", "register", "bad", "--kernel", "sleep@1", "--max-attempts", "-1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("--max-attempts"));
}

TEST_F(CliTest, SubmitPrintsTheIdAndPassesTaskOptions) {
  const std::vector<std::string> args{
      "submit", "--endpoint",        "ep",    "--function",     "slow", "[1,2]",        "--kwarg",
      "n=3",    "--idempotency-key", "job-1", "--max-attempts", "4",    "--timeout-ms", "2500"};
  CliResult r = Run(args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(state_.task_ids().size(), 1u);
  const std::string id = state_.task_ids().back();
  EXPECT_EQ(r.output, id + "\n");
  const v1::TaskRecord t = state_.task(id);
  EXPECT_EQ(t.idempotency_key(), "job-1");
  EXPECT_EQ(t.max_attempts(), 4);
  EXPECT_EQ(t.timeout_ms(), 2500);
  EXPECT_EQ(t.args(0).list_value().items_size(), 2);
  EXPECT_EQ(t.kwargs().at("n").int_value(), 3);

  // The same key again: the same task, nothing new.
  r = Run(args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, id + "\n");
  EXPECT_EQ(state_.task_ids().size(), 1u);

  r = Run({"--json", "submit", "--endpoint", "ep", "--function", "slow"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "{\"taskId\":\"" + state_.task_ids().back() + "\"}\n");

  r = Run({"run", "--endpoint", "ep", "--function", "add", "1", "2", "--idempotency-key", "run-1", "--max-attempts",
           "2", "--timeout-ms", "100"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "3\n");
  EXPECT_EQ(state_.task(state_.task_ids().back()).idempotency_key(), "run-1");
  EXPECT_EQ(state_.task(state_.task_ids().back()).max_attempts(), 2);
  EXPECT_EQ(state_.task(state_.task_ids().back()).timeout_ms(), 100);

  EXPECT_EQ(Run({"submit", "--endpoint", "ep", "--function", "slow", "--timeout-ms", "-5"}).exit_code, 2);
  EXPECT_EQ(Run({"submit", "--endpoint", "ep", "--function", "nope"}).exit_code, 2);
}

TEST_F(CliTest, SubmitWithAKeyRidesOutUnavailable) {
  state_.FailNextSubmits(1, grpc::StatusCode::UNAVAILABLE, /*after_commit=*/true);
  CliResult r = Run({"submit", "--endpoint", "ep", "--function", "slow", "--idempotency-key", "k"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(state_.task_ids().size(), 1u);
  EXPECT_EQ(state_.submit_calls(), 2);

  state_.FailNextSubmits(1, grpc::StatusCode::UNAVAILABLE, /*after_commit=*/true);
  r = Run({"submit", "--endpoint", "ep", "--function", "slow"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("error: UNAVAILABLE: "));
  EXPECT_EQ(state_.submit_calls(), 3);
}

// A task that lost its worker twice and ran out of attempts.
void ExhaustedAttempts(v1::TaskRecord& r) {
  if (r.function() != "flaky") return sdk_test::AutoComplete(r);
  const int64_t received = r.timestamps(0).unix_nanos();
  r.set_attempts(2);
  for (int n = 1; n <= 2; ++n) {
    v1::Attempt* a = r.add_attempt_history();
    a->set_number(n);
    a->set_endpoint("ep");
    a->set_lease_epoch(3 + n);
    a->set_failure(n == 1 ? v1::FAILURE_KIND_WORKER_LOST : v1::FAILURE_KIND_ENDPOINT_LOST);
    a->set_error(n == 1 ? "worker 4242 died" : "endpoint went silent");
    a->set_ended_unix_nanos(received + int64_t{n} * 1'500'000'000);
  }
  r.set_failure(v1::FAILURE_KIND_ATTEMPTS_EXHAUSTED);
  r.set_error("failed on system failures 2 times (max_attempts 2)");
  r.set_state(v1::TASK_STATE_FAILED);
}

TEST_F(CliTest, TaskStatusShowsAttemptsFailureAndAttemptHistory) {
  state_.AddFunction("flaky", "sleep@1");
  state_.set_on_submit(ExhaustedAttempts);
  CliResult r = Run({"run", "--endpoint", "ep", "--function", "flaky", "--max-attempts", "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, MatchesRegex("error: task task-[0-9]+ failed \\(attempts-exhausted\\): failed on system "
                                     "failures 2 times \\(max_attempts 2\\)\n"));
  const std::string id = state_.task_ids().back();
  for (const char* verb : {"status", "get"}) {
    r = Run({"task", verb, id});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr("state     failed\nattempts  2 of 2\nfailure   attempts-exhausted\n"));
    EXPECT_THAT(r.output, MatchesRegex("(.|\n)*attempt history:\n"
                                       "  attempt +endpoint +lease-epoch +failure +ended +error\n"
                                       "  1 +ep +4 +worker-lost +\\+1\\.500 s +worker 4242 died\n"
                                       "  2 +ep +5 +endpoint-lost +\\+3\\.000 s +endpoint went silent\n(.|\n)*"));
  }
  // A task without system failures has no history, but its attempt count.
  r = Run({"submit", "--endpoint", "ep", "--function", "add", "1", "2"});
  ASSERT_EQ(r.exit_code, 0);
  r = Run({"task", "status", state_.task_ids().back()});
  EXPECT_THAT(r.output, HasSubstr("attempts  0 of 3\n"));
  EXPECT_THAT(r.output, Not(HasSubstr("failure")));
  EXPECT_THAT(r.output, Not(HasSubstr("attempt history")));
}

TEST_F(CliTest, TaskDeleteDeletesFinishedTasksAndRefusesUnfinishedOnes) {
  std::vector<std::string> done;
  for (int i = 0; i < 2; ++i) {
    CliResult r = Run({"submit", "--endpoint", "ep", "--function", "add", "1", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    done.push_back(state_.task_ids().back());
  }
  ASSERT_EQ(Run({"submit", "--endpoint", "ep", "--function", "slow"}).exit_code, 0);
  const std::string running = state_.task_ids().back();

  CliResult r = Run({"task", "delete", done[0], running});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output,
            "error: FAILED_PRECONDITION: task '" + running + "' has not finished; cancel it before deleting it\n");
  EXPECT_TRUE(state_.has_task(done[0]));

  r = Run({"task", "delete", done[0], done[1], "task-9999"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "deleted 2 of 3 task(s)\n");
  EXPECT_FALSE(state_.has_task(done[0]));
  EXPECT_FALSE(state_.has_task(done[1]));

  r = Run({"--json", "task", "delete", "task-9999"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "{\"deleted\":0}\n");
  EXPECT_EQ(Run({"task", "delete"}).exit_code, 2);  // at least one id
}

TEST_F(CliTest, TakesTheServiceFromTheEnvironment) {
  CliResult r = Run({"function", "list"}, /*with_service=*/false, {"LOOM_SERVICE=" + server_.address()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("add@1"));
}

// The fake plays the kernels loom-demo uses, with the hops a real task records.
void DemoKernels(v1::TaskRecord& r) {
  auto ok = [&](Value v) {
    *r.mutable_result() = std::move(v);
    r.set_state(v1::TASK_STATE_SUCCESS);
  };
  for (const char* hop : {"dispatched", "endpoint_received", "worker_started", "kernel_finished"}) {
    v1::Timestamp* t = r.add_timestamps();
    t->set_stage(hop);
    t->set_unix_nanos(NowNanos());
  }
  const std::string& f = r.function();
  if (f == "demo-echo") {
    ok(r.args(0));
  } else if (f == "demo-sleep") {
    ok(DoubleValue(r.args(0).double_value()));
  } else if (f == "demo-fail") {
    r.set_error(r.args(0).string_value());
    r.set_state(v1::TASK_STATE_FAILED);
  } else if (r.args(0).has_tensor_value()) {
    const Tensor& a = r.args(0).tensor_value();
    std::vector<float> sum;
    for (int64_t i = 0; i < ElementCount(a); ++i) {
      sum.push_back(
          static_cast<float>(TensorElementAsDouble(a, i) + TensorElementAsDouble(r.args(1).tensor_value(), i)));
    }
    ok(TensorValue({a.shape().begin(), a.shape().end()}, sum));
  } else if (r.args(0).has_double_value()) {
    ok(DoubleValue(r.args(0).double_value() + r.args(1).double_value()));
  } else {
    ok(IntValue(r.args(0).int_value() + r.args(1).int_value()));
  }
}

TEST_F(CliTest, DemoPassesAndPrintsThroughputAndLatency) {
  state_.set_on_submit(DemoKernels);
  std::vector<std::string> argv{LOOM_DEMO_PATH, "--service", server_.address(), "--tasks", "300", "--json"};
  const std::string log = ::testing::TempDir() + "loom_demo_test_" + std::to_string(getpid()) + ".log";
  std::remove(log.c_str());
  SpawnOptions options;
  options.log_path = log;
  auto child = Subprocess::Spawn(argv, options);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  std::optional<int> status = child->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value());
  const std::string output = ReadFileOrEmpty(log);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << output;
  EXPECT_THAT(output, MatchesRegex(R"re((.|\n)*\{"tasks":300,"seconds":[0-9.]+,"tasks_per_s":[0-9.]+\}(.|\n)*)re"));
  EXPECT_THAT(output, HasSubstr("tensor<float32>[2x2]{11, 22, 33, 44}"));
  EXPECT_THAT(output, HasSubstr("failed: this task fails on purpose"));
  EXPECT_THAT(output, MatchesRegex("(.|\n)*  kernel_finished +[0-9.]+ +[0-9.]+\n(.|\n)*"));
  EXPECT_THAT(output, HasSubstr("demo passed"));
  EXPECT_EQ(state_.submit_batch_sizes().front(), 300u);

  // Registering again is fine, and a wrong answer fails the demo.
  state_.set_on_submit([](v1::TaskRecord& r) {
    DemoKernels(r);
    if (r.function() == "demo-add" && r.args(0).has_int_value() && r.args(0).int_value() == 7) {
      r.mutable_result()->set_int_value(0);
    }
  });
  auto again = Subprocess::Spawn(argv, options);
  ASSERT_TRUE(again.ok());
  status = again->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << ReadFileOrEmpty(log);
  EXPECT_THAT(ReadFileOrEmpty(log), HasSubstr("already registered"));
}

TEST_F(CliTest, UnreachableServiceIsAnRpcError) {
  CliResult r =
      Run({"--service", "127.0.0.1:" + std::to_string(FreeLoopbackPort()), "--rpc-timeout", "0.2", "endpoint", "list"},
          /*with_service=*/false);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("error: UNAVAILABLE: cannot connect to the Loom service at 127.0.0.1:"));
  EXPECT_THAT(r.output, Not(HasSubstr("NAME")));
}

}  // namespace
}  // namespace loom
