#include "common/launch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "endpoint/config.h"
#include "tests/support/test_env.h"

namespace loom::endpoint {
namespace {

using Args = std::vector<std::string>;

LaunchCommand Worker() {
  return {{"/build/worker/loom-worker", "--endpoint", "ipc:///run/loom/ep1/workers.sock", "--worker-id", "w0.1"},
          {"LOOM_CACHE=/var/cache/loom"},
          {}};
}

LaunchContext Context() { return {"loom-ep1-w0.1", {"/run/loom/ep1"}, 1000, 100, {}, {}}; }

TEST(LaunchTest, NothingConfiguredLeavesTheCommandAsItIs) {
  auto r = WrapWorkerCommand(Worker(), Context(), {}, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, Worker().argv);
  EXPECT_EQ(r->env, Worker().env);
  EXPECT_TRUE(r->cleanup.empty());
}

TEST(LaunchTest, DockerRunsTheImageAsTheEndpointUserWithTheRunDirectoryBound) {
  ContainerConfig c;
  c.runtime = "docker";
  c.image = "loom-worker:latest";
  c.binds = {"/data:ro", "/models:/opt/models"};
  c.options = {"--network", "none"};
  auto r = WrapWorkerCommand(Worker(), Context(), c, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (Args{"docker",
                           "run",
                           "--rm",
                           "--init",
                           "--name",
                           "loom-ep1-w0.1",
                           "--user",
                           "1000:100",
                           "--volume",
                           "/run/loom/ep1:/run/loom/ep1",
                           "--volume",
                           "/data:/data:ro",
                           "--volume",
                           "/models:/opt/models",
                           "--env",
                           "LOOM_CACHE=/var/cache/loom",
                           "--network",
                           "none",
                           "loom-worker:latest",
                           "loom-worker",
                           "--endpoint",
                           "ipc:///run/loom/ep1/workers.sock",
                           "--worker-id",
                           "w0.1"}));
  EXPECT_TRUE(r->env.empty()) << "the environment goes into the container through --env";
  EXPECT_EQ(r->cleanup, (Args{"docker", "rm", "--force", "loom-ep1-w0.1"}));
}

TEST(LaunchTest, PodmanUsesItsOwnBinaryAndTheSameTemplate) {
  ContainerConfig c;
  c.runtime = "podman";
  c.runtime_binary = "/usr/bin/podman";
  c.image = "localhost/loom-worker:0.1";
  c.worker_binary = "/usr/local/bin/loom-worker";
  auto r = WrapWorkerCommand(Worker(), Context(), c, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (Args{"/usr/bin/podman", "run", "--rm", "--init", "--name", "loom-ep1-w0.1", "--user", "1000:100",
                           "--volume", "/run/loom/ep1:/run/loom/ep1", "--env", "LOOM_CACHE=/var/cache/loom",
                           "localhost/loom-worker:0.1", "/usr/local/bin/loom-worker", "--endpoint",
                           "ipc:///run/loom/ep1/workers.sock", "--worker-id", "w0.1"}));
  EXPECT_EQ(r->cleanup, (Args{"/usr/bin/podman", "rm", "--force", "loom-ep1-w0.1"}));
}

TEST(LaunchTest, ApptainerExecsTheSifWithContainAllAndNoCleanup) {
  ContainerConfig c;
  c.runtime = "apptainer";
  c.image = "/shared/images/loom-worker.sif";
  c.binds = {"/scratch/alice:/scratch"};
  c.options = {"--nv"};
  auto r = WrapWorkerCommand(Worker(), Context(), c, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (Args{"apptainer", "exec", "--containall", "--bind", "/run/loom/ep1:/run/loom/ep1", "--bind",
                           "/scratch/alice:/scratch", "--env", "LOOM_CACHE=/var/cache/loom", "--nv",
                           "/shared/images/loom-worker.sif", "loom-worker", "--endpoint",
                           "ipc:///run/loom/ep1/workers.sock", "--worker-id", "w0.1"}));
  EXPECT_TRUE(r->cleanup.empty());
}

TEST(LaunchTest, ACustomTemplateSubstitutesEveryPlaceholder) {
  ContainerConfig c;
  c.runtime = "docker";
  c.image = "registry.example/loom/worker:2";
  c.command = {"sudo", "-n",    "{runtime}", "run",     "--rm",    "--label",  "loom.worker={name}",
               "-u",   "{uid}", "{options}", "{binds}", "{image}", "{command}"};
  c.cleanup = {"sudo", "-n", "{runtime}", "kill", "{name}"};
  auto r = WrapWorkerCommand(Worker(), Context(), c, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (Args{"sudo", "-n", "docker", "run", "--rm", "--label", "loom.worker=loom-ep1-w0.1", "-u", "1000",
                           "--volume", "/run/loom/ep1:/run/loom/ep1", "registry.example/loom/worker:2", "loom-worker",
                           "--endpoint", "ipc:///run/loom/ep1/workers.sock", "--worker-id", "w0.1"}));
  EXPECT_EQ(r->cleanup, (Args{"sudo", "-n", "docker", "kill", "loom-ep1-w0.1"}));
}

TEST(LaunchTest, BubblewrapMakesTheRootReadOnlyTmpPrivateAndCutsTheNetwork) {
  SandboxConfig s;
  s.type = "bubblewrap";
  s.writable = {"/var/cache/loom"};
  auto r = WrapWorkerCommand(Worker(), Context(), {}, s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv, (Args{"bwrap",
                           "--die-with-parent",
                           "--unshare-pid",
                           "--unshare-ipc",
                           "--new-session",
                           "--unshare-net",
                           "--ro-bind",
                           "/",
                           "/",
                           "--dev",
                           "/dev",
                           "--proc",
                           "/proc",
                           "--tmpfs",
                           "/tmp",
                           "--tmpfs",
                           "/dev/shm",
                           "--bind",
                           "/run/loom/ep1",
                           "/run/loom/ep1",
                           "--bind",
                           "/var/cache/loom",
                           "/var/cache/loom",
                           "--",
                           "/build/worker/loom-worker",
                           "--endpoint",
                           "ipc:///run/loom/ep1/workers.sock",
                           "--worker-id",
                           "w0.1"}));
  EXPECT_EQ(r->env, Worker().env) << "bwrap hands its environment to the worker";
  EXPECT_TRUE(r->cleanup.empty());
}

TEST(LaunchTest, BubblewrapWithNetworkAndOptions) {
  SandboxConfig s;
  s.type = "bubblewrap";
  s.bwrap = "/usr/bin/bwrap";
  s.network = true;
  s.options = {"--dev-bind", "/dev/nvidia0", "/dev/nvidia0"};
  auto r = WrapWorkerCommand(Worker(), Context(), {}, s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->argv[0], "/usr/bin/bwrap");
  EXPECT_EQ(std::count(r->argv.begin(), r->argv.end(), "--unshare-net"), 0);
  auto dash = std::find(r->argv.begin(), r->argv.end(), "--");
  ASSERT_NE(dash, r->argv.end());
  EXPECT_EQ((Args(dash - 3, dash)), (Args{"--dev-bind", "/dev/nvidia0", "/dev/nvidia0"}));
}

void ExpectError(const ContainerConfig& c, const SandboxConfig& s, const std::string& needle,
                 const LaunchContext& ctx = Context()) {
  auto r = WrapWorkerCommand(Worker(), ctx, c, s);
  ASSERT_FALSE(r.ok()) << "expected an error containing '" << needle << "'";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

TEST(LaunchTest, BadSettingsAreClearErrors) {
  ContainerConfig c;
  c.runtime = "lxc";
  c.image = "x";
  ExpectError(c, {}, "'lxc' is not one of docker, podman, apptainer");
  c.runtime = "docker";
  c.image = "";
  ExpectError(c, {}, "container.image is required");
  c.image = "img";
  c.command = {"docker", "run", "{image}"};
  ExpectError(c, {}, "must hold {image} and {command}");
  c.command = {"docker", "run", "{image}", "{command}", "{command}"};
  ExpectError(c, {}, "must hold {image} and {command}");
  c.command = {"docker", "run", "--label={hostname}", "{image}", "{command}"};
  ExpectError(c, {}, "unknown placeholder {hostname}");
  c.command = {"docker", "run", "-v{binds}", "{image}", "{command}"};
  ExpectError(c, {}, "{binds} must be an argument of its own");
  c.command = {"docker", "run", "{image", "{command}"};
  ExpectError(c, {}, "without its '}'");
  c.command.clear();
  c.binds = {"data:/data"};
  ExpectError(c, {}, "both paths must be absolute");
  c.binds = {"/a:/b:/c"};
  ExpectError(c, {}, "expected HOST, HOST:CONTAINER");
  c.binds.clear();
  c.cleanup = {"{runtime}", "rm", "{command}"};
  ExpectError(c, {}, "{command} has no meaning here");
  c.cleanup.clear();
  LaunchContext bad_name = Context();
  bad_name.name = "w 1";
  ExpectError(c, {}, "not a valid container name", bad_name);

  SandboxConfig s;
  s.type = "bubblewrap";
  ExpectError(c, s, "container and sandbox are exclusive");
  s.type = "firejail";
  ExpectError({}, s, "'firejail' is not supported");
  s.type = "bubblewrap";
  s.writable = {"cache"};
  ExpectError({}, s, "must be an absolute path");
  s.writable = {"/"};
  ExpectError({}, s, "whole root writable");
  s.writable.clear();
  SandboxConfig none;
  none.type = "none";
  none.writable = {"/x"};
  ExpectError({}, none, "without a type");
  ContainerConfig no_runtime;
  no_runtime.image = "img";
  ExpectError(no_runtime, {}, "without a runtime");

  LaunchCommand w = Worker();
  w.env = {"=x"};
  auto r = WrapWorkerCommand(w, Context(), {}, {});
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(WrapWorkerCommand(LaunchCommand{}, Context(), {}, {}).ok());
}

TEST(LaunchTest, DefaultTemplatesPassTheirOwnValidation) {
  for (const char* runtime : {"docker", "podman", "apptainer"}) {
    ContainerConfig c;
    c.runtime = runtime;
    c.image = "img";
    c.command = DefaultContainerTemplate(runtime);
    EXPECT_TRUE(ValidateContainerConfig(c).ok()) << runtime;
  }
}

TEST(LaunchTest, ConfigFileReadsTheContainerAndSandboxSections) {
  loom::testing::TempDir dir("launch-config");
  std::string path = dir.path() + "/endpoint.yaml";
  std::ofstream(path) << R"(
id: hpc
container:
  runtime: apptainer
  image: /images/loom-worker.sif
  runtime_binary: /opt/apptainer/bin/apptainer
  worker_binary: /usr/local/bin/loom-worker
  options: [--nv]
  binds: [/scratch]
  command: ["{runtime}", exec, "{binds}", "{env}", "{options}", "{image}", "{command}"]
  cleanup: [true]
)";
  EndpointConfig c;
  Status s = LoadEndpointConfigFile(path, &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.container.runtime, "apptainer");
  EXPECT_EQ(c.container.image, "/images/loom-worker.sif");
  EXPECT_EQ(c.container.runtime_binary, "/opt/apptainer/bin/apptainer");
  EXPECT_EQ(c.container.worker_binary, "/usr/local/bin/loom-worker");
  EXPECT_EQ(c.container.options, (Args{"--nv"}));
  EXPECT_EQ(c.container.binds, (Args{"/scratch"}));
  EXPECT_EQ(c.container.command.size(), 7u);
  EXPECT_EQ(c.container.cleanup, (Args{"true"}));
  EXPECT_FALSE(c.sandbox.enabled());

  std::ofstream(path) << R"(
id: edge
sandbox:
  type: bubblewrap
  bwrap: /usr/bin/bwrap
  writable: [/var/cache/loom]
  network: true
  options: [--unshare-uts]
)";
  EndpointConfig e;
  s = LoadEndpointConfigFile(path, &e);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(e.sandbox.type, "bubblewrap");
  EXPECT_EQ(e.sandbox.bwrap, "/usr/bin/bwrap");
  EXPECT_EQ(e.sandbox.writable, (Args{"/var/cache/loom"}));
  EXPECT_TRUE(e.sandbox.network);
  EXPECT_EQ(e.sandbox.options, (Args{"--unshare-uts"}));
}

TEST(LaunchTest, ConfigFileErrorsNameTheFileAndTheKey) {
  loom::testing::TempDir dir("launch-config-bad");
  std::string path = dir.path() + "/endpoint.yaml";
  auto load_error = [&](const std::string& yaml) {
    std::ofstream(path) << yaml;
    EndpointConfig c;
    Status s = LoadEndpointConfigFile(path, &c);
    EXPECT_FALSE(s.ok()) << yaml;
    EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
    return s.message();
  };
  EXPECT_NE(load_error("container:\n  runtime: docker\n  imagee: x\n").find("unknown key 'container.imagee'"),
            std::string::npos);
  EXPECT_NE(load_error("sandbox:\n  typ: bubblewrap\n").find("unknown key 'sandbox.typ'"), std::string::npos);
  EXPECT_NE(load_error("container: docker\n").find("'container' must be a map"), std::string::npos);
  EXPECT_NE(load_error("container:\n  runtime: docker\n").find("container.image is required"), std::string::npos);
  EXPECT_NE(load_error("sandbox:\n  type: bubblewrap\n  network: maybe\n").find("bad conversion"), std::string::npos);
  EXPECT_NE(load_error("sandbox:\n  type: bubblewrap\ncontainer:\n  runtime: podman\n  image: w\n").find("exclusive"),
            std::string::npos);
}

TEST(LaunchTest, ReadOnlyPathsAreBoundReadOnlyInContainersAndTheSandbox) {
  LaunchContext ctx = Context();
  ctx.read_only_paths = {"/tmp/loom-ep/blocks/worker.key"};
  ContainerConfig docker;
  docker.runtime = "docker";
  docker.image = "loom-worker:1";
  auto r = WrapWorkerCommand(Worker(), ctx, docker, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Args want = {"--volume", "/tmp/loom-ep/blocks/worker.key:/tmp/loom-ep/blocks/worker.key:ro"};
  EXPECT_NE(std::search(r->argv.begin(), r->argv.end(), want.begin(), want.end()), r->argv.end());

  SandboxConfig bwrap;
  bwrap.type = "bubblewrap";
  r = WrapWorkerCommand(Worker(), ctx, {}, bwrap);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // After the private /tmp, or the sandbox could not see a path under /tmp.
  const Args ro = {"--ro-bind", "/tmp/loom-ep/blocks/worker.key", "/tmp/loom-ep/blocks/worker.key"};
  auto at = std::search(r->argv.begin(), r->argv.end(), ro.begin(), ro.end());
  ASSERT_NE(at, r->argv.end());
  const Args tmp = {"--tmpfs", "/tmp"};
  EXPECT_LT(std::search(r->argv.begin(), r->argv.end(), tmp.begin(), tmp.end()), at);

  ctx.read_only_paths = {"relative/worker.key"};
  EXPECT_FALSE(WrapWorkerCommand(Worker(), ctx, {}, bwrap).ok());
  EXPECT_FALSE(WrapWorkerCommand(Worker(), ctx, docker, {}).ok());
}

// A worker built or installed under /tmp (or /dev/shm): the sandbox's private /tmp would hide it
// (bwrap: execvp ... No such file or directory), so the top directory holding it is bound
// read-only, before the run directory and the writable ones so that those stay writable.
TEST(LaunchTest, TheSandboxBindsAProgramUnderTmpReadOnlyAndLeavesOthersAlone) {
  LaunchContext ctx = Context();
  ctx.shared_dirs = {"/tmp/ci/build/run/ep1"};
  ctx.program_paths = {"/tmp/ci/build/bin/loom-worker", "/tmp/ci/build/lib/probe.so", "/dev/shm/plugins",
                       "/usr/lib/loom/plugins", "/tmp", "/tmpfoo/loom-worker"};
  SandboxConfig bwrap;
  bwrap.type = "bubblewrap";
  auto r = WrapWorkerCommand(Worker(), ctx, {}, bwrap);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto find = [&](const Args& want) { return std::search(r->argv.begin(), r->argv.end(), want.begin(), want.end()); };
  const auto build = find({"--ro-bind", "/tmp/ci", "/tmp/ci"});
  const auto shm = find({"--ro-bind", "/dev/shm/plugins", "/dev/shm/plugins"});
  ASSERT_NE(build, r->argv.end());
  ASSERT_NE(shm, r->argv.end());
  EXPECT_EQ(std::count(r->argv.begin(), r->argv.end(), "/tmp/ci"), 2) << "bound once for both of its files";
  EXPECT_LT(find({"--tmpfs", "/dev/shm"}), build);
  EXPECT_LT(build, find({"--bind", "/tmp/ci/build/run/ep1", "/tmp/ci/build/run/ep1"}));
  EXPECT_EQ(find({"--ro-bind", "/usr/lib/loom/plugins", "/usr/lib/loom/plugins"}), r->argv.end())
      << "the read-only root shows it already";
  EXPECT_EQ(std::count(r->argv.begin(), r->argv.end(), "/tmpfoo"), 0);
  EXPECT_EQ(std::count(r->argv.begin(), r->argv.end(), "/tmp"), 1) << "only --tmpfs /tmp: /tmp itself is not bound";

  ContainerConfig docker;
  docker.runtime = "docker";
  docker.image = "loom-worker:1";
  r = WrapWorkerCommand(Worker(), ctx, docker, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(std::count_if(r->argv.begin(), r->argv.end(),
                          [](const std::string& a) { return a.find("/tmp/ci/build/bin") != std::string::npos; }),
            0)
      << "a container runs the image's own worker";
}

// The endpoint hands a block's loom-manager its container/sandbox settings in a launch file.
TEST(LaunchTest, LaunchFileRoundTripsEverySetting) {
  loom::testing::TempDir dir("launch-file");
  const std::string path = dir.path() + "/launch.yaml";
  ContainerConfig c;
  c.runtime = "podman";
  c.image = "registry.example/loom-worker:2";
  c.runtime_binary = "/usr/bin/podman";
  c.worker_binary = "/opt/loom/bin/loom-worker";
  c.command = DefaultContainerTemplate("podman");
  c.options = {"--network", "host"};
  c.binds = {"/data:/data:ro"};
  c.cleanup = {"{runtime}", "rm", "-f", "{name}"};
  std::ofstream(path) << LaunchSettingsYaml(c, {});
  ContainerConfig c2;
  SandboxConfig s2;
  Status st = LoadLaunchSettingsFile(path, &c2, &s2);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << LaunchSettingsYaml(c, {});
  EXPECT_EQ(c2.runtime, c.runtime);
  EXPECT_EQ(c2.image, c.image);
  EXPECT_EQ(c2.runtime_binary, c.runtime_binary);
  EXPECT_EQ(c2.worker_binary, c.worker_binary);
  EXPECT_EQ(c2.command, c.command);
  EXPECT_EQ(c2.options, c.options);
  EXPECT_EQ(c2.binds, c.binds);
  EXPECT_EQ(c2.cleanup, c.cleanup);
  EXPECT_FALSE(s2.enabled());

  SandboxConfig s;
  s.type = "bubblewrap";
  s.bwrap = "/usr/bin/bwrap";
  s.writable = {"/scratch"};
  s.network = true;
  s.options = {"--unshare-uts"};
  std::ofstream(path) << LaunchSettingsYaml({}, s);
  ContainerConfig c3;
  SandboxConfig s3;
  st = LoadLaunchSettingsFile(path, &c3, &s3);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(c3.enabled());
  EXPECT_EQ(s3.type, s.type);
  EXPECT_EQ(s3.bwrap, s.bwrap);
  EXPECT_EQ(s3.writable, s.writable);
  EXPECT_TRUE(s3.network);
  EXPECT_EQ(s3.options, s.options);

  std::ofstream(path) << "sandbox:\n  type: firejail\n";
  st = LoadLaunchSettingsFile(path, &c3, &s3);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("firejail"), std::string::npos) << st.message();
  std::ofstream(path) << "engine: {}\n";
  st = LoadLaunchSettingsFile(path, &c3, &s3);
  EXPECT_NE(st.message().find("unknown section 'engine'"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace loom::endpoint
