// The FPGA bitstream artifact and the emulated FPGA device.
#include "kernels/science/bitstream.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "kernels/nn/safetensors.h"
#include "kernels/science/fpga_device.h"
#include "tests/unit/braggnn/braggnn_test_util.h"

namespace loom::science {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nn::TensorMap FpgaWeights() { return testing::GoldenFile::Load("golden_braggnn_fpga_trained").weights; }

TEST(BitstreamTest, CommittedBitstreamsFromPythonVerify) {
  for (const char* f : {"e5m4", "e5m3"}) {
    auto b = ReadBitstream(testing::DataPath(std::string("braggnn_fpga_") + f + ".bitstream"));
    ASSERT_TRUE(b.ok()) << b.status().message();
    EXPECT_EQ(b->format.Name(), f);
    EXPECT_EQ(b->network, "braggnn-fpga");
    EXPECT_EQ(b->checksum, BitstreamChecksum("braggnn-fpga", b->format, b->weights));
    EXPECT_EQ(b->weights.at("fc1.weight").data, FpgaWeights().at("fc1.weight").data);
  }
}

TEST(BitstreamTest, RoundTripsAndRefusesCorruptOrMismatchedFiles) {
  const std::string bytes = SerializeBitstream(FpgaWeights(), kE5M3);
  auto ok = ParseBitstream(bytes, "test");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->format, kE5M3);

  // One flipped bit in the weights: the checksum catches it.
  std::string corrupt = bytes;
  corrupt[corrupt.size() - 3] ^= 0x10;
  auto bad = ParseBitstream(corrupt, "test");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("checksum mismatch"), std::string::npos) << bad.status().message();

  // Truncated: not a valid file.
  auto cut = ParseBitstream(std::string_view(bytes).substr(0, bytes.size() / 2), "test");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("refused"), std::string::npos);

  // Edited metadata: the number format is part of the checksum.
  auto st = nn::ParseSafetensors(bytes);
  ASSERT_TRUE(st.ok());
  st->metadata["number_format"] = "e5m4";
  auto relabelled = ParseBitstream(nn::SerializeSafetensors(*st), "test");
  ASSERT_FALSE(relabelled.ok());
  EXPECT_NE(relabelled.status().message().find("checksum mismatch"), std::string::npos);

  // BraggNN's weights sealed as a bitstream: the checksum holds but the network does not fit.
  nn::Safetensors other;
  other.tensors = testing::GoldenFile::Load("golden_braggnn_random").weights;
  other.metadata = {{"loom_artifact", "bitstream"},
                    {"format_version", "1"},
                    {"network", "braggnn-fpga"},
                    {"number_format", "e5m4"},
                    {"checksum", BitstreamChecksum("braggnn-fpga", kE5M4, other.tensors)}};
  auto wrong = ParseBitstream(nn::SerializeSafetensors(other), "test");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("conv1.weight"), std::string::npos) << wrong.status().message();

  // A plain weights file is not a bitstream.
  auto plain = ParseBitstream(ReadAll(testing::DataPath("braggnn_trained.safetensors")), "test");
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("loom_artifact"), std::string::npos) << plain.status().message();
  EXPECT_EQ(ReadBitstream("/nonexistent/x.bitstream").status().code(), StatusCode::kNotFound);
}

TEST(EmulatedFpgaDeviceTest, ReportsItselfAsEmulatedAndRunsOnlyOnceLoaded) {
  EmulatedFpgaDevice dev;
  EXPECT_EQ(dev.Info().device_class, "fpga");
  EXPECT_TRUE(dev.Info().emulated);
  std::vector<float> patch(kPatchPixels, 1.0f), out(2);
  EXPECT_EQ(dev.Run(patch, 1, out).code(), StatusCode::kFailedPrecondition);
  auto b = ParseBitstream(SerializeBitstream(FpgaWeights(), kE5M4), "test");
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(dev.Load(*b).ok());
  EXPECT_EQ(dev.Info().number_format, "e5m4");
  EXPECT_EQ(dev.Info().checksum, b->checksum);
  EXPECT_TRUE(dev.Info().emulated);
  patch[60] = 50.0f;
  ASSERT_TRUE(dev.Run(patch, 1, out).ok());
  EXPECT_EQ(RoundToFormat(out[0], kE5M4), out[0]);
  EXPECT_FALSE(dev.Run(patch, 2, out).ok());  // sizes disagree
}

}  // namespace
}  // namespace loom::science
