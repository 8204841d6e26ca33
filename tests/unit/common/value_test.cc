// Tests for common/value.h: wire round trips of every kind of Value, tensor validation, argument
// checking against a kernel's inputs, command-line literals and the debug form.
#include "common/value.h"

#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/kernel_api.h"

namespace loom {
namespace {

using google::protobuf::util::DefaultFieldComparator;
using google::protobuf::util::MessageDifferencer;

// Serializes and parses back, as every hop between processes does.
Value RoundTrip(const Value& v) {
  std::string wire;
  EXPECT_TRUE(v.SerializeToString(&wire));
  Value back;
  EXPECT_TRUE(back.ParseFromString(wire));
  return back;
}

// Field-by-field equality, with NaN equal to NaN (a NaN must survive the trip as a NaN).
::testing::AssertionResult SameValue(const Value& a, const Value& b) {
  DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  MessageDifferencer differ;
  differ.set_field_comparator(&comparator);
  std::string diff;
  differ.ReportDifferencesToString(&diff);
  if (differ.Compare(a, b)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << diff;
}

void ExpectRoundTrips(const Value& v) {
  Value back = RoundTrip(v);
  EXPECT_TRUE(SameValue(v, back)) << DebugString(v);
  EXPECT_EQ(back.kind_case(), v.kind_case());
}

// ---------------------------------------------------------------- round trips

TEST(ValueRoundTripTest, NullBothAsExplicitNullAndAsUnsetKind) {
  ExpectRoundTrips(NullValue());
  EXPECT_TRUE(IsNull(RoundTrip(NullValue())));
  Value unset;
  ExpectRoundTrips(unset);
  EXPECT_TRUE(IsNull(RoundTrip(unset)));
}

TEST(ValueRoundTripTest, Bools) {
  ExpectRoundTrips(BoolValue(true));
  // false is proto3's default, but a oneof member keeps its presence.
  Value f = RoundTrip(BoolValue(false));
  ASSERT_TRUE(f.has_bool_value());
  EXPECT_FALSE(f.bool_value());
}

TEST(ValueRoundTripTest, IntExtremesAndZero) {
  for (int64_t i : {std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0}, int64_t{1},
                    std::numeric_limits<int64_t>::max()}) {
    Value back = RoundTrip(IntValue(i));
    ASSERT_TRUE(back.has_int_value()) << i;
    EXPECT_EQ(back.int_value(), i);
  }
}

TEST(ValueRoundTripTest, DoublesIncludingNanInfinitiesAndNegativeZero) {
  const double kCases[] = {0.0,
                           -0.0,
                           1.5,
                           -1e308,
                           std::numeric_limits<double>::denorm_min(),
                           std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN()};
  for (double d : kCases) {
    Value back = RoundTrip(DoubleValue(d));
    ASSERT_TRUE(back.has_double_value()) << d;
    // Bit-exact: catches a lost sign of zero or a NaN turned into something else.
    uint64_t want = 0, got = 0;
    std::memcpy(&want, &d, sizeof(d));
    const double b = back.double_value();
    std::memcpy(&got, &b, sizeof(b));
    EXPECT_EQ(got, want) << d;
    ExpectRoundTrips(DoubleValue(d));
  }
}

TEST(ValueRoundTripTest, StringsWithNulsAndNonAscii) {
  const std::string with_nuls("a\0b\0\0c", 6);
  Value back = RoundTrip(StringValue(with_nuls));
  EXPECT_EQ(back.string_value(), with_nuls);
  EXPECT_EQ(back.string_value().size(), 6u);
  ExpectRoundTrips(StringValue(""));
  ExpectRoundTrips(StringValue("\xcf\x80 = 3.14159"));
}

TEST(ValueRoundTripTest, BytesWithEveryByteValue) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  Value back = RoundTrip(BytesValue(all));
  ASSERT_TRUE(back.has_bytes_value());
  EXPECT_EQ(back.bytes_value(), all);
}

TEST(ValueRoundTripTest, TensorsOfSeveralDtypesAndShapes) {
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -1e30f};
  const std::vector<double> f64 = {std::numeric_limits<double>::quiet_NaN(), -0.0, 1e300, 2.5};
  const std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), -1, 0, std::numeric_limits<int64_t>::max()};
  const std::vector<Value> cases = {
      TensorValue({2, 3}, std::span<const float>(f32)),
      TensorValue({4}, std::span<const double>(f64)),
      TensorValue({2, 2}, std::span<const int64_t>(i64)),
      TensorValueOf<int8_t>(v1::DTYPE_INT8, {3}, {-128, 0, 127}),
      TensorValueOf<uint16_t>(v1::DTYPE_UINT16, {1, 3, 1}, {0, 1, 65535}),
      TensorValueOf<uint8_t>(v1::DTYPE_BOOL, {2}, {0, 1}),
      TensorValueOf<float>(v1::DTYPE_FLOAT32, {}, {42.0f}),     // a scalar tensor
      TensorValueOf<int32_t>(v1::DTYPE_INT32, {0, 5}, {}),      // empty
  };
  for (const auto& v : cases) {
    ASSERT_TRUE(ValidateTensor(v.tensor_value()).ok()) << DebugString(v);
    ExpectRoundTrips(v);
    const Value back = RoundTrip(v);
    EXPECT_EQ(back.tensor_value().data(), v.tensor_value().data());
    EXPECT_EQ(back.tensor_value().shape_size(), v.tensor_value().shape_size());
  }
  const Tensor& t = cases[0].tensor_value();
  EXPECT_EQ(ElementCount(t), 6);
  EXPECT_EQ(TensorElementAsDouble(RoundTrip(cases[0]).tensor_value(), 2), 3.25);
  EXPECT_EQ(TensorElementAsInt(RoundTrip(cases[2]).tensor_value(), 0), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(TensorElementAsInt(RoundTrip(cases[4]).tensor_value(), 2), 65535);
}

