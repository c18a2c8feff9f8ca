// Fuzzes pytorch_model.bin reading (the zip directory and the restricted unpickler) over the input bytes: every
// input gives tensors inside the input, or throws CheckpointError; nothing is ever executed.
#include <baukit/io/torch_bin.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::text(data, size);
  try {
    for (const auto& [name, tensor] : baukit::io::read_torch_bin(file, "fuzz.bin", nullptr)) {
      if (tensor.numel() > 0) (void)tensor.to(torch::kFloat64).sum().item<double>();  // reads every element
    }
  } catch (const baukit::io::CheckpointError&) {
  }
  return 0;
}
