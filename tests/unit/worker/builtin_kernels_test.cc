// Tests for worker/builtin_kernels.h, each kernel run the way the worker runs it: through
// KernelRegistry::Run with a TaskSpec, so argument checking is part of what is tested.
// crash@1 is only checked for its registration: running it would kill this test process (the
// process-level tests in worker_process_test.cc run it in a real loom-worker).
#include "worker/builtin_kernels.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/kernel_api.h"
#include "common/value.h"

namespace loom::worker {
namespace {

template <typename T>
std::vector<T> Elements(const Value& v) {
  const auto& data = v.tensor_value().data();
  std::vector<T> out(data.size() / sizeof(T));
  std::memcpy(out.data(), data.data(), out.size() * sizeof(T));
  return out;
}

std::vector<int64_t> Shape(const Value& v) {
  return {v.tensor_value().shape().begin(), v.tensor_value().shape().end()};
}

class BuiltinKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(RegisterBuiltinKernels(&registry_).ok()); }

  Result<Value> Run(const std::string& kernel, std::vector<Value> args,
                    std::vector<std::pair<std::string, Value>> kwargs = {}) {
    v1::TaskSpec spec;
    spec.set_task_id("t-1");
    spec.set_kernel(kernel);
    for (auto& a : args) *spec.add_args() = std::move(a);
    for (auto& [k, v] : kwargs) (*spec.mutable_kwargs())[k] = std::move(v);
    return registry_.Run(spec);
  }

  // The error message of a run that must fail.
  std::string ErrorOf(const std::string& kernel, std::vector<Value> args) {
    auto r = Run(kernel, std::move(args));
    EXPECT_FALSE(r.ok()) << kernel << " returned " << DebugString(*r);
    return r.ok() ? "" : r.status().message();
  }

  KernelRegistry registry_;
};

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "in: " << (haystack)

TEST_F(BuiltinKernelsTest, RegistersAllKernelsAtVersionOneWithDescribedInputs) {
  std::vector<std::string> refs;
  for (const auto& info : registry_.List()) {
    refs.push_back(info.name() + "@" + info.version());
    EXPECT_FALSE(info.description().empty()) << info.name();
    for (const auto& p : info.inputs()) EXPECT_FALSE(p.description().empty()) << info.name() << "." << p.name();
  }
  EXPECT_EQ(refs, (std::vector<std::string>{"add@1", "crash@1", "echo@1", "fail@1", "sleep@1"}));

  const auto& add = registry_.Find("add@1")->info;
  ASSERT_EQ(add.inputs_size(), 2);
  EXPECT_EQ(add.inputs(0).name(), "a");
  EXPECT_EQ(add.inputs(0).type(), v1::VALUE_TYPE_NUMBER_OR_TENSOR);
  EXPECT_EQ(add.inputs(1).type(), v1::VALUE_TYPE_NUMBER_OR_TENSOR);
  EXPECT_EQ(registry_.Find("echo@1")->info.inputs(0).type(), v1::VALUE_TYPE_ANY);
  EXPECT_EQ(registry_.Find("sleep@1")->info.inputs(0).type(), v1::VALUE_TYPE_NUMBER);
  EXPECT_EQ(registry_.Find("sleep@1")->info.output(), v1::VALUE_TYPE_DOUBLE);
  const auto& fail = registry_.Find("fail@1")->info;
  ASSERT_EQ(fail.inputs_size(), 1);
  EXPECT_EQ(fail.inputs(0).type(), v1::VALUE_TYPE_STRING);
  EXPECT_TRUE(fail.inputs(0).optional());
}

TEST_F(BuiltinKernelsTest, CrashIsRegisteredWithNoInputs) {
  const KernelDef* crash = registry_.Find("crash@1");
  ASSERT_NE(crash, nullptr);
  EXPECT_EQ(crash->info.inputs_size(), 0);
  EXPECT_TRUE(crash->fn != nullptr);
  EXPECT_CONTAINS(ErrorOf("crash@1", {IntValue(1)}), "takes at most 0 argument(s), 1 given");
}