TEST(ValueRoundTripTest, NestedListsAndMaps) {
  const std::vector<float> f32 = {1, 2};
  Value nested = ListValue({
      IntValue(1),
      NullValue(),
      MapValue({{"list", ListValue({StringValue("x"), DoubleValue(2.5), ListValue({})})},
                {"tensor", TensorValue({2}, std::span<const float>(f32))},
                {"empty", MapValue({})},
                {"", BoolValue(false)}}),
      ListValue({ListValue({ListValue({IntValue(-7)})})}),
  });
  ExpectRoundTrips(nested);
  const Value back = RoundTrip(nested);
  ASSERT_EQ(back.list_value().items_size(), 4);
  const auto& m = back.list_value().items(2).map_value().entries();
  EXPECT_EQ(m.at("list").list_value().items(1).double_value(), 2.5);
  EXPECT_EQ(back.list_value().items(3).list_value().items(0).list_value().items(0).list_value().items(0).int_value(),
            -7);
}

// ---------------------------------------------------------------- ValidateTensor

TEST(ValidateTensorTest, AcceptsMatchingShapeDtypeAndBytes) {
  EXPECT_TRUE(ValidateTensor(TensorValueOf<int16_t>(v1::DTYPE_INT16, {2, 2}, {1, 2, 3, 4}).tensor_value()).ok());
}

TEST(ValidateTensorTest, RejectsMissingDtype) {
  Value v = TensorValueOf<float>(v1::DTYPE_UNSPECIFIED, {1}, {1.0f});
  Status s = ValidateTensor(v.tensor_value());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no dtype"), std::string::npos) << s.message();
}

TEST(ValidateTensorTest, RejectsNegativeDimension) {
  Value v = TensorValueOf<float>(v1::DTYPE_FLOAT32, {-1}, {});
  Status s = ValidateTensor(v.tensor_value());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("negative"), std::string::npos) << s.message();
}

