/// @file mlp.hpp
/// @brief The gated MLP of Llama-style families: `down_proj(act_fn(gate_proj(x)) * up_proj(x))`, with Hugging
/// Face's names (`mlp.gate_proj`, `mlp.up_proj`, `mlp.down_proj`, `mlp.act_fn`).
#pragma once

#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <baukit/models/layers.hpp>
#include <string>

namespace baukit::models {

/// What a `GatedMLP` is: `GatedMLPOptions(4096, 14336).activation("silu")`.
struct GatedMLPOptions {
  /// An MLP from `hidden_size` through `intermediate_size` and back.
  GatedMLPOptions(int64_t hidden_size, int64_t intermediate_size)
      : hidden_size_(hidden_size), intermediate_size_(intermediate_size) {}
  /// Width of the residual stream.
  TORCH_ARG(int64_t, hidden_size);
  /// Width inside the MLP.
  TORCH_ARG(int64_t, intermediate_size);
  /// The gate's activation, as `hidden_act` names it (`silu`; Gemma: `gelu_pytorch_tanh`).
  TORCH_ARG(std::string, activation) = "silu";
  /// Biases on the three projections (Llama's `mlp_bias`).
  TORCH_ARG(bool, bias) = false;
  /// How the weights are stored (upcast at use).
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat32;
};

/// The gated MLP: the activated gate scales the up projection, element by element.
class GatedMLPImpl : public torch::nn::Cloneable<GatedMLPImpl> {
 public:
  /// The MLP `options` describe.
  explicit GatedMLPImpl(GatedMLPOptions options) : options(std::move(options)) { reset(); }
  /// Registers the submodules.
  void reset() override {
    const int64_t d = options.hidden_size(), inner = options.intermediate_size();
    gate_proj =
        register_module("gate_proj", Linear(LinearOptions(d, inner).bias(options.bias()).dtype(options.dtype())));
    up_proj = register_module("up_proj", Linear(LinearOptions(d, inner).bias(options.bias()).dtype(options.dtype())));
    down_proj =
        register_module("down_proj", Linear(LinearOptions(inner, d).bias(options.bias()).dtype(options.dtype())));
    act_fn = register_module("act_fn", Activation(options.activation()));
  }
  /// down_proj(act_fn(gate_proj(x)) * up_proj(x)).
  torch::Tensor forward(const torch::Tensor& x) { return down_proj(act_fn(gate_proj(x)) * up_proj(x)); }

  GatedMLPOptions options;     ///< What the MLP is.
  Linear gate_proj{nullptr};   ///< hidden -> intermediate, activated.
  Linear up_proj{nullptr};     ///< hidden -> intermediate.
  Linear down_proj{nullptr};   ///< intermediate -> hidden.
  Activation act_fn{nullptr};  ///< The gate's activation.
};
/// Traceable holder of `GatedMLPImpl`.
BAUKIT_TRACED_MODULE(GatedMLP);

}  // namespace baukit::models
