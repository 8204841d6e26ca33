#include "service/task_codec.h"

#include <algorithm>
#include <charconv>

namespace loom::service {

std::string EncodeStamp(std::string_view stage, int64_t unix_nanos) {
  std::string s;
  s.reserve(stage.size() + 22);
  s.append(stage).append("=").append(std::to_string(unix_nanos)).append(";");
  return s;
}

void DecodeStamps(std::string_view encoded, google::protobuf::RepeatedPtrField<v1::Timestamp>* out) {
  while (!encoded.empty()) {
    auto semi = encoded.find(';');
    std::string_view entry = encoded.substr(0, semi);
    encoded = semi == std::string_view::npos ? std::string_view() : encoded.substr(semi + 1);
    auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    int64_t ns = 0;
    std::from_chars(entry.data() + eq + 1, entry.data() + entry.size(), ns);
    auto* t = out->Add();
    t->set_stage(std::string(entry.substr(0, eq)));
    t->set_unix_nanos(ns);
  }
  std::stable_sort(out->begin(), out->end(),
                   [](const v1::Timestamp& a, const v1::Timestamp& b) { return a.unix_nanos() < b.unix_nanos(); });
}

std::string QueueFullMessage(const std::string& endpoint, int64_t depth, int64_t adding, int64_t max_queue_depth) {
  return "endpoint '" + endpoint + "' has " + std::to_string(depth) + " task(s) queued; " + std::to_string(adding) +
         " more would pass the limit of " + std::to_string(max_queue_depth) +
         " (max_queue_depth): wait for it to drain or start the endpoint";
}

v1::TaskRecord MakeRecord(const std::string& id, int state, const std::string& owner, const std::string& function,
                          const std::string& endpoint, const std::string& stamps, const std::string& result,
                          const std::string& error, const std::string& spec) {
  v1::TaskRecord r;
  r.set_id(id);
  r.set_state(static_cast<v1::TaskState>(state));
  r.set_owner(owner);
  r.set_function(function);
  r.set_endpoint(endpoint);
  DecodeStamps(stamps, r.mutable_timestamps());
  if (!result.empty()) r.mutable_result()->ParseFromString(result);
  r.set_error(error);
  if (!spec.empty()) {
    v1::TaskSpec s;
    if (s.ParseFromString(spec)) {
      *r.mutable_args() = s.args();
      *r.mutable_kwargs() = s.kwargs();
    }
  }
  return r;
}

}  // namespace loom::service