TEST(ValidateTensorTest, RejectsByteCountThatDisagreesWithShapeAndDtype) {
  Value v = TensorValueOf<float>(v1::DTYPE_FLOAT32, {2, 3}, {1, 2, 3, 4, 5});  // 5 floats, 6 needed
  Status s = ValidateTensor(v.tensor_value());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("holds 20 bytes"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("float32 need 24"), std::string::npos) << s.message();
}

TEST(ValidateTensorTest, RejectsShapeWhoseElementCountOverflows) {
  Value v = TensorValueOf<float>(v1::DTYPE_FLOAT32, {int64_t{1} << 40, int64_t{1} << 40}, {});
  Status s = ValidateTensor(v.tensor_value());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("overflows"), std::string::npos) << s.message();
}

// 2^62 elements of 8 bytes is 2^65 bytes, which would wrap to 0 in a uint64 byte count and let
// an empty data field pass.
TEST(ValidateTensorTest, RejectsShapeWhoseByteCountOverflows) {
  Value v = TensorValueOf<double>(v1::DTYPE_FLOAT64, {int64_t{1} << 62}, {});
  EXPECT_FALSE(ValidateTensor(v.tensor_value()).ok());
}

// ---------------------------------------------------------------- ValidateArgs

class ValidateArgsTest : public ::testing::Test {
 protected:
  ValidateArgsTest()
      : kernel_(MakeKernelInfo("k", "2", "test kernel",
                               {Param("x", v1::VALUE_TYPE_INT, "required int"),
                                Param("y", v1::VALUE_TYPE_NUMBER, "optional number", /*optional=*/true),
                                Param("z", v1::VALUE_TYPE_TENSOR, "optional tensor", /*optional=*/true)},
                               v1::VALUE_TYPE_ANY)) {}

  Status Check(std::vector<Value> args, std::vector<std::pair<std::string, Value>> kwargs = {}) {
    google::protobuf::RepeatedPtrField<Value> a;
    for (auto& v : args) *a.Add() = std::move(v);
    google::protobuf::Map<std::string, Value> kw;
    for (auto& [k, v] : kwargs) kw[k] = std::move(v);
    return ValidateArgs(kernel_, a, kw);
  }

  v1::KernelInfo kernel_;
};

#define EXPECT_INVALID_WITH(status, text)                                      \
  do {                                                                         \
    const ::loom::Status _s = (status);                                        \
    EXPECT_EQ(_s.code(), ::loom::StatusCode::kInvalidArgument) << _s.message(); \
    EXPECT_NE(_s.message().find(text), std::string::npos) << _s.message();     \
  } while (0)

TEST_F(ValidateArgsTest, AcceptsRequiredOnlyWithOptionalsOmitted) { EXPECT_TRUE(Check({IntValue(1)}).ok()); }

TEST_F(ValidateArgsTest, AcceptsEveryParameterByNameOrMixed) {
  EXPECT_TRUE(Check({}, {{"x", IntValue(1)}, {"y", DoubleValue(2.5)}}).ok());
  EXPECT_TRUE(Check({IntValue(1), IntValue(2)}, {{"z", TensorValueOf<float>(v1::DTYPE_FLOAT32, {1}, {1.0f})}}).ok());
}

TEST_F(ValidateArgsTest, NumberAcceptsIntAndDouble) {
  EXPECT_TRUE(Check({IntValue(1), IntValue(2)}).ok());
  EXPECT_TRUE(Check({IntValue(1), DoubleValue(2)}).ok());
}

TEST_F(ValidateArgsTest, RejectsTooManyPositionalArguments) {
  EXPECT_INVALID_WITH(Check({IntValue(1), IntValue(2), NullValue(), IntValue(4)}),
                      "kernel 'k@2' takes at most 3 argument(s), 4 given");
}

TEST_F(ValidateArgsTest, RejectsUnknownKeyword) {
  EXPECT_INVALID_WITH(Check({IntValue(1)}, {{"w", IntValue(1)}}), "kernel 'k@2' has no parameter named 'w'");
}

