/// @file pretrained.hpp
/// @brief `PretrainedOptions`: how `from_pretrained` loads a checkpoint, for every family.
#pragma once

#include <torch/torch.h>

#include <baukit/io/checkpoint.hpp>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>

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

/// The last steps of every family's `from_config`: builds `Impl` for `config`, fills it from the checkpoint `state`
/// (read from `directory`) by `load` (with `options.check_finite()`), and returns it in eval mode on
/// `options.device()`.
template <class Impl, class Config>
std::shared_ptr<Impl> build_pretrained(Config config, const io::StateDict& state, io::LoadOptions load,
                                       const std::filesystem::path& directory, const PretrainedOptions& options) {
  auto model = std::make_shared<Impl>(std::move(config));
  io::load_state_dict(*model, state, load.check_finite(options.check_finite()), directory);
  model->eval();
  if (options.device() != torch::kCPU) model->to(options.device());
  return model;
}

/// The holder of a family's top-level model, as `TORCH_MODULE` makes, plus `from_pretrained`:
/// `GPT2LMHeadModel`, `GPTJForCausalLM` and `LlamaForCausalLM` are this for their `Impl`s.
template <class Impl>
class PretrainedHolder : public torch::nn::ModuleHolder<Impl> {
 public:
  using torch::nn::ModuleHolder<Impl>::ModuleHolder;
  /// Loads a checkpoint directory; see the `Impl`'s `from_pretrained`.
  static PretrainedHolder from_pretrained(const std::filesystem::path& directory,
                                          const PretrainedOptions& options = {}) {
    return PretrainedHolder(Impl::from_pretrained(directory, options));
  }
  /// As above, on `device`, with or without the NaN/infinity scan.
  static PretrainedHolder from_pretrained(const std::filesystem::path& directory, torch::Device device,
                                          bool check_finite = true) {
    return from_pretrained(directory, PretrainedOptions().device(device).check_finite(check_finite));
  }
};

}  // namespace baukit::models
