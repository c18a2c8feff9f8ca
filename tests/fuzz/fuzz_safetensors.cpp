// Fuzzes the safetensors header and tensor table over the input bytes as a whole file (ASan sees any read past
// them): every input either parses into tensors lying inside the data section, or throws CheckpointError.
#include <baukit/io/safetensors.hpp>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::text(data, size);
  try {
    const auto entries = baukit::io::parse_safetensors(file, "fuzz.safetensors");
    std::uint64_t header = 0;
    for (int i = 7; i >= 0; --i) header = (header << 8) | data[i];
    for (const auto& entry : entries) {
      const auto tensor =
          baukit::io::detail::tensor_over(file.data() + 8 + header + entry.begin, entry.shape, entry.dtype, nullptr);
      if (static_cast<std::uint64_t>(tensor.nbytes()) != entry.end - entry.begin) __builtin_trap();
      (void)tensor.to(torch::kFloat64).sum().item<double>();  // reads every element
    }
  } catch (const baukit::io::CheckpointError&) {
  }
  return 0;
}
