/// @file linear.hpp
/// @brief `kernels::linear`: the one place that chooses how a layer's product runs. A few rows (a short prompt, one
/// generated token) are bound by weight bytes: the skinny kernels, which also read F16/BF16 weights as stored.
/// Many rows are compute-bound: libtorch's BLAS, or oneDNN where that BLAS still runs generic kernels on this CPU.
/// Anything else (autograd, other dtypes, devices) goes to libtorch, with weights stored in another dtype upcast
/// for the call.
///
/// @code
/// torch::Tensor y = baukit::kernels::linear(x, weight, bias, baukit::kernels::WeightLayout::out_in);  // x @ W.T + b
/// @endcode
#pragma once

#include <torch/torch.h>

#include <baukit/kernels/blas.hpp>
#include <baukit/kernels/onednn.hpp>
#include <baukit/kernels/skinny.hpp>
#include <optional>

namespace baukit::kernels {

/// How a weight is stored.
enum class WeightLayout {
  out_in,  ///< `[out, in]`, as `torch::nn::Linear` (the product is `x @ W.T + b`).
  in_out,  ///< `[in, out]`, as Hugging Face's `Conv1D` (the product is `x @ W + b`).
};

/// The product of `x` [..., in] with `weight` in `layout` plus `bias` [out] (undefined: none), over the last
/// dimension of `x`. Same result as `torch::linear` (or `x @ W + b`) up to float rounding order; an input of the
/// wrong width gets libtorch's own error.
inline torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                            WeightLayout layout) {
  const bool out_in = layout == WeightLayout::out_in;
  const int64_t in = weight.size(out_in ? 1 : 0), out = weight.size(out_in ? 0 : 1);
  if (x.dim() >= 1 && x.size(-1) == in) {
    const auto rows = x.reshape({-1, in});
    std::optional<torch::Tensor> product;
    if (rows.size(0) <= kSkinnyMaxRows)
      product = out_in ? skinny_linear(rows, weight, bias) : skinny_addmm(bias, rows, weight);
    else if (out_in && blas_runs_generic_kernels())
      product = onednn_linear(rows, weight, bias);
    if (product) {
      auto shape = x.sizes().vec();
      shape.back() = out;
      return product->view(shape);
    }
  }
  const auto w = weight.to(x.scalar_type());
  const auto b = bias.defined() ? bias.to(x.scalar_type()) : bias;
  if (out_in) return torch::linear(x, w, b);
  return b.defined() ? torch::matmul(x, w) + b : torch::matmul(x, w);
}

}  // namespace baukit::kernels
