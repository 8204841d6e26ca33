#include "endpoint/devices.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "common/subprocess.h"
#include "common/util.h"

namespace loom::endpoint {

namespace {

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> SplitCsv(const std::string& line) {
  std::vector<std::string> out;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, ',')) out.push_back(Trim(field));
  return out;
}

// "81559 MiB", "81559" (nounits: MiB), "16 GiB".
Result<int64_t> ParseMemory(const std::string& s) {
  size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(s, &used);
  } catch (const std::exception&) {
    return InvalidArgument("memory '" + s + "' is not a number");
  }
  if (n < 0) return InvalidArgument("memory '" + s + "' is negative");
  const std::string unit = Trim(s.substr(used));
  if (unit.empty() || unit == "MiB") return static_cast<int64_t>(n) << 20;
  if (unit == "GiB") return static_cast<int64_t>(n) << 30;
  if (unit == "KiB") return static_cast<int64_t>(n) << 10;
  return InvalidArgument("memory '" + s + "' has an unknown unit '" + unit + "'");
}

// The program's path: `name` itself when it holds a '/', else the first match in PATH; empty
// when there is none.
std::string FindProgram(const std::string& name) {
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

bool ValidClass(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' ||
          c == '_'))
      return false;
  }
  return true;
}

}  // namespace

Result<std::vector<v1::Device>> ParseNvidiaSmiGpus(const std::string& csv) {
  std::vector<v1::Device> gpus;
  std::istringstream in(csv);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (Trim(line).empty()) continue;
    auto f = SplitCsv(line);
    if (f.size() != 4) {
      return InvalidArgument("nvidia-smi line " + std::to_string(n) + " '" + line +
                             "' has not 4 fields (index, name, memory.total, uuid)");
    }
    v1::Device d;
    d.set_kind("gpu");
    try {
      size_t used = 0;
      const int index = std::stoi(f[0], &used);
      if (used != f[0].size() || index < 0) throw std::invalid_argument(f[0]);
      d.set_index(index);
    } catch (const std::exception&) {
      return InvalidArgument("nvidia-smi line " + std::to_string(n) + ": index '" + f[0] + "' is not a number");
    }
    d.set_name(f[1]);
    auto mem = ParseMemory(f[2]);
    if (!mem.ok()) return InvalidArgument("nvidia-smi line " + std::to_string(n) + ": " + mem.status().message());
    d.set_memory_bytes(*mem);
    d.set_uuid(f[3]);
    d.set_count(1);
    gpus.push_back(std::move(d));
  }
  return gpus;
}

std::vector<v1::Device> DiscoverGpus(const std::string& nvidia_smi, std::string* warning) {
  const std::string program = FindProgram(nvidia_smi);
  if (program.empty()) return {};  // no NVIDIA driver here: no GPUs
  char tmpl[] = "/tmp/loom-nvidia-smi-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  if (fd < 0) {
    *warning = "cannot make a temporary file for nvidia-smi's output";
    return {};
  }
  ::close(fd);
  const std::string out_path = tmpl;
  SpawnOptions opts;
  opts.log_path = out_path;
  auto proc = Subprocess::Spawn({program, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader"}, opts);
  std::vector<v1::Device> gpus;
  if (!proc.ok()) {
    *warning = program + ": " + proc.status().message();
  } else {
    // nvidia-smi answers in well under a second; a hung driver must not hang the endpoint.
    auto st = proc->Wait(std::chrono::seconds(10));
    if (!st) {
      proc->Stop(std::chrono::milliseconds(100));
      *warning = program + " did not answer within 10 s";
    } else if (*st != 0) {
      *warning = program + " failed (" + DescribeWaitStatus(*st) + "): " + Trim(ReadFileOrEmpty(out_path));
    } else {
      auto parsed = ParseNvidiaSmiGpus(ReadFileOrEmpty(out_path));
      if (parsed.ok()) {
        gpus = std::move(*parsed);
      } else {
        *warning = parsed.status().message();
      }
    }
  }
  ::unlink(out_path.c_str());
  return gpus;
}

v1::Device HostCpu() {
  v1::Device cpu;
  cpu.set_kind("cpu");
  cpu.set_name("host");
  cpu.set_count(static_cast<int32_t>(std::thread::hardware_concurrency()));
  cpu.set_memory_bytes(static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGE_SIZE));
  return cpu;
}

Status CheckDeclaredDevice(const DeclaredDevice& d) {
  if (!ValidClass(d.kind)) {
    return InvalidArgument("device class '" + d.kind +
                           "' is invalid: use 1-64 lowercase letters, digits, '-' or '_' (e.g. fpga, gpu)");
  }
  if (d.count < 1) return InvalidArgument("device '" + d.kind + "': count must be at least 1");
  if (d.memory_bytes < 0) return InvalidArgument("device '" + d.kind + "': memory_bytes is negative");
  return Status::Ok();
}

v1::Device ToDevice(const DeclaredDevice& d) {
  v1::Device out;
  out.set_kind(d.kind);
  out.set_name(d.model);
  out.set_count(d.count);
  out.set_memory_bytes(d.memory_bytes);
  out.set_emulated(d.emulated);
  return out;
}

Result<DeclaredDevice> ParseDeviceFlag(const std::string& flag) {
  DeclaredDevice d;
  const size_t a = flag.find(':');
  d.kind = flag.substr(0, a);
  if (a != std::string::npos) {
    const size_t b = flag.find(':', a + 1);
    d.model = flag.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    if (b != std::string::npos) {
      if (flag.substr(b + 1) != "emulated") {
        return InvalidArgument("'" + flag + "': the third part may only be 'emulated' (CLASS[:MODEL[:emulated]])");
      }
      d.emulated = true;
    }
  }
  LOOM_RETURN_IF_ERROR(CheckDeclaredDevice(d));
  return d;
}

int PinnedWorkerCount(const std::vector<v1::Device>& devices, int workers_per_gpu) {
  if (workers_per_gpu <= 0) return 0;
  int gpus = 0;
  for (const auto& d : devices) gpus += d.kind() == "gpu" ? 1 : 0;
  return gpus * workers_per_gpu;
}

std::vector<std::vector<std::string>> WorkerEnvironments(const std::vector<v1::Device>& devices, int workers_per_gpu,
                                                         int workers) {
  std::vector<std::vector<std::string>> env(std::max(0, workers));
  if (workers_per_gpu <= 0) return env;
  std::vector<int> indexes;
  for (const auto& d : devices) {
    if (d.kind() == "gpu") indexes.push_back(d.index());
  }
  if (indexes.empty()) return env;
  for (int i = 0; i < workers; ++i) {
    const size_t gpu = static_cast<size_t>(i / workers_per_gpu);
    env[i].push_back("CUDA_VISIBLE_DEVICES=" + (gpu < indexes.size() ? std::to_string(indexes[gpu]) : ""));
  }
  return env;
}

}  // namespace loom::endpoint
