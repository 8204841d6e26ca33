// What hardware an endpoint advertises when it registers (EndpointRegister.devices): the host's
// CPU cores and memory, the GPUs nvidia-smi reports, and devices declared in the endpoint's
// config (an FPGA, possibly an emulated one). The service checks a function's
// Requirements.device_classes against them at submit. Also the pinning of workers to GPUs:
// with workers_per_gpu set, each worker sees one GPU through CUDA_VISIBLE_DEVICES.
//
// Free functions on plain data; nothing here keeps state. Thread-safe.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "loom.pb.h"

namespace loom::endpoint {

// A device declared in the endpoint's config (`devices:` in the YAML): hardware that cannot be
// discovered (an FPGA card) or a software stand-in for it (emulated: true).
struct DeclaredDevice {
  std::string kind;  // device class: "fpga", "gpu", ...
  std::string model;
  int count = 1;
  int64_t memory_bytes = 0;
  bool emulated = false;
};

// Parses the output of
//   nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader
// (memory as "81559 MiB", or a bare MiB number with nounits): one Device of kind "gpu" per line.
// Blank lines are skipped; a malformed line is an error naming it.
Result<std::vector<v1::Device>> ParseNvidiaSmiGpus(const std::string& csv);

// Runs `nvidia_smi` (a program name looked up in PATH, or a path) with the query above. No such
// program: no GPUs, not an error (a host without NVIDIA drivers). A program that fails or prints
// something unparseable: no GPUs, and the reason in `*warning`.
std::vector<v1::Device> DiscoverGpus(const std::string& nvidia_smi, std::string* warning);

// The CPU device: every core the host has, and its physical memory.
v1::Device HostCpu();

// Checks a declared device (a class name of letters, digits, '-' or '_'; count >= 1).
Status CheckDeclaredDevice(const DeclaredDevice& d);
v1::Device ToDevice(const DeclaredDevice& d);
// loom-endpoint's --device flag: CLASS[:MODEL[:emulated]].
Result<DeclaredDevice> ParseDeviceFlag(const std::string& flag);

// The extra environment of each of `workers` workers: with workers_per_gpu > 0 and GPUs found,
// worker i gets CUDA_VISIBLE_DEVICES=<index of GPU i / workers_per_gpu> (the GPUs in the order
// given), so each GPU has workers_per_gpu workers of its own; workers beyond that many GPUs'
// worth get CUDA_VISIBLE_DEVICES="" (they see no GPU). workers_per_gpu == 0 or no GPUs: no
// extra environment.
std::vector<std::vector<std::string>> WorkerEnvironments(const std::vector<v1::Device>& devices, int workers_per_gpu,
                                                         int workers);

// How many workers pinning wants: workers_per_gpu × the GPUs in `devices` (0 when off or no GPU).
int PinnedWorkerCount(const std::vector<v1::Device>& devices, int workers_per_gpu);

}  // namespace loom::endpoint
