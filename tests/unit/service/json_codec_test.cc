// JSON <-> protobuf for the REST gateway: the mapping, the limits checked before protobuf's
// parser, and robustness on hostile input.
#include "service/json_codec.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <random>

#include "common/value.h"
#include "loom.pb.h"

namespace loom::service {
namespace {

TEST(JsonCodecTest, ParsesSnakeAndCamelCaseAndPrintsSnakeCaseWithDefaults) {
  v1::SubmitRequest r;
  Status s = JsonToMessage(R"({"function": "add", "endpoint": "ep", "max_attempts": 2, "timeoutMs": "1500",
                               "args": [{"int_value": "40"}, {"intValue": 2}, {"double_value": 0.5}]})",
                           &r, {});
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(r.function(), "add");
  EXPECT_EQ(r.max_attempts(), 2);
  EXPECT_EQ(r.timeout_ms(), 1500);
  ASSERT_EQ(r.args_size(), 3);
  EXPECT_EQ(r.args(0).int_value(), 40);
  EXPECT_EQ(r.args(1).int_value(), 2);
  auto json = MessageToJson(r);
  ASSERT_TRUE(json.ok());
  // int64 as strings, snake_case names, defaults printed.
  EXPECT_EQ(*json,
            R"({"function":"add","endpoint":"ep","args":[{"int_value":"40"},{"int_value":"2"},{"double_value":0.5}],)"
            R"("kwargs":{},"idempotency_key":"","max_attempts":2,"timeout_ms":"1500","failover":false,"trace":false})");
}

TEST(JsonCodecTest, EveryKindOfValueRoundTrips) {
  std::vector<float> data = {1.5f, -2.0f};
  v1::SubmitRequest r;
  *r.add_args() = MapValue({{"list", ListValue({IntValue(1), StringValue("two"), NullValue(), BoolValue(true)})},
                            {"t", TensorValue({2}, std::span<const float>(data))},
                            {"b", BytesValue(std::string("\0\1\2", 3))},
                            {"d", DoubleValue(-0.25)}});
  auto json = MessageToJson(r);
  ASSERT_TRUE(json.ok());
  EXPECT_NE(json->find(R"("null_value":true)"), std::string::npos) << *json;
  EXPECT_NE(json->find(R"("bytes_value":"AAEC")"), std::string::npos) << *json;
  EXPECT_NE(json->find(R"("dtype":"DTYPE_FLOAT32")"), std::string::npos) << *json;
  v1::SubmitRequest back;
  ASSERT_TRUE(JsonToMessage(*json, &back, {}).ok());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(back, r)) << back.DebugString();
}

TEST(JsonCodecTest, RefusesWhatIsNotTheMessageAndSaysWhy) {
  struct Case {
    std::string json, message_has;
  };
  for (const auto& [json, has] : std::vector<Case>{
           {"", "the JSON document is empty: send a loom.v1.SubmitRequest object"},
           {" \n\t", "empty"},
           {R"({"function": "x",)", "Unexpected end of string"},
           {R"({"functon": "x"})", "functon: Cannot find field"},
           {R"({"function": 5})", "(function): invalid value 5 for type TYPE_STRING"},
           {R"({"max_attempts": "many"})", "(max_attempts): invalid value"},
           {R"({"args": [{"tensor_value": {"dtype": "FLOAT99"}}]})", "args[0].tensor_value.dtype"},
           {"[]", "Root element must be a message"},
           {"\"text\"", "Root element must be a message"},
           {"{\"function\": \"\xc3\x28\"}", "non UTF-8"},
       }) {
    SCOPED_TRACE(json);
    v1::SubmitRequest r;
    r.set_function("stale");
    Status s = JsonToMessage(json, &r, {});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(has), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find('\n'), std::string::npos) << "one line: " << s.message();
    EXPECT_TRUE(IsValidUtf8(s.message())) << s.message();
    EXPECT_EQ(r.function(), "") << "a failed parse leaves the message cleared";
  }
}

