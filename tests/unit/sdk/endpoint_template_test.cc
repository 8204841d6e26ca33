// The config.yaml that `loom endpoint configure NAME` writes is a config loom-endpoint reads, and
// so is each of its commented-out sections once uncommented.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "endpoint/config.h"
#include "sdk_cpp/cli/endpoint_daemons.h"
#include "tests/support/test_env.h"

namespace loom::cli {
namespace {

ConfigTemplateValues Values() {
  ConfigTemplateValues v;
  v.id = "gpu-box";
  v.service_address = "tcp://svc.example.org:50052";
  v.secret_key_file = "/home/alice/.loom/endpoints/gpu-box/endpoint.key";
  v.service_public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  v.owner = "alice";
  v.allowed_users = {"bob"};
  v.allowed_functions = {"echo", "bob/add"};
  return v;
}

// The template with the commented block that starts at `# SECTION:` uncommented.
std::string Uncomment(const std::string& text, const std::string& section) {
  std::istringstream in(text);
  std::string out, line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line == "# " + section + ":") inside = true;
    if (line.empty()) inside = false;
    if (inside && line.starts_with("# ")) {
      line = line.substr(2);
      if (line.starts_with("  # ")) line.clear();  // a comment within the block stays out
    }
    out += line + "\n";
  }
  return out;
}

Status Load(const std::string& text, endpoint::EndpointConfig* c) {
  loom::testing::TempDir dir("endpoint-template");
  const std::string path = dir.path() + "/config.yaml";
  std::ofstream(path) << text;
  return endpoint::LoadEndpointConfigFile(path, c);
}

TEST(EndpointTemplateTest, TheTemplateIsAnEndpointConfigWithTheGivenValues) {
  endpoint::EndpointConfig c;
  Status s = Load(EndpointConfigTemplate(Values()), &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.id, "gpu-box");
  EXPECT_EQ(c.service, "tcp://svc.example.org:50052");
  EXPECT_EQ(c.curve_secret_key_file, "/home/alice/.loom/endpoints/gpu-box/endpoint.key");
  EXPECT_EQ(c.service_public_key, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
  EXPECT_EQ(c.owner, "alice");
  EXPECT_EQ(c.allowed_users, (std::vector<std::string>{"bob"}));
  EXPECT_EQ(c.allowed_functions, (std::vector<std::string>{"echo", "bob/add"}));
  EXPECT_EQ(c.workers, 2);
  EXPECT_FALSE(c.sandbox.enabled());
  EXPECT_FALSE(c.container.enabled());
}

TEST(EndpointTemplateTest, ItsSandboxAndContainerSectionsLoadWhenUncommented) {
  const std::string text = EndpointConfigTemplate(Values());
  endpoint::EndpointConfig sandboxed;
  Status s = Load(Uncomment(text, "sandbox"), &sandboxed);
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << Uncomment(text, "sandbox");
  EXPECT_EQ(sandboxed.sandbox.type, "bubblewrap");
  EXPECT_EQ(sandboxed.sandbox.writable, (std::vector<std::string>{"/var/cache/loom"}));

  endpoint::EndpointConfig contained;
  s = Load(Uncomment(text, "container"), &contained);
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << Uncomment(text, "container");
  EXPECT_EQ(contained.container.runtime, "docker");
  EXPECT_EQ(contained.container.image, "loom-worker:latest");
  EXPECT_EQ(contained.container.command, DefaultContainerTemplate("docker"))
      << "the template shows the default run command";
}

TEST(EndpointTemplateTest, WithoutKeysOrOwnerThoseLinesAreLeftOut) {
  ConfigTemplateValues v;
  v.id = "plain";
  const std::string text = EndpointConfigTemplate(v);
  EXPECT_EQ(text.find("curve_secret_key_file"), std::string::npos);
  EXPECT_EQ(text.find("owner:"), std::string::npos);
  EXPECT_NE(text.find("service: tcp://SERVICE-HOST:50052"), std::string::npos);
  endpoint::EndpointConfig c;
  Status s = Load(text, &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.id, "plain");
}

}  // namespace
}  // namespace loom::cli