TEST_F(BuiltinKernelsTest, EchoReturnsItsArgumentUnchanged) {
  const std::vector<float> f = {1.5f, 2.5f};
  const Value in = ListValue({IntValue(1), StringValue(std::string("a\0b", 3)), NullValue(),
                              MapValue({{"t", TensorValue({2}, std::span<const float>(f))}})});
  auto out = Run("echo@1", {in});
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*out, in)) << DebugString(*out);
  auto by_name = Run("echo", {}, {{"value", StringValue("named")}});
  ASSERT_TRUE(by_name.ok()) << by_name.status().message();
  EXPECT_EQ(by_name->string_value(), "named");
}

TEST_F(BuiltinKernelsTest, AddsIntsToAnInt) {
  auto r = Run("add@1", {IntValue(2), IntValue(40)});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_TRUE(r->has_int_value());
  EXPECT_EQ(r->int_value(), 42);
  r = Run("add@1", {IntValue(std::numeric_limits<int64_t>::min()), IntValue(std::numeric_limits<int64_t>::max())});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->int_value(), -1);
}

TEST_F(BuiltinKernelsTest, AnyDoubleMakesADouble) {
  auto r = Run("add@1", {IntValue(1), DoubleValue(0.5)});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_TRUE(r->has_double_value());
  EXPECT_EQ(r->double_value(), 1.5);
  r = Run("add@1", {DoubleValue(0.25), DoubleValue(0.5)});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->double_value(), 0.75);
  r = Run("add@1", {DoubleValue(2.0), IntValue(1)});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_double_value());
  EXPECT_EQ(r->double_value(), 3.0);
}

TEST_F(BuiltinKernelsTest, IntOverflowIsAnError) {
  EXPECT_CONTAINS(ErrorOf("add@1", {IntValue(std::numeric_limits<int64_t>::max()), IntValue(1)}), "overflows int64");
  EXPECT_CONTAINS(ErrorOf("add@1", {IntValue(std::numeric_limits<int64_t>::min()), IntValue(-1)}), "overflows int64");
}

TEST_F(BuiltinKernelsTest, AddsFloat32TensorsElementwise) {
  auto r = Run("add@1", {TensorValueOf<float>(v1::DTYPE_FLOAT32, {2, 2}, {1, 2, 3, 4}),
                         TensorValueOf<float>(v1::DTYPE_FLOAT32, {2, 2}, {0.5f, -2, 10, 0.25f})});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tensor_value().dtype(), v1::DTYPE_FLOAT32);
  EXPECT_EQ(Shape(*r), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(Elements<float>(*r), (std::vector<float>{1.5f, 0, 13, 4.25f}));
}

TEST_F(BuiltinKernelsTest, AddsInt32TensorsElementwise) {
  auto r = Run("add@1", {TensorValueOf<int32_t>(v1::DTYPE_INT32, {3}, {1, -2, 2000000000}),
                         TensorValueOf<int32_t>(v1::DTYPE_INT32, {3}, {10, 2, 147483647})});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tensor_value().dtype(), v1::DTYPE_INT32);
  EXPECT_EQ(Elements<int32_t>(*r), (std::vector<int32_t>{11, 0, 2147483647}));
}

TEST_F(BuiltinKernelsTest, IntTensorOverflowIsAnError) {
  EXPECT_CONTAINS(ErrorOf("add@1", {TensorValueOf<int8_t>(v1::DTYPE_INT8, {2}, {1, 100}),
                                    TensorValueOf<int8_t>(v1::DTYPE_INT8, {2}, {1, 100})}),
                  "100 + 100 overflows the int8 elements");
  EXPECT_CONTAINS(ErrorOf("add@1", {TensorValueOf<uint8_t>(v1::DTYPE_UINT8, {1}, {250}), IntValue(10)}),
                  "overflows the uint8 elements");
}

// Every numeric dtype: tensor + tensor and tensor + scalar keep the dtype and add exactly.
class AddAllDtypesTest : public BuiltinKernelsTest, public ::testing::WithParamInterface<v1::DType> {};

