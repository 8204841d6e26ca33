// libFuzzer target: the REST gateway's JSON -> message decoding (service/json_codec.h) on every
// request message the gateway accepts. The first byte picks the message type, the rest is the
// body. Must never crash, hang, or leak; a decoded message must print back to JSON.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "loom.pb.h"
#include "service/json_codec.h"

namespace {

std::unique_ptr<google::protobuf::Message> MessageFor(uint8_t selector) {
  using namespace loom::v1;  // NOLINT
  switch (selector % 12) {
    case 0: return std::make_unique<SubmitRequest>();
    case 1: return std::make_unique<SubmitBatchRequest>();
    case 2: return std::make_unique<RegisterFunctionRequest>();
    case 3: return std::make_unique<Function>();
    case 4: return std::make_unique<CreateEndpointRequest>();
    case 5: return std::make_unique<UpdateEndpointRequest>();
    case 6: return std::make_unique<GetTasksRequest>();
    case 7: return std::make_unique<WaitResultsRequest>();
    case 8: return std::make_unique<DeleteTasksRequest>();
    case 9: return std::make_unique<CreateTokenRequest>();
    case 10: return std::make_unique<Value>();
    default: return std::make_unique<TaskRecord>();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto msg = MessageFor(data[0]);
  loom::service::JsonLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_depth = 64;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  if (loom::service::JsonToMessage(body, msg.get(), limits).ok()) {
    (void)loom::service::MessageToJson(*msg);
  }
  return 0;
}
