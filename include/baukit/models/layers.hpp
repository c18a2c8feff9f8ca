/// @file layers.hpp
/// @brief Building blocks shared by the model families: Hugging Face's `Conv1D`, a `Linear` whose weight can be
/// tied, and named activations. All traceable; none initialises weights a checkpoint will overwrite.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11
#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <baukit/kernels/linear.hpp>
#include <set>
#include <stdexcept>
#include <string>

namespace baukit::models {

/// Hugging Face's `Conv1D` (a linear layer whose weight is stored transposed, `[in, out]`), as GPT-2 uses it.
/// The weight is left uninitialised: load a checkpoint or call an initialiser.
class Conv1DImpl : public torch::nn::Cloneable<Conv1DImpl> {
 public:
  /// A layer from `in_features` to `out_features`.
  Conv1DImpl(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {
    reset();
  }
  /// Registers `weight` [in, out] and `bias` [out].
  void reset() override {
    weight = register_parameter("weight", torch::empty({in_features_, out_features_}));
    bias = register_parameter("bias", torch::empty({out_features_}));
  }
  /// x @ weight + bias, over the last dimension of `x`.
  torch::Tensor forward(const torch::Tensor& x) {
    if (x.dim() < 1 || x.size(-1) != in_features_)
      throw std::invalid_argument(fmt::format("Conv1D: input of shape {} has last dimension {}, expected {}",
                                              fmt::join(x.sizes(), "x"), x.dim() ? x.size(-1) : 0, in_features_));
    return kernels::linear(x, weight, bias, kernels::WeightLayout::in_out);
  }
  /// Prints `Conv1D(in=..., out=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "Conv1D(in=" << in_features_ << ", out=" << out_features_ << ")";
  }

  torch::Tensor weight;  ///< [in, out]
  torch::Tensor bias;    ///< [out]

 private:
  int64_t in_features_, out_features_;
};
/// Traceable holder of `Conv1DImpl`.
BAUKIT_TRACED_MODULE(Conv1D);

/// What a `Linear` layer is, with fluent setters as libtorch's `LinearOptions`:
/// `LinearOptions(4096, 4096).bias(true).dtype(torch::kFloat16)`.
struct LinearOptions {
  /// A layer from `in_features` to `out_features`.
  LinearOptions(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  /// Width of the input.
  TORCH_ARG(int64_t, in_features);
  /// Width of the output.
  TORCH_ARG(int64_t, out_features);
  /// Whether the layer adds a bias [out].
  TORCH_ARG(bool, bias) = false;
  /// A tensor [out, in] to share as the weight (Hugging Face's tied `lm_head`); undefined: a weight of its own.
  TORCH_ARG(torch::Tensor, tied_weight) = {};
  /// How the weights are stored (F16 or BF16 stay memory-mapped from a checkpoint; computed in the input's dtype).
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat32;
};

/// A linear layer `x @ weight.T (+ bias)` whose weight is left uninitialised or is tied to a given tensor (the
/// same parameter, as Hugging Face ties `lm_head` to the token embedding).
class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  /// A layer from `in_features` to `out_features`, without bias, stored as float32.
  LinearImpl(int64_t in_features, int64_t out_features) : LinearImpl(LinearOptions(in_features, out_features)) {}
  /// A layer as `options` describe it.
  explicit LinearImpl(LinearOptions options) : options(std::move(options)) { reset(); }
  /// Registers `weight` [out, in] (the tied tensor when given) and, if asked for, `bias` [out].
  void reset() override {
    const auto tensor = torch::TensorOptions().dtype(options.dtype());
    const int64_t in = options.in_features(), out = options.out_features();
    weight = register_parameter(
        "weight", options.tied_weight().defined() ? options.tied_weight() : torch::empty({out, in}, tensor));
    if (options.bias()) bias = register_parameter("bias", torch::empty({out}, tensor));
  }
  /// x @ weight.T + bias, with stored weights upcast to x's dtype for the call (a no-op when they match).
  torch::Tensor forward(const torch::Tensor& x) {
    return kernels::linear(x, weight, bias, kernels::WeightLayout::out_in);
  }
  /// Prints `Linear(in=..., out=..., bias=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "Linear(in=" << options.in_features() << ", out=" << options.out_features()
           << ", bias=" << (options.bias() ? "true" : "false") << (options.tied_weight().defined() ? ", tied" : "")
           << ")";
  }

  LinearOptions options;  ///< What the layer is.
  torch::Tensor weight;   ///< [out, in]
  torch::Tensor bias;     ///< [out], undefined without bias
};
/// Traceable holder of `LinearImpl`.
BAUKIT_TRACED_MODULE(Linear);

/// A named activation function, as `config.json`'s `activation_function` names it.
class ActivationImpl : public torch::nn::Cloneable<ActivationImpl> {
 public:
  /// The names accepted.
  static const std::set<std::string>& supported() {
    static const std::set<std::string> names = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu", "silu",
                                                "swish"};
    return names;
  }
  /// The activation `name`; throws naming it if unsupported.
  explicit ActivationImpl(std::string name) : name_(std::move(name)) {
    if (!supported().count(name_))
      throw std::invalid_argument(fmt::format("activation_function '{}' is not supported (supported: {})", name_,
                                              fmt::join(supported(), ", ")));
  }
  /// Nothing to register.
  void reset() override {}
  /// Applies the activation.
  torch::Tensor forward(const torch::Tensor& x) {
    if (name_ == "gelu") return torch::gelu(x);
    if (name_ == "relu") return torch::relu(x);
    if (name_ == "silu" || name_ == "swish") return torch::silu(x);
    return torch::gelu(x, "tanh");  // gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  }
  /// Prints the activation's name.
  void pretty_print(std::ostream& stream) const override { stream << "Activation(" << name_ << ")"; }

 private:
  std::string name_;
};
/// Traceable holder of `ActivationImpl`.
BAUKIT_TRACED_MODULE(Activation);

}  // namespace baukit::models
