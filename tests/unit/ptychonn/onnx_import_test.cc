// ONNX weight import (kernels/nn/onnx_import.h) and the PtychoNN name mapping
// (kernels/science/ptychonn_weights.h), on tests/data/ptychonn/ptychonn_edge.onnx (the trained
// edge model exported by torch.onnx.export) and on hand-built bad models.
#include "kernels/nn/onnx_import.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include "kernels/nn/safetensors.h"
#include "kernels/science/ptychonn.h"
#include "kernels/science/ptychonn_weights.h"

namespace loom::science {
namespace {

using ::testing::HasSubstr;

const std::string kData = LOOM_PTYCHONN_DATA_DIR;
const std::string kModels = LOOM_PTYCHONN_MODEL_DIR;

TEST(OnnxImportTest, ExportedEdgeModelLoadsTheSameWeightsAndOutputsAsSafetensors) {
  auto onnx = nn::ReadOnnx(kData + "/ptychonn_edge.onnx");
  ASSERT_TRUE(onnx.ok()) << onnx.status().ToString();
  EXPECT_THAT(onnx->producer, HasSubstr("pytorch"));
  EXPECT_EQ(std::count_if(onnx->nodes.begin(), onnx->nodes.end(), [](const auto& n) { return n.op_type == "Conv"; }),
            17);
  auto from_onnx = LoadPtychoWeights(PtychoModel::kEdge, kData + "/ptychonn_edge.onnx");
  ASSERT_TRUE(from_onnx.ok()) << from_onnx.status().ToString();
  auto from_st = LoadPtychoWeights(PtychoModel::kEdge, kModels + "/ptychonn_edge.safetensors");
  ASSERT_TRUE(from_st.ok()) << from_st.status().ToString();
  for (const auto& [name, t] : *from_st) {
    ASSERT_TRUE(from_onnx->contains(name)) << name;
    EXPECT_EQ(from_onnx->at(name).shape, t.shape) << name;
    EXPECT_EQ(from_onnx->at(name).data, t.data) << name;
  }

  auto golden = nn::ReadSafetensors(kData + "/golden_ptychonn_edge.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status().ToString();
  auto net = PtychoNet::Create(PtychoModel::kEdge, std::move(*from_onnx));
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  const nn::Tensor& input = golden->tensors.at("input");
  auto out = (*net)->Forward(input.data, input.shape[0]);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const auto& want = golden->tensors.at("trained_phase").data;
  float err = 0;
  for (size_t i = 0; i < want.size(); ++i) err = std::max(err, std::abs(out->phase[i] - want[i]));
  EXPECT_LE(err, 1e-5f);
}

// A model with one Conv node whose weight is `weight` (and no bias).
std::string OneConvModel(const onnx::TensorProto& weight) {
  onnx::ModelProto m;
  m.set_producer_name("test");
  auto* g = m.mutable_graph();
  *g->add_initializer() = weight;
  auto* node = g->add_node();
  node->set_op_type("Conv");
  node->add_input("x");
  node->add_input(weight.name());
  return m.SerializeAsString();
}

onnx::TensorProto FloatTensor(const std::string& name, std::vector<int64_t> dims, std::vector<float> values) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t.add_dims(d);
  for (float v : values) t.add_float_data(v);
  return t;
}

TEST(OnnxImportTest, ReadsFloatDataAndRawData) {
  auto m = nn::ParseOnnx(OneConvModel(FloatTensor("w", {2, 1}, {1.5f, -2.f})));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->initializers.at("w").shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(m->initializers.at("w").data, (std::vector<float>{1.5f, -2.f}));
  ASSERT_EQ(m->nodes.size(), 1u);
  EXPECT_EQ(m->nodes[0].inputs, (std::vector<std::string>{"x", "w"}));

  onnx::TensorProto raw = FloatTensor("r", {3}, {});
  const float values[] = {1.f, 2.f, 3.f};
  raw.set_raw_data(std::string(reinterpret_cast<const char*>(values), sizeof(values)));
  auto r = nn::ParseOnnx(OneConvModel(raw));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->initializers.at("r").data, (std::vector<float>{1.f, 2.f, 3.f}));
}

TEST(OnnxImportTest, BadModelsGetClearErrors) {
  auto garbage = nn::ParseOnnx("this is not a protobuf \xff\xff\xff");
  ASSERT_FALSE(garbage.ok());
  EXPECT_THAT(garbage.status().message(), HasSubstr("not an ONNX model"));
  EXPECT_FALSE(nn::ParseOnnx("").ok());

  onnx::TensorProto dbl = FloatTensor("w64", {1}, {});
  dbl.set_data_type(onnx::TensorProto::DOUBLE);
  dbl.add_double_data(1.0);
  auto d = nn::ParseOnnx(OneConvModel(dbl));
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("'w64' is DOUBLE; only FLOAT (float32)"));

  auto short_data = nn::ParseOnnx(OneConvModel(FloatTensor("s", {2, 2}, {1.f})));
  ASSERT_FALSE(short_data.ok());
  EXPECT_THAT(short_data.status().message(), HasSubstr("'s' holds 1 values for 4 elements"));

  onnx::TensorProto ext = FloatTensor("e", {1}, {});
  ext.set_data_location(onnx::TensorProto::EXTERNAL);
  auto e = nn::ParseOnnx(OneConvModel(ext));
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(e.status().message(), HasSubstr("external file"));

  auto neg = nn::ParseOnnx(OneConvModel(FloatTensor("n", {-1}, {})));
  ASSERT_FALSE(neg.ok());
  EXPECT_THAT(neg.status().message(), HasSubstr("invalid dimension -1"));

  auto big = nn::ParseOnnx(OneConvModel(FloatTensor("b", {4}, {1, 2, 3, 4})), 8);
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(big.status().message(), HasSubstr("over the limit of 8"));

  auto missing = nn::ReadOnnx(kData + "/no_such_model.onnx");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(OnnxImportTest, MappingByConvOrderChecksEveryShape) {
  // An export whose initializers lost their PyTorch names maps by Conv node order...
  nn::OnnxModel m;
  m.producer = "test";
  const auto shapes = PtychoWeightShapes(PtychoModel::kEdge);
  for (size_t i = 0; i < shapes.size(); i += 2) {
    const std::string w = "onnx::Conv_" + std::to_string(i);
    const std::string b = "onnx::Conv_" + std::to_string(i + 1);
    m.initializers[w] = nn::Tensor(shapes[i].second);
    m.initializers[b] = nn::Tensor(shapes[i + 1].second);
    m.nodes.push_back({"Conv", "conv" + std::to_string(i / 2), {"x", w, b}});
    m.nodes.push_back({"Relu", "", {"y"}});
  }
  auto mapped = PtychoWeightsFromOnnx(PtychoModel::kEdge, m);
  ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
  EXPECT_TRUE(CheckPtychoWeights(PtychoModel::kEdge, *mapped).ok());

  // ...and says which layer does not fit.
  m.initializers["onnx::Conv_4"] = nn::Tensor({7, 7, 3, 3});
  auto bad = PtychoWeightsFromOnnx(PtychoModel::kEdge, m);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("layer 'encoder.5.weight'"));
  // The original architecture has 20 convolutions, not 17.
  auto wrong = PtychoWeightsFromOnnx(PtychoModel::kOriginal, m);
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.status().message(), HasSubstr("17 Conv nodes"));
}

}  // namespace
}  // namespace loom::science
