// docs/openapi.yaml and the gateway's route table say the same thing: the same routes, path and
// query parameters, request and response messages, and authentication; every schema named
// after a loom.v1 message or enum lists exactly its fields or values; and every documented route
// is served (over HTTP, it answers with something other than the router's 404 or 405).
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <set>

#include "loom.pb.h"
#include "service/memory_task_store.h"
#include "service/rest_gateway.h"

namespace loom::service {
namespace {

using google::protobuf::DescriptorPool;

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "loom.v1.SubmitRequest" -> "#/components/schemas/SubmitRequest".
std::string RefTo(const std::string& message) {
  return "#/components/schemas/" + message.substr(message.rfind('.') + 1);
}

std::string Upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> PathParams(const std::string& tmpl) {
  std::vector<std::string> out;
  for (size_t open = tmpl.find('{'); open != std::string::npos; open = tmpl.find('{', open + 1)) {
    out.push_back(tmpl.substr(open + 1, tmpl.find('}', open) - open - 1));
  }
  return out;
}

void CollectRefs(const YAML::Node& n, std::set<std::string>* refs) {
  if (n.IsMap()) {
    for (const auto& kv : n) {
      if (kv.first.as<std::string>() == "$ref") refs->insert(kv.second.as<std::string>());
      CollectRefs(kv.second, refs);
    }
  } else if (n.IsSequence()) {
    for (const auto& v : n) CollectRefs(v, refs);
  }
}

class RestOpenApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      doc_ = YAML::LoadFile(std::string(LOOM_SOURCE_DIR) + "/docs/openapi.yaml");
    } catch (const YAML::Exception& e) {
      FAIL() << "docs/openapi.yaml: " << e.what();
    }
    ASSERT_TRUE(doc_["paths"].IsMap());
    for (const auto& path : doc_["paths"]) {
      for (const auto& op : path.second) {
        ops_[{op.first.as<std::string>(), path.first.as<std::string>()}] = op.second;
      }
    }
  }
  YAML::Node doc_;
  std::map<std::pair<std::string, std::string>, YAML::Node> ops_;  // (method in lower case, path)
};

TEST_F(RestOpenApiTest, DocumentsEveryServedRouteAndServesEveryDocumentedOne) {
  std::set<std::pair<std::string, std::string>> served, documented;
  for (const auto& r : RestGateway::Routes()) served.insert({Lower(r.method), r.path});
  for (const auto& [key, op] : ops_) documented.insert(key);
  for (const auto& s : served) EXPECT_TRUE(documented.contains(s)) << "not documented: " << s.first << " " << s.second;
  for (const auto& d : documented) EXPECT_TRUE(served.contains(d)) << "not served: " << d.first << " " << d.second;
  EXPECT_EQ(served.size(), RestGateway::Routes().size()) << "a route is in the table twice";
}

TEST_F(RestOpenApiTest, EachRouteIsDocumentedAsItIsServed) {
  for (const auto& r : RestGateway::Routes()) {
    SCOPED_TRACE(r.method + " " + r.path);
    auto it = ops_.find({Lower(r.method), r.path});
    if (it == ops_.end()) continue;  // reported by the test above
    const YAML::Node& op = it->second;
    EXPECT_EQ(op["operationId"].as<std::string>(""), r.operation);
    EXPECT_FALSE(op["summary"].as<std::string>("").empty());
    // Parameters.
    std::vector<std::string> in_path, in_query;
    for (const auto& p : op["parameters"]) {
      const std::string where = p["in"].as<std::string>();
      (where == "path" ? in_path : in_query).push_back(p["name"].as<std::string>());
      if (where == "path") {
        EXPECT_TRUE(p["required"].as<bool>(false)) << p["name"];
      }
    }
    EXPECT_EQ(in_path, PathParams(r.path));
    EXPECT_EQ(std::set<std::string>(in_query.begin(), in_query.end()),
              std::set<std::string>(r.query.begin(), r.query.end()));
    // Request body.
    const YAML::Node body = op["requestBody"];
    EXPECT_EQ(body.IsDefined(), !r.request.empty());
    if (body.IsDefined() && !r.request.empty()) {
      EXPECT_EQ(body["required"].as<bool>(false), r.request_required);
      EXPECT_EQ(body["content"]["application/json"]["schema"]["$ref"].as<std::string>(""), RefTo(r.request));
    }
    // Success response: the first 2xx.
    YAML::Node ok;
    std::string ok_code;
    for (const auto& resp : op["responses"]) {
      const std::string code = resp.first.as<std::string>();
      if (code.size() == 3 && code[0] == '2' && (ok_code.empty() || code < ok_code)) {
        ok_code = code;
        ok = resp.second;
      }
    }
    ASSERT_TRUE(ok.IsDefined()) << "no 2xx response";
    EXPECT_TRUE(op["responses"]["default"].IsDefined()) << "errors are not documented";
    if (!r.response.empty()) {
      const std::string type = r.operation == "WaitResults" ? "application/x-ndjson" : "application/json";
      EXPECT_EQ(ok["content"][type]["schema"]["$ref"].as<std::string>(""), RefTo(r.response));
    }
    // Authentication: the document's default is the bearer token; `security: []` opts out.
    const bool open = op["security"].IsDefined() && op["security"].size() == 0;
    EXPECT_EQ(!open, r.authenticated);
  }
}