template <typename T>
void ExpectAddsInDtype(v1::DType dtype, const std::function<Result<Value>(std::vector<Value>)>& run) {
  const Value x = TensorValueOf<T>(dtype, {1, 3}, {1, 2, 3});
  auto r = run({x, TensorValueOf<T>(dtype, {1, 3}, {10, 20, 30})});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tensor_value().dtype(), dtype);
  EXPECT_EQ(Shape(*r), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(Elements<T>(*r), (std::vector<T>{11, 22, 33}));
  r = run({x, IntValue(4)});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tensor_value().dtype(), dtype);
  EXPECT_EQ(Elements<T>(*r), (std::vector<T>{5, 6, 7}));
  r = run({DoubleValue(2.0), x});  // scalar first; 2.0 is exact in every dtype
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tensor_value().dtype(), dtype);
  EXPECT_EQ(Elements<T>(*r), (std::vector<T>{3, 4, 5}));
}

TEST_P(AddAllDtypesTest, KeepsDtypeAndAddsExactly) {
  auto run = [this](std::vector<Value> args) { return Run("add@1", std::move(args)); };
  switch (GetParam()) {
    case v1::DTYPE_FLOAT32: ExpectAddsInDtype<float>(GetParam(), run); break;
    case v1::DTYPE_FLOAT64: ExpectAddsInDtype<double>(GetParam(), run); break;
    case v1::DTYPE_INT8: ExpectAddsInDtype<int8_t>(GetParam(), run); break;
    case v1::DTYPE_INT16: ExpectAddsInDtype<int16_t>(GetParam(), run); break;
    case v1::DTYPE_INT32: ExpectAddsInDtype<int32_t>(GetParam(), run); break;
    case v1::DTYPE_INT64: ExpectAddsInDtype<int64_t>(GetParam(), run); break;
    case v1::DTYPE_UINT8: ExpectAddsInDtype<uint8_t>(GetParam(), run); break;
    case v1::DTYPE_UINT16: ExpectAddsInDtype<uint16_t>(GetParam(), run); break;
    case v1::DTYPE_UINT32: ExpectAddsInDtype<uint32_t>(GetParam(), run); break;
    case v1::DTYPE_UINT64: ExpectAddsInDtype<uint64_t>(GetParam(), run); break;
    default: FAIL() << "not a numeric dtype";
  }
}

INSTANTIATE_TEST_SUITE_P(NumericDtypes, AddAllDtypesTest,
                         ::testing::Values(v1::DTYPE_FLOAT32, v1::DTYPE_FLOAT64, v1::DTYPE_INT8, v1::DTYPE_INT16,
                                           v1::DTYPE_INT32, v1::DTYPE_INT64, v1::DTYPE_UINT8, v1::DTYPE_UINT16,
                                           v1::DTYPE_UINT32, v1::DTYPE_UINT64),
                         [](const auto& test_info) { return std::string(DTypeName(test_info.param)); });

TEST_F(BuiltinKernelsTest, ScalarBroadcastsOverAFloat32Tensor) {
  auto r = Run("add@1", {TensorValueOf<float>(v1::DTYPE_FLOAT32, {2, 1}, {1, 2}), DoubleValue(0.5)});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->tensor_value().dtype(), v1::DTYPE_FLOAT32);
  EXPECT_EQ(Shape(*r), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(Elements<float>(*r), (std::vector<float>{1.5f, 2.5f}));
}

TEST_F(BuiltinKernelsTest, ScalarThatAnIntTensorCannotHoldIsAnError) {
  const Value t = TensorValueOf<int32_t>(v1::DTYPE_INT32, {2}, {1, 2});
  EXPECT_CONTAINS(ErrorOf("add@1", {t, DoubleValue(0.5)}), "cannot add 0.5 to the int32[2] tensor");
  EXPECT_CONTAINS(ErrorOf("add@1", {TensorValueOf<uint8_t>(v1::DTYPE_UINT8, {1}, {1}), IntValue(-1)}),
                  "uint8 cannot hold -1 exactly");
  EXPECT_CONTAINS(ErrorOf("add@1", {TensorValueOf<int16_t>(v1::DTYPE_INT16, {1}, {1}), IntValue(40000)}),
                  "int16 cannot hold 40000 exactly");
}

