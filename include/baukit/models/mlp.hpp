/// @file mlp.hpp
/// @brief The MLPs of the families: the gated one of Llama-style families, `down_proj(act_fn(gate_proj(x)) *
/// up_proj(x))`, with Hugging Face's names (`mlp.gate_proj`, `mlp.up_proj`, `mlp.down_proj`, `mlp.act_fn`); and the
/// plain one, `out(act(in(x)))`, under each family's names (GPT-J's `fc_in`, `act`, `fc_out`; GPT-NeoX's
/// `dense_h_to_4h`, `act`, `dense_4h_to_h`).
#pragma once

#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <baukit/models/layers.hpp>
#include <optional>
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

/// What a plain `MLP` is: `MLPOptions(4096, 16384).activation("gelu_new").names("fc_in", "act", "fc_out")`.
struct MLPOptions {
  /// An MLP from `hidden_size` through `intermediate_size` and back.
  MLPOptions(int64_t hidden_size, int64_t intermediate_size)
      : hidden_size_(hidden_size), intermediate_size_(intermediate_size) {}
  /// Width of the residual stream.
  TORCH_ARG(int64_t, hidden_size);
  /// Width inside the MLP.
  TORCH_ARG(int64_t, intermediate_size);
  /// The activation, as `config.json` names it (`gelu_new`, `gelu`, `relu`, ...).
  TORCH_ARG(std::string, activation) = "gelu_new";
  /// Biases on the two projections.
  TORCH_ARG(bool, bias) = true;
  /// How the weights are stored (upcast at use).
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat32;
  /// Hugging Face's name of the projection in.
  TORCH_ARG(std::string, in_name) = "fc_in";
  /// Hugging Face's name of the activation.
  TORCH_ARG(std::string, act_name) = "act";
  /// Hugging Face's name of the projection out.
  TORCH_ARG(std::string, out_name) = "fc_out";
  /// Dropout after the projection out (training only), registered as `dropout`; unset: none.
  TORCH_ARG(std::optional<double>, dropout) = std::nullopt;

 public:  // TORCH_ARG leaves the section private
  /// Sets the three names at once.
  MLPOptions& names(std::string in, std::string act, std::string out) {
    in_name_ = std::move(in), act_name_ = std::move(act), out_name_ = std::move(out);
    return *this;
  }
};

/// The plain MLP: a projection in, an activation, a projection out (and dropout, where the family has it).
class MLPImpl : public torch::nn::Cloneable<MLPImpl> {
 public:
  /// The MLP `options` describe.
  explicit MLPImpl(MLPOptions options) : options(std::move(options)) { reset(); }
  /// Registers the submodules under the options' names.
  void reset() override {
    const int64_t d = options.hidden_size(), inner = options.intermediate_size();
    in_proj =
        register_module(options.in_name(), Linear(LinearOptions(d, inner).bias(options.bias()).dtype(options.dtype())));
    act = register_module(options.act_name(), Activation(options.activation()));
    out_proj = register_module(options.out_name(),
                               Linear(LinearOptions(inner, d).bias(options.bias()).dtype(options.dtype())));
    if (options.dropout()) dropout = register_module("dropout", TracedDropout(*options.dropout()));
  }
  /// dropout(out_proj(act(in_proj(x)))).
  torch::Tensor forward(const torch::Tensor& x) {
    const auto y = out_proj(act(in_proj(x)));
    return dropout ? dropout(y) : y;
  }

  MLPOptions options;              ///< What the MLP is.
  Linear in_proj{nullptr};         ///< hidden -> intermediate (`in_name`).
  Activation act{nullptr};         ///< The activation (`act_name`).
  Linear out_proj{nullptr};        ///< intermediate -> hidden (`out_name`).
  TracedDropout dropout{nullptr};  ///< After `out_proj`; null without `dropout`.
};
/// Traceable holder of `MLPImpl`.
BAUKIT_TRACED_MODULE(MLP);

}  // namespace baukit::models