TEST_F(RestOpenApiTest, EverySchemaRefResolves) {
  std::set<std::string> refs;
  CollectRefs(doc_, &refs);
  ASSERT_FALSE(refs.empty());
  for (const auto& ref : refs) {
    const std::string prefix =
        ref.rfind("#/components/responses/", 0) == 0 ? "#/components/responses/" : "#/components/schemas/";
    ASSERT_EQ(ref.rfind(prefix, 0), 0u) << ref;
    const std::string name = ref.substr(prefix.size());
    EXPECT_TRUE(doc_["components"][prefix == "#/components/schemas/" ? "schemas" : "responses"][name].IsDefined())
        << ref << " does not resolve";
  }
}

TEST_F(RestOpenApiTest, SchemasOfProtoMessagesNameExactlyTheirFields) {
  int messages = 0, enums = 0;
  for (const auto& kv : doc_["components"]["schemas"]) {
    const std::string name = kv.first.as<std::string>();
    SCOPED_TRACE(name);
    const YAML::Node& schema = kv.second;
    if (const auto* m = DescriptorPool::generated_pool()->FindMessageTypeByName("loom.v1." + name)) {
      ++messages;
      std::set<std::string> fields, documented;
      for (int i = 0; i < m->field_count(); ++i) fields.insert(m->field(i)->name());
      for (const auto& p : schema["properties"]) documented.insert(p.first.as<std::string>());
      EXPECT_EQ(documented, fields);
    } else if (const auto* e = DescriptorPool::generated_pool()->FindEnumTypeByName("loom.v1." + name)) {
      ++enums;
      std::vector<std::string> values, documented;
      for (int i = 0; i < e->value_count(); ++i) values.push_back(e->value(i)->name());
      for (const auto& v : schema["enum"]) documented.push_back(v.as<std::string>());
      EXPECT_EQ(documented, values);
    }
  }
  // Every message a route takes or gives is among them.
  for (const auto& r : RestGateway::Routes()) {
    for (const auto& m : {r.request, r.response}) {
      if (m.empty()) continue;
      EXPECT_NE(DescriptorPool::generated_pool()->FindMessageTypeByName(m), nullptr) << m;
      EXPECT_TRUE(doc_["components"]["schemas"][m.substr(m.rfind('.') + 1)].IsDefined()) << m;
    }
  }
  EXPECT_GE(messages, 30);
  EXPECT_EQ(enums, 5);
}

class NullNotifier : public DispatchNotifier {
 public:
  void TasksQueued(const std::vector<std::string>&) override {}
  void TasksDispatched(const std::string&, const std::string&, int64_t, std::vector<v1::TaskSpec>, int64_t) override {}
  void TasksCancelled(const std::string&, const std::vector<std::string>&) override {}
};

TEST_F(RestOpenApiTest, EveryDocumentedRouteIsRoutedOverHttp) {
  InMemoryTaskStore store;
  CompletionHub hub;
  NullNotifier notifier;
  LoomApi api(&store, &hub, &notifier, {});
  RestOptions options;
  options.address = "127.0.0.1:0";
  auto gw = RestGateway::Start(options, &api, nullptr);
  ASSERT_TRUE(gw.ok()) << gw.status().ToString();
  const std::string address = (*gw)->address();
  httplib::Client c(address.substr(0, address.rfind(':')), std::stoi(address.substr(address.rfind(':') + 1)));
  c.set_read_timeout(10, 0);
  for (const auto& [key, op] : ops_) {
    const auto& [method, tmpl] = key;
    SCOPED_TRACE(method + " " + tmpl);
    std::string path = tmpl;
    for (size_t open; (open = path.find('{')) != std::string::npos;) {
      path.replace(open, path.find('}', open) - open + 1, "x");
    }
    httplib::Request req;
    req.method = Upper(method);
    req.path = path;
    if (op["requestBody"].IsDefined()) {
      req.body = "{}";
      req.set_header("Content-Type", "application/json");
    }
    auto r = c.send(req);
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_NE(r->status, 405) << r->body;
    EXPECT_FALSE(r->status == 404 && r->body.find("no route for") != std::string::npos) << r->body;
  }
}

}  // namespace
}  // namespace loom::service
