/// @file pretrained.hpp
/// @brief `PretrainedOptions`: how `from_pretrained` loads a checkpoint, for every family.
#pragma once

#include <torch/torch.h>

#include <optional>

namespace baukit::models {

/// How a checkpoint is loaded: `PretrainedOptions().device(torch::kCUDA).check_finite(false)`.
struct PretrainedOptions {
  /// Where the model's parameters go.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Scan every weight for NaN and infinity while loading (reads every byte; without it, weights are read only
  /// when used).
  TORCH_ARG(bool, check_finite) = true;
  /// How linear and embedding weights are kept: unset keeps `config.json`'s `torch_dtype` (F16/BF16 stay
  /// memory-mapped and are upcast per layer at use); `torch::kFloat32` converts them once at load.
  TORCH_ARG(std::optional<torch::ScalarType>, weight_dtype) = std::nullopt;
};

/// The dtype weights are kept in, from `config.json`'s `torch_dtype` (or `dtype`) value `name`, unless
/// `options` say otherwise: float16 and bfloat16 as they are, anything else float32.
inline torch::ScalarType weight_dtype_for(const std::string& name, const PretrainedOptions& options = {}) {
  if (options.weight_dtype()) return *options.weight_dtype();
  return name == "float16" ? torch::kFloat16 : name == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
}

/// `config.json`'s name for `dtype` (`float32`, `float16`, `bfloat16`).
inline const char* dtype_name(torch::ScalarType dtype) {
  return dtype == torch::kFloat16 ? "float16" : dtype == torch::kBFloat16 ? "bfloat16" : "float32";
}

}  // namespace baukit::models
