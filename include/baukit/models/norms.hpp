/// @file norms.hpp
/// @brief `RMSNorm`, as Llama, Mistral, Qwen and Gemma use it: computed in float32, with Gemma's optional unit offset.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11
#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <stdexcept>

namespace baukit::models {

/// What an `RMSNorm` is: `RMSNormOptions(4096).eps(1e-5)`.
struct RMSNormOptions {
  /// A norm over the last `dim` features.
  explicit RMSNormOptions(int64_t dim) : dim_(dim) {}
  /// Width of the normalised (last) dimension.
  TORCH_ARG(int64_t, dim);
  /// Added to the mean square before the square root.
  TORCH_ARG(double, eps) = 1e-6;
  /// Scale by `1 + weight` instead of `weight` (Gemma stores the scale's offset from one).
  TORCH_ARG(bool, unit_offset) = false;
};

/// Root-mean-square normalisation: `x / sqrt(mean(x^2) + eps) * weight` over the last dimension, computed in
/// float32 whatever `x` is (as Hugging Face's `LlamaRMSNorm` does), returned as float32.
class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  /// A norm over the last `dim` features with `eps` 1e-6.
  explicit RMSNormImpl(int64_t dim) : RMSNormImpl(RMSNormOptions(dim)) {}
  /// A norm as `options` describe it.
  explicit RMSNormImpl(RMSNormOptions options) : options(options) { reset(); }
  /// Registers `weight` [dim], ones (zeros with a unit offset): the identity scale.
  void reset() override {
    weight = register_parameter("weight",
                                options.unit_offset() ? torch::zeros({options.dim()}) : torch::ones({options.dim()}));
  }
  /// The normalised `x`, float32.
  torch::Tensor forward(const torch::Tensor& x) {
    if (x.dim() < 1 || x.size(-1) != options.dim())
      throw std::invalid_argument(fmt::format("RMSNorm: input of shape {} has last dimension {}, expected {}",
                                              fmt::join(x.sizes(), "x"), x.dim() ? x.size(-1) : 0, options.dim()));
    const auto h = x.to(torch::kFloat32);
    const auto normalised = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + options.eps());
    const auto scale = weight.to(torch::kFloat32);
    return normalised * (options.unit_offset() ? scale + 1.0 : scale);
  }
  /// Prints `RMSNorm(dim=..., eps=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "RMSNorm(dim=" << options.dim() << ", eps=" << options.eps()
           << (options.unit_offset() ? ", unit_offset" : "") << ")";
  }

  RMSNormOptions options;  ///< What the norm is.
  torch::Tensor weight;    ///< [dim]: the scale (or its offset from one).
};
/// Traceable holder of `RMSNormImpl`.
BAUKIT_TRACED_MODULE(RMSNorm);

}  // namespace baukit::models
