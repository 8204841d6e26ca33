#include "sdk_cpp/internal.h"

#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>

namespace loom::sdk_internal {

size_t RepeatedFieldBytes(size_t payload_bytes) {
  // One tag byte (field numbers below 16) plus the length varint.
  const auto len = static_cast<uint64_t>(payload_bytes);
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(len) + payload_bytes;
}

size_t RequestBudget(int64_t max_message_bytes) {
  constexpr int64_t kHeadroom = 1024;
  return static_cast<size_t>(std::max<int64_t>(max_message_bytes - kHeadroom, max_message_bytes / 2));
}

Result<std::vector<size_t>> ChunkBySize(std::span<const size_t> sizes, size_t max_items, size_t max_bytes) {
  std::vector<size_t> ends;
  max_items = std::max<size_t>(max_items, 1);
  size_t count = 0;
  size_t bytes = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] > max_bytes) {
      return InvalidArgument("item " + std::to_string(i) + " is " + std::to_string(sizes[i]) +
                             " bytes on the wire, over the limit of " + std::to_string(max_bytes) +
                             " bytes; raise ClientOptions::max_message_bytes (and the service's limit) "
                             "or pass less data per task");
    }
    if (count == max_items || bytes + sizes[i] > max_bytes) {
      ends.push_back(i);
      count = 0;
      bytes = 0;
    }
    ++count;
    bytes += sizes[i];
  }
  if (count > 0) ends.push_back(sizes.size());
  return ends;
}

std::chrono::milliseconds SubmitRetryBackoff(int retry, double jitter) {
  auto base = kSubmitRetryInitialBackoff;
  for (int i = 1; i < retry && base < kSubmitRetryMaxBackoff; ++i) base *= 2;
  base = std::min(base, kSubmitRetryMaxBackoff);
  jitter = std::clamp(jitter, -1.0, 1.0);
  return std::chrono::milliseconds(std::llround(static_cast<double>(base.count()) * (1.0 + 0.2 * jitter)));
}

std::chrono::milliseconds JitteredSubmitRetryBackoff(int retry) {
  thread_local std::minstd_rand rng(std::random_device{}());
  std::uniform_real_distribution<double> jitter(-1.0, 1.0);
  return SubmitRetryBackoff(retry, jitter(rng));
}

}  // namespace loom::sdk_internal