TEST(JsonCodecTest, LimitsAreCheckedBeforeParsing) {
  v1::SubmitBatchRequest r;
  JsonLimits limits{.max_bytes = 100, .max_depth = 4};
  Status big = JsonToMessage(std::string(101, ' '), &r, limits);
  EXPECT_EQ(big.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(big.retry_after_ms(), 0) << "a size limit, not a rate: HTTP 413";
  EXPECT_EQ(big.message(), "the JSON document takes 101 bytes, over the limit of 100");
  // Depth 4 passes, depth 5 does not; brackets inside strings do not count.
  EXPECT_TRUE(JsonToMessage(R"({"tasks": [{"args": []}]})", &r, limits).ok());
  Status deep = JsonToMessage(R"({"tasks": [{"args": [{}]}]})", &r, limits);
  EXPECT_EQ(deep.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(deep.message(), "the JSON document has nesting deeper than 4 levels of objects and arrays");
  EXPECT_TRUE(JsonToMessage(R"({"tasks": [{"function": "[[[[[[{{{{\"]]]"}]})", &r, limits).ok());
}

TEST(JsonCodecTest, NestingScanIsLinearAndStopsEarly) {
  EXPECT_EQ(JsonNestingDepth("", 10), 0);
  EXPECT_EQ(JsonNestingDepth("[[]]", 10), 2);
  EXPECT_EQ(JsonNestingDepth(R"(["[[[", {"a": "\"{{{"}])", 10), 2);
  EXPECT_EQ(JsonNestingDepth("]]]]{", 10), 1);  // unbalanced: the parser's to refuse
  EXPECT_EQ(JsonNestingDepth(R"("\\"[[)", 10), 2) << "an escaped backslash does not escape the quote";
  const std::string deep(10 * 1000 * 1000, '[');
  EXPECT_EQ(JsonNestingDepth(deep, 64), 65);
  v1::SubmitRequest r;
  EXPECT_EQ(JsonToMessage(std::string(10000, '{') + std::string(10000, '}'), &r, {}).message(),
            "the JSON document has nesting deeper than 64 levels of objects and arrays");
}

TEST(JsonCodecTest, QuotesAnyBytesAsValidJson) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c\n\t\r\x01\x7f"), R"("a\"b\\c\n\t\r\u0001\u007f")");
  EXPECT_EQ(JsonQuote("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  EXPECT_EQ(JsonQuote("\xff\xc3"), R"("\ufffd\ufffd")");
  EXPECT_EQ(JsonQuote("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")") << "a surrogate is not UTF-8";
  EXPECT_EQ(JsonQuote("\xc0\xaf"), R"("\ufffd\ufffd")") << "nor an overlong form";
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // cut short
}

// What the fuzz target will do, in a seeded miniature: no input may crash, hang or escape the
// two codes.
TEST(JsonCodecTest, SurvivesMutatedAndRandomInput) {
  const std::vector<std::string> seeds = {
      R"({"tasks": [{"function": "add", "endpoint": "ep", "args": [{"int_value": "1"}, {"map_value": {"entries":
         {"k": {"list_value": {"items": [{"bytes_value": "AAEC"}, {"tensor_value": {"dtype": "DTYPE_INT8",
         "shape": ["2"], "data": "AQI="}}]}}}}}], "kwargs": {"x": {"null_value": true}}}]})",
      R"({"tasks": [{"idempotency_key": "\u00e9\ud83d\ude00", "timeout_ms": 1e3, "failover": true}]})",
  };
  const std::string alphabet = "{}[]\":,\\ 0123456789.eE+-truefalsn\xff\xc3\x80uU";
  std::mt19937 rng(20240611);
  int ok = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string in = seeds[i % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && !in.empty(); ++e) {
      const size_t at = rng() % in.size();
      switch (rng() % 3) {
        case 0:
          in[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          in.erase(at, 1 + rng() % 4);
          break;
        default:
          in.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
      }
    }
    if (i % 10 == 0) {
      in.resize(rng() % 64);
      for (auto& c : in) c = static_cast<char>(rng());
    }
    v1::SubmitBatchRequest r;
    Status s = JsonToMessage(in, &r, {.max_bytes = 4096, .max_depth = 16});
    ASSERT_TRUE(s.ok() || s.code() == StatusCode::kInvalidArgument) << s.ToString() << " for " << in;
    if (s.ok()) {
      ++ok;
      EXPECT_TRUE(MessageToJson(r).ok());
    }
  }
  EXPECT_GT(ok, 0) << "some mutations must still parse";
}

}  // namespace
}  // namespace loom::service
