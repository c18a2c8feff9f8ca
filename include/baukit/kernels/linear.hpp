/// @file linear.hpp
/// @brief `kernels::linear`: the one place that chooses how a layer's product runs. A few rows (a short prompt, one
/// generated token) are bound by weight bytes: the skinny kernels, which also read F16/BF16 weights as stored.
/// Many rows are compute-bound: libtorch's BLAS, or oneDNN where that BLAS still runs generic kernels on this CPU;
/// an F16/BF16 weight is widened for them block by block, never whole.
/// Anything else (autograd, other dtypes, devices) goes to libtorch, with weights stored in another dtype upcast
/// for the call.
///
/// @code
/// torch::Tensor y = baukit::kernels::linear(x, weight, bias, baukit::kernels::WeightLayout::out_in);  // x @ W.T + b
/// @endcode
#pragma once

#include <torch/torch.h>

#include <algorithm>
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

/// The most bytes of float32 weight `linear` makes at once from an F16/BF16 weight for a product of many rows: the
/// weight is widened and multiplied in blocks of output features of at most this size, so a large half-precision
/// unembedding (Gemma's 256,000 x 2,304 BF16, 1.2 GB) never exists as a float32 copy (2.4 GB) beside the model.
inline constexpr int64_t kWidenedBlockBytes = int64_t{64} << 20;

namespace detail {

/// `rows @ weight.T + bias` for float32 `rows` [m, in] and an F16/BF16 `weight` [out, in] (bias likewise or
/// undefined), widened block by block of output features (`kWidenedBlockBytes`); the blocks are large enough that
/// BLAS runs at its full rate.
inline torch::Tensor widened_blocks_linear(const torch::Tensor& rows, const torch::Tensor& weight,
                                           const torch::Tensor& bias) {
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t block = std::max<int64_t>(256, kWidenedBlockBytes / (4 * std::max<int64_t>(in, 1)) / 256 * 256);
  auto y = torch::empty({rows.size(0), out}, rows.options());
  for (int64_t begin = 0; begin < out; begin += block) {
    const int64_t end = std::min(out, begin + block);
    const auto w = weight.slice(0, begin, end).to(torch::kFloat32);
    y.slice(1, begin, end)
        .copy_(bias.defined() ? torch::addmm(bias.slice(0, begin, end).to(torch::kFloat32), rows, w.t())
                              : torch::mm(rows, w.t()));
  }
  return y;
}

}  // namespace detail

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
    const auto type = weight.scalar_type();
    if (!product && out_in && (type == torch::kBFloat16 || type == torch::kHalf) &&
        static_cast<int64_t>(weight.numel()) * 4 > kWidenedBlockBytes &&
        detail::plain_float_product(bias, rows, weight, /*half_weights=*/true) && weight.is_contiguous())
      product = detail::widened_blocks_linear(rows.contiguous(), weight, bias);
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
