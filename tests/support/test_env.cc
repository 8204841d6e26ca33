#include "tests/support/test_env.h"

#include <cstdlib>
#include <filesystem>
#include <thread>

namespace loom::testing {

std::string BinDir() { return LOOM_BIN_DIR; }

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / ("loom-" + prefix + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
  return tmpl;
}

std::unique_ptr<LocalFabric> MakeFabric(const std::string& name, std::vector<std::string> service_args) {
  LocalFabricOptions o;
  o.bin_dir = BinDir();
  o.state_dir = MakeTempDir(name);
  o.log_level = "info";
  o.service_args = std::move(service_args);
  o.remove_state_dir = std::getenv("LOOM_KEEP_TEST_STATE") == nullptr;
  return std::make_unique<LocalFabric>(o);
}

TempDir::~TempDir() {
  if (std::getenv("LOOM_KEEP_TEST_STATE") != nullptr) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  return true;
}

}  // namespace loom::testing
