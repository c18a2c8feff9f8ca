/// @file layers.hpp
/// @brief Building blocks shared by the model families: Hugging Face's `Conv1D`, a `Linear` whose weight can be
/// tied, and named activations. All traceable; none initialises weights a checkpoint will overwrite.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join lives here since fmt 11
#include <torch/torch.h>

#include <baukit/hook.hpp>
#include <baukit/models/onednn_linear.hpp>
#include <baukit/models/skinny_matmul.hpp>
#include <optional>
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
    auto shape = x.sizes().vec();
    shape.back() = out_features_;
    const auto rows = x.reshape({-1, in_features_});
    auto product = skinny_addmm(bias, rows, weight);  // a short prompt or one generated token: weight-bound
    return (product ? *product : torch::addmm(bias, rows, weight)).view(shape);
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

/// A linear layer `x @ weight.T (+ bias)` whose weight is left uninitialised or is tied to a given tensor (the
/// same parameter, as Hugging Face ties `lm_head` to the token embedding).
class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  /// A layer from `in_features` to `out_features`; `tied_weight` [out, in], when defined, is shared. Weights are
  /// stored as `dtype` (e.g. F16, memory-mapped from a checkpoint) and computed in the input's dtype.
  LinearImpl(int64_t in_features, int64_t out_features, bool with_bias = false, torch::Tensor tied_weight = {},
             torch::ScalarType dtype = torch::kFloat32)
      : in_features_(in_features),
        out_features_(out_features),
        with_bias_(with_bias),
        tied_(std::move(tied_weight)),
        dtype_(dtype) {
    reset();
  }
  /// Registers `weight` [out, in] (the tied tensor when given) and, if asked for, `bias` [out].
  void reset() override {
    const auto options = torch::TensorOptions().dtype(dtype_);
    weight =
        register_parameter("weight", tied_.defined() ? tied_ : torch::empty({out_features_, in_features_}, options));
    if (with_bias_) bias = register_parameter("bias", torch::empty({out_features_}, options));
  }
  /// x @ weight.T + bias, with stored weights upcast to x's dtype for the call (a no-op when they match).
  torch::Tensor forward(const torch::Tensor& x) {
    // A few rows are bound by weight bytes: the skinny kernels. Many rows are compute-bound: libtorch's BLAS,
    // unless it runs generic kernels on this CPU. (A wrong width goes to torch::linear, whose error names it.)
    std::optional<torch::Tensor> product;
    if (x.dim() >= 1 && x.size(-1) == in_features_) {
      const auto rows = x.reshape({-1, in_features_});
      product = rows.size(0) <= kSkinnyMaxRows ? skinny_linear(rows, weight, bias)
                : blas_runs_generic_kernels()  ? onednn_linear(rows, weight, bias)
                                               : std::nullopt;
    }
    if (!product) return torch::linear(x, weight.to(x.scalar_type()), bias.defined() ? bias.to(x.scalar_type()) : bias);
    auto shape = x.sizes().vec();
    shape.back() = out_features_;
    return product->view(shape);
  }
  /// Prints `Linear(in=..., out=..., bias=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "Linear(in=" << in_features_ << ", out=" << out_features_ << ", bias=" << (with_bias_ ? "true" : "false")
           << (tied_.defined() ? ", tied" : "") << ")";
  }

  torch::Tensor weight;  ///< [out, in]
  torch::Tensor bias;    ///< [out], undefined without bias

 private:
  int64_t in_features_, out_features_;
  bool with_bias_;
  torch::Tensor tied_;
  torch::ScalarType dtype_;
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
