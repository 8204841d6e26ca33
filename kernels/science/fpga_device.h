// The device interface an FPGA runtime plugs in behind to serve `braggnn-fpga`, and the one
// implementation Loom ships: EmulatedFpgaDevice, which runs the bitstream's network in the
// software model of its number format (braggnn_emulated.h) and says so (emulated: true). Nothing
// here drives hardware; a real runtime (XRT for an Alveo card, say) implements FpgaDevice:
//
//   Info()    what the endpoint advertises: device class "fpga", a name, whether it is emulated,
//             the number format and network of the loaded bitstream;
//   Load(b)   program the device with a verified bitstream (bitstream.h), once, when the worker
//             first needs it; it stays loaded (warm) for every later call;
//   Run(...)  n normalised-or-raw patches in, n centres out, synchronously. XRT's flow maps onto
//             it: allocate buffer objects for input and output, sync to device, start the kernel,
//             wait, sync back.
//
// Thread-safety: Load is called once, before any Run; Run may be called from several threads
// (EmulatedFpgaDevice is immutable after Load; a hardware runtime would serialise on its queue).
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>

#include "common/status.h"
#include "kernels/science/bitstream.h"
#include "kernels/science/braggnn_emulated.h"

namespace loom::science {

struct FpgaDeviceInfo {
  std::string device_class = "fpga";
  std::string name;  // "emulated-braggnn-fpga" or the card's name
  bool emulated = true;
  std::string network;        // of the loaded bitstream; empty before Load
  std::string number_format;  // of the loaded bitstream
  std::string checksum;       // of the loaded bitstream
};

class FpgaDevice {
 public:
  virtual ~FpgaDevice() = default;
  virtual FpgaDeviceInfo Info() const = 0;
  virtual Status Load(const Bitstream& bitstream) = 0;
  // patches: raw counts [n, 11, 11]; out: [n, 2] (column, row) / 11.
  virtual Status Run(std::span<const float> patches, int64_t n, std::span<float> out) const = 0;
};

// The software model of the FPGA datapath: bit-exact to the number format (minifloat.h), about a
// thousand times slower than the hardware would be. Reports emulated = true.
class EmulatedFpgaDevice final : public FpgaDevice {
 public:
  FpgaDeviceInfo Info() const override;
  Status Load(const Bitstream& bitstream) override;
  Status Run(std::span<const float> patches, int64_t n, std::span<float> out) const override;

 private:
  std::optional<EmulatedBraggNet> net_;
  std::string checksum_;
};

}  // namespace loom::science
