// libFuzzer target: what the service does with ZeroMQ frames from endpoints. The input is a
// sequence of messages, each [peer byte][length byte][payload], handed to a real Broker (over the
// in-memory store, endpoint auth off) as if it came from one of a few peers, so registrations,
// heartbeats, credit and results interleave across sessions. Must never crash, hang or leak.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "service/broker.h"
#include "service/completion_hub.h"
#include "service/credit_book.h"
#include "service/memory_task_store.h"

namespace {

struct Fixture {
  loom::service::InMemoryTaskStore store;
  loom::service::CompletionHub hub;
  loom::service::CreditBook credit;
  std::unique_ptr<loom::service::Broker> broker;

  Fixture() {
    loom::service::BrokerOptions o;
    o.bind = "tcp://127.0.0.1:*";
    o.max_message_bytes = 1 << 20;
    broker = std::make_unique<loom::service::Broker>(&store, &hub, &credit, o, [](const loom::v1::EndpointRecord&) {});
    if (!broker->Bind().ok()) std::abort();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* f = new Fixture();  // one broker for the whole run, as in the service
  size_t i = 0;
  while (i + 2 <= size) {
    const std::string peer = "peer-" + std::to_string(data[i] % 4);
    const size_t len = std::min<size_t>(data[i + 1], size - i - 2);
    f->broker->HandleForTesting(peer, std::string_view(reinterpret_cast<const char*>(data + i + 2), len));
    i += 2 + len;
  }
  return 0;
}
