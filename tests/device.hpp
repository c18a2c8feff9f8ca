// The device the model tests run on: BAUKIT_TEST_DEVICE=cuda runs the parity and command tests on the GPU
// (and fails, rather than skips, where this libtorch has no CUDA). Unset or "cpu": the CPU.
#pragma once
#include <torch/torch.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace baukit_tests {

/// "cpu" or "cuda", from BAUKIT_TEST_DEVICE.
inline std::string test_device_name() {
  const char* name = std::getenv("BAUKIT_TEST_DEVICE");
  const std::string value = name ? name : "cpu";
  if (value != "cpu" && value != "cuda")
    throw std::invalid_argument("BAUKIT_TEST_DEVICE must be cpu or cuda, not '" + value + "'");
  if (value == "cuda" && !torch::cuda::is_available())
    throw std::runtime_error("BAUKIT_TEST_DEVICE=cuda, but this libtorch has no CUDA or sees no GPU");
  return value;
}

/// The torch::Device of `test_device_name()`.
inline torch::Device test_device() {
  return test_device_name() == "cuda" ? torch::kCUDA : torch::kCPU;
}

}  // namespace baukit_tests