TEST_F(ValidateArgsTest, RejectsMissingRequiredParameter) {
  EXPECT_INVALID_WITH(Check({}, {{"y", IntValue(1)}}), "missing required parameter 'x'");
}

TEST_F(ValidateArgsTest, WrongTypeNamesParameterExpectedAndGivenType) {
  EXPECT_INVALID_WITH(Check({StringValue("1")}), "kernel 'k@2': parameter 'x' must be int, got string");
  EXPECT_INVALID_WITH(Check({IntValue(1), StringValue("2")}), "parameter 'y' must be number, got string");
  EXPECT_INVALID_WITH(Check({IntValue(1)}, {{"z", IntValue(3)}}), "parameter 'z' must be tensor, got int");
  EXPECT_INVALID_WITH(Check({DoubleValue(1.0)}), "parameter 'x' must be int, got double");
}

TEST_F(ValidateArgsTest, RejectsParameterGivenBothByPositionAndByName) {
  EXPECT_INVALID_WITH(Check({IntValue(1)}, {{"x", IntValue(2)}}), "parameter 'x' given both by position and by name");
}

TEST_F(ValidateArgsTest, RejectsMalformedTensorNamingTheParameter) {
  EXPECT_INVALID_WITH(Check({IntValue(1), IntValue(2), TensorValueOf<float>(v1::DTYPE_FLOAT32, {3}, {1.0f})}),
                      "parameter 'z': tensor data holds 4 bytes");
}

// ---------------------------------------------------------------- ParseValueLiteral

Value Parse(const std::string& text) {
  auto r = ParseValueLiteral(text);
  EXPECT_TRUE(r.ok()) << text << ": " << r.status().message();
  return r.ok() ? *r : Value();
}

