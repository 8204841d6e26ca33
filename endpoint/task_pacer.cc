#include "endpoint/task_pacer.h"

namespace loom::endpoint {

void TaskPacer::Observe(const std::string& kernel, int64_t run_ns) {
  if (short_below_ns_ <= 0 || run_ns < 0) return;
  Pace& p = pace_[kernel];
  const auto ns = static_cast<double>(run_ns);
  p.average_ns = p.samples == 0 ? ns : (1 - kWeight) * p.average_ns + kWeight * ns;
  if (p.samples < kMinSamples) ++p.samples;
}

bool TaskPacer::IsShort(const std::string& kernel) const {
  if (short_below_ns_ <= 0) return false;
  auto it = pace_.find(kernel);
  return it != pace_.end() && it->second.samples >= kMinSamples &&
         it->second.average_ns < static_cast<double>(short_below_ns_);
}

double TaskPacer::AverageNanos(const std::string& kernel) const {
  auto it = pace_.find(kernel);
  return it == pace_.end() ? 0 : it->second.average_ns;
}

}  // namespace loom::endpoint