TEST_F(BuiltinKernelsTest, ShapeMismatchNamesBothShapes) {
  const std::string e = ErrorOf("add@1", {TensorValueOf<float>(v1::DTYPE_FLOAT32, {2, 2}, {1, 2, 3, 4}),
                                          TensorValueOf<float>(v1::DTYPE_FLOAT32, {4}, {1, 2, 3, 4})});
  EXPECT_CONTAINS(e, "same dtype and shape");
  EXPECT_CONTAINS(e, "float32[2x2] and float32[4]");
}

TEST_F(BuiltinKernelsTest, DtypeMismatchNamesBothDtypes) {
  const std::string e = ErrorOf("add@1", {TensorValueOf<float>(v1::DTYPE_FLOAT32, {2}, {1, 2}),
                                          TensorValueOf<int32_t>(v1::DTYPE_INT32, {2}, {1, 2})});
  EXPECT_CONTAINS(e, "float32[2] and int32[2]");
}

TEST_F(BuiltinKernelsTest, BoolTensorsAreRejected) {
  EXPECT_CONTAINS(ErrorOf("add@1", {TensorValueOf<uint8_t>(v1::DTYPE_BOOL, {1}, {1}), IntValue(1)}),
                  "bool tensors are not supported");
}

TEST_F(BuiltinKernelsTest, WrongArgumentTypeNamesParameterAndTypes) {
  EXPECT_CONTAINS(ErrorOf("add@1", {StringValue("x"), IntValue(1)}),
                  "kernel 'add@1': parameter 'a' must be number or tensor, got string");
  EXPECT_CONTAINS(ErrorOf("sleep@1", {StringValue("1")}), "parameter 'seconds' must be number, got string");
  EXPECT_CONTAINS(ErrorOf("add@1", {IntValue(1)}), "missing required parameter 'b'");
}

TEST_F(BuiltinKernelsTest, SleepSleepsAtLeastTheRequestedTime) {
  auto r = Run("sleep@1", {DoubleValue(0.01)});
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_TRUE(r->has_double_value());
  EXPECT_GE(r->double_value(), 0.01);
  EXPECT_LT(r->double_value(), 5.0);
  r = Run("sleep@1", {IntValue(0)});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GE(r->double_value(), 0.0);
}

TEST_F(BuiltinKernelsTest, SleepRejectsNegativeTooLongAndNan) {
  EXPECT_CONTAINS(ErrorOf("sleep@1", {DoubleValue(-0.5)}), "between 0 and 86400, got -0.5");
  EXPECT_CONTAINS(ErrorOf("sleep@1", {IntValue(86401)}), "between 0 and 86400");
  EXPECT_CONTAINS(ErrorOf("sleep@1", {DoubleValue(std::numeric_limits<double>::quiet_NaN())}), "between 0 and 86400");
}

TEST_F(BuiltinKernelsTest, FailReturnsExactlyTheGivenMessage) {
  EXPECT_EQ(ErrorOf("fail@1", {StringValue("detector offline: retry after 10:00")}),
            "detector offline: retry after 10:00");
  EXPECT_EQ(ErrorOf("fail@1", {}), kDefaultFailMessage);
  EXPECT_EQ(ErrorOf("fail@1", {}), "kernel 'fail' failed as asked");
}

TEST_F(BuiltinKernelsTest, UnknownKernelListsTheLoadedOnes) {
  const std::string e = ErrorOf("nope@1", {});
  EXPECT_CONTAINS(e, "kernel 'nope@1' is not loaded");
  EXPECT_CONTAINS(e, "echo@1");
}

TEST(BuiltinKernelsRegistrationTest, RegisteringTwiceFails) {
  KernelRegistry registry;
  ASSERT_TRUE(RegisterBuiltinKernels(&registry).ok());
  Status s = RegisterBuiltinKernels(&registry);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace loom::worker