TEST(ParseValueLiteralTest, Integers) {
  EXPECT_EQ(Parse("42").int_value(), 42);
  EXPECT_EQ(Parse("-7").int_value(), -7);
  EXPECT_EQ(Parse("0").int_value(), 0);
  // Exact, beyond the 2^53 a JSON double could hold.
  EXPECT_EQ(Parse("9223372036854775807").int_value(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(Parse("-9223372036854775808").int_value(), std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(Parse("42").has_int_value());
}

TEST(ParseValueLiteralTest, Doubles) {
  ASSERT_TRUE(Parse("2.5").has_double_value());
  EXPECT_EQ(Parse("2.5").double_value(), 2.5);
  ASSERT_TRUE(Parse("1e3").has_double_value());
  EXPECT_EQ(Parse("1e3").double_value(), 1000.0);
  ASSERT_TRUE(Parse("-0.125").has_double_value());
  EXPECT_EQ(Parse("-0.125").double_value(), -0.125);
  ASSERT_TRUE(Parse("3.0").has_double_value());
}

TEST(ParseValueLiteralTest, TrueFalseNull) {
  ASSERT_TRUE(Parse("true").has_bool_value());
  EXPECT_TRUE(Parse("true").bool_value());
  ASSERT_TRUE(Parse("false").has_bool_value());
  EXPECT_FALSE(Parse("false").bool_value());
  EXPECT_TRUE(IsNull(Parse("null")));
}

TEST(ParseValueLiteralTest, JsonListsAndMaps) {
  Value list = Parse(R"([1, 2.5, "a", true, null, [3]])");
  ASSERT_TRUE(list.has_list_value());
  const auto& items = list.list_value().items();
  ASSERT_EQ(items.size(), 6);
  EXPECT_EQ(items[0].int_value(), 1);
  EXPECT_EQ(items[1].double_value(), 2.5);
  EXPECT_EQ(items[2].string_value(), "a");
  EXPECT_TRUE(items[3].bool_value());
  EXPECT_TRUE(IsNull(items[4]));
  EXPECT_EQ(items[5].list_value().items(0).int_value(), 3);

  Value map = Parse(R"({"a": 1, "b": {"c": "d"}, "e": []})");
  ASSERT_TRUE(map.has_map_value());
  const auto& e = map.map_value().entries();
  EXPECT_EQ(e.at("a").int_value(), 1);
  EXPECT_EQ(e.at("b").map_value().entries().at("c").string_value(), "d");
  EXPECT_EQ(e.at("e").list_value().items_size(), 0);
}

TEST(ParseValueLiteralTest, QuotedAndBareStrings) {
  EXPECT_EQ(Parse(R"("hello world")").string_value(), "hello world");
  EXPECT_EQ(Parse(R"("42")").string_value(), "42");  // quoting keeps a number a string
  EXPECT_EQ(Parse("hello").string_value(), "hello");
  EXPECT_EQ(Parse("/data/scan 1.h5").string_value(), "/data/scan 1.h5");
  ASSERT_TRUE(Parse("").has_string_value());
  EXPECT_EQ(Parse("").string_value(), "");
}

TEST(ParseValueLiteralTest, MalformedJsonIsAnErrorNotABareString) {
  for (const std::string bad : {"[1, 2", "{\"a\": }", "\"unterminated", "{not json}"}) {
    auto r = ParseValueLiteral(bad);
    ASSERT_FALSE(r.ok()) << bad << " parsed as " << DebugString(*r);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status().message();
  }
}

// ---------------------------------------------------------------- DebugString

TEST(DebugStringTest, ScalarsAndContainers) {
  EXPECT_EQ(DebugString(NullValue()), "null");
  EXPECT_EQ(DebugString(Value()), "null");
  EXPECT_EQ(DebugString(BoolValue(true)), "true");
  EXPECT_EQ(DebugString(IntValue(-3)), "-3");
  EXPECT_EQ(DebugString(DoubleValue(2.5)), "2.5");
  EXPECT_EQ(DebugString(StringValue("text")), "\"text\"");
  EXPECT_EQ(DebugString(BytesValue("abc")), "bytes[3]");
  EXPECT_EQ(DebugString(ListValue({IntValue(1), IntValue(2)})), "[1, 2]");
  // Map keys are sorted, so the form is stable.
  EXPECT_EQ(DebugString(MapValue({{"b", IntValue(1)}, {"a", ListValue({})}})), "{a: [], b: 1}");
}

TEST(DebugStringTest, TensorsShowDtypeShapeAndSmallContents) {
  const std::vector<float> six = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(DebugString(TensorValue({2, 3}, std::span<const float>(six))), "tensor<float32>[2x3]{1, 2, 3, 4, 5, 6}");
  const std::vector<double> nine(9, 0.5);
  EXPECT_EQ(DebugString(TensorValue({9}, std::span<const double>(nine))), "tensor<float64>[9]");
  EXPECT_EQ(DebugString(TensorValueOf<int32_t>(v1::DTYPE_INT32, {2}, {1})), "tensor<int32>[2]");  // malformed
}

TEST(ValueTypesTest, MatchesAndNames) {
  EXPECT_TRUE(Matches(IntValue(1), v1::VALUE_TYPE_NUMBER_OR_TENSOR));
  EXPECT_TRUE(Matches(TensorValueOf<float>(v1::DTYPE_FLOAT32, {1}, {1}), v1::VALUE_TYPE_NUMBER_OR_TENSOR));
  EXPECT_FALSE(Matches(StringValue("1"), v1::VALUE_TYPE_NUMBER_OR_TENSOR));
  EXPECT_TRUE(Matches(Value(), v1::VALUE_TYPE_NULL));
  EXPECT_TRUE(Matches(StringValue("x"), v1::VALUE_TYPE_ANY));
  EXPECT_STREQ(ValueTypeName(v1::VALUE_TYPE_NUMBER_OR_TENSOR), "number or tensor");
  EXPECT_STREQ(KindName(MapValue({})), "map");
  EXPECT_STREQ(DTypeName(v1::DTYPE_UINT64), "uint64");
  EXPECT_EQ(DTypeSize(v1::DTYPE_UINT64), 8u);
  EXPECT_EQ(DTypeSize(v1::DTYPE_UNSPECIFIED), 0u);
}

}  // namespace
}  // namespace loom
