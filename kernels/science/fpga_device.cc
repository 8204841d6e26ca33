#include "kernels/science/fpga_device.h"

namespace loom::science {

FpgaDeviceInfo EmulatedFpgaDevice::Info() const {
  FpgaDeviceInfo info;
  info.name = "emulated-braggnn-fpga";
  info.emulated = true;
  if (net_) {
    info.network = net_->arch().name;
    info.number_format = net_->format().Name();
    info.checksum = checksum_;
  }
  return info;
}

Status EmulatedFpgaDevice::Load(const Bitstream& bitstream) {
  LOOM_ASSIGN_OR_RETURN(auto net,
                        EmulatedBraggNet::Create(BraggNNFpgaArchitecture(), bitstream.weights, bitstream.format));
  net_.emplace(std::move(net));
  checksum_ = bitstream.checksum;
  return Status::Ok();
}

Status EmulatedFpgaDevice::Run(std::span<const float> patches, int64_t n, std::span<float> out) const {
  if (!net_) return FailedPrecondition("the FPGA device has no bitstream loaded");
  if (patches.size() != static_cast<size_t>(n) * kPatchPixels || out.size() != static_cast<size_t>(n) * 2) {
    return InvalidArgument("FPGA device: expected " + std::to_string(n) + " patches of 11x11 and room for " +
                           std::to_string(n) + " centres");
  }
  net_->Forward(patches, n, out);
  return Status::Ok();
}

}  // namespace loom::science
