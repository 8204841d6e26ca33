// Static checks of containers/ (the images are not built in CI: that needs the Debian mirrors):
// the Dockerfile defines the images the endpoint's container templates name, puts loom-worker
// where the default worker command finds it, installs the packages that the built binaries'
// shared libraries come from, and the Apptainer definition runs the same worker.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "common/util.h"
#include "common/launch.h"

namespace loom::endpoint {
namespace {

const std::string kSource = LOOM_SOURCE_DIR;
const std::string kBin = LOOM_BIN_DIR;

// Output of a shell command (the tools are binutils and dpkg, on every Debian build host).
std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// The Dockerfile's stages: name -> the stage's text, continuation lines joined.
std::map<std::string, std::string> Stages(const std::string& dockerfile) {
  std::map<std::string, std::string> stages;
  std::string current;
  std::istringstream in(std::regex_replace(dockerfile, std::regex("\\\\\n"), " "));
  std::string line;
  const std::regex from("^FROM\\s+\\S+\\s+AS\\s+(\\S+)", std::regex::icase);
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, from)) current = m[1];
    if (!current.empty() && !line.starts_with("#")) stages[current] += line + "\n";
  }
  return stages;
}

TEST(ContainersTest, TheDockerfileDefinesServiceEndpointAndWorkerImages) {
  const std::string dockerfile = ReadFileOrEmpty(kSource + "/containers/Dockerfile");
  ASSERT_FALSE(dockerfile.empty());
  auto stages = Stages(dockerfile);
  for (const char* image : {"service", "endpoint", "worker"}) {
    EXPECT_TRUE(stages.contains(image)) << "no stage " << image;
    // The build command in the header tags it as the name the docs and templates use.
    EXPECT_NE(dockerfile.find(std::string("--target ") + image + " "), std::string::npos) << image;
    EXPECT_NE(dockerfile.find(std::string("-t loom-") + image + ":latest"), std::string::npos) << image;
  }
  // The runtime stages start from Debian 12, and the build installs quickstart.sh's packages.
  EXPECT_NE(dockerfile.find("FROM debian:12 AS build"), std::string::npos);
  EXPECT_NE(dockerfile.find("FROM debian:12-slim AS runtime"), std::string::npos);
  EXPECT_NE(stages["build"].find("tools/quickstart.sh deps"), std::string::npos);
  EXPECT_NE(ReadFileOrEmpty(kSource + "/tools/quickstart.sh").find("\n  deps)\n"), std::string::npos);
}

TEST(ContainersTest, TheWorkerImageHoldsTheProgramTheDefaultTemplatesRun) {
  auto stages = Stages(ReadFileOrEmpty(kSource + "/containers/Dockerfile"));
  const std::string worker_binary = ContainerConfig{}.worker_binary;  // run from PATH
  EXPECT_EQ(worker_binary, "loom-worker");
  EXPECT_NE(stages["worker"].find("/usr/local/bin/" + worker_binary), std::string::npos) << stages["worker"];
  // The endpoint image starts workers itself, sandboxed or not.
  EXPECT_NE(stages["endpoint"].find("/usr/local/bin/"), std::string::npos);
  EXPECT_NE(stages["endpoint"].find("bubblewrap"), std::string::npos);
  // An ENTRYPOINT would swallow the command the endpoint's template appends after the image.
  EXPECT_NE(stages["worker"].find("ENTRYPOINT []"), std::string::npos);

  const std::string def = ReadFileOrEmpty(kSource + "/containers/loom-worker.def");
  ASSERT_FALSE(def.empty());
  EXPECT_NE(def.find("From: debian:12"), std::string::npos);
  EXPECT_NE(def.find("tools/quickstart.sh deps"), std::string::npos);
  EXPECT_NE(def.find("/usr/local/bin/" + worker_binary), std::string::npos);
  EXPECT_NE(def.find("exec " + worker_binary + " \"$@\""), std::string::npos);
  // The apptainer template passes the .sif and then the command to `apptainer exec`.
  auto tmpl = DefaultContainerTemplate("apptainer");
  ASSERT_GE(tmpl.size(), 2u);
  EXPECT_EQ(tmpl[1], "exec");
}

TEST(ContainersTest, TheRuntimeImageInstallsWhereTheBinariesSharedLibrariesComeFrom) {
  auto stages = Stages(ReadFileOrEmpty(kSource + "/containers/Dockerfile"));
  std::set<std::string> installed;
  std::smatch m;
  std::string runtime = stages["runtime"];
  const std::regex pkg("\\s(lib[a-z0-9.+-]+|ca-certificates)(?=\\s)");
  for (auto it = std::sregex_iterator(runtime.begin(), runtime.end(), pkg); it != std::sregex_iterator(); ++it) {
    installed.insert((*it)[1]);
  }
  ASSERT_GT(installed.size(), 5u) << runtime;
  // Every library a binary names directly (NEEDED) comes from one of those packages, or from
  // the base image (libc, libstdc++, libgcc), or is Loom's own (copied from the build).
  const std::set<std::string> base = {"libc6", "libstdc++6", "libgcc-s1"};
  std::map<std::string, std::set<std::string>> users;  // library path -> binaries needing it
  std::string paths;
  for (const char* bin : {"loom-endpoint", "loom-worker", "loom-service"}) {
    const std::string path = kBin + "/" + bin;
    const std::string needed = Shell("readelf -d '" + path + "' | sed -n 's/.*(NEEDED).*\\[\\(.*\\)\\]/\\1/p'");
    ASSERT_FALSE(needed.empty()) << "cannot read " << path;
    const std::string ldd = Shell("ldd '" + path + "'");
    std::istringstream libs(needed);
    std::string lib;
    while (std::getline(libs, lib)) {
      if (lib.starts_with("libloom") || lib.starts_with("ld-linux")) continue;  // ours; libc6's loader
      std::regex where(std::regex_replace(lib, std::regex("[.+]"), "\\$&") + " => (\\S+)");
      ASSERT_TRUE(std::regex_search(ldd, m, where)) << bin << ": " << lib << " not found by ldd";
      users[m[1]].insert(bin);
    }
  }
  // One dpkg call for all (it is slow to start). Debian 12 merged /lib into /usr/lib, and dpkg
  // knows each file by the path its package ships: ask with both.
  for (const auto& [path, unused] : users) {
    paths += " '" + path + "'";
    if (path.starts_with("/usr/lib/")) paths += " '" + path.substr(4) + "'";
    if (path.starts_with("/lib/")) paths += " '/usr" + path + "'";
  }
  std::map<std::string, std::string> owner;  // path -> package
  std::istringstream found(Shell("dpkg -S" + paths + " 2>/dev/null"));
  std::string line;
  while (std::getline(found, line)) {
    size_t sep = line.find(": ");
    if (sep == std::string::npos) continue;
    std::string package = line.substr(0, line.find(':'));
    std::string path = line.substr(sep + 2);
    owner[path] = package;
    if (path.starts_with("/usr/lib/")) owner[path.substr(4)] = package;
    if (path.starts_with("/lib/")) owner["/usr" + path] = package;
  }
  for (const auto& [path, bins] : users) {
    auto it = owner.find(path);
    ASSERT_NE(it, owner.end()) << path << " belongs to no Debian package";
    EXPECT_TRUE(installed.contains(it->second) || base.contains(it->second))
        << *bins.begin() << " needs " << path << " from " << it->second
        << ", which containers/Dockerfile does not install";
  }
}

}  // namespace
}  // namespace loom::endpoint
