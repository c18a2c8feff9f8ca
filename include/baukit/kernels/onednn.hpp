/// @file onednn.hpp
/// @brief `x @ weight.T + bias` through oneDNN for many rows of float32 on the CPU (the lens decode's vocabulary
/// projection) when libtorch's BLAS runs generic kernels (see blas.hpp) and could not be switched to the CPU's:
/// oneDNN picks its kernels from the CPU's features (measured here: 150-210 GFLOP/s on 2 cores, against 30-60 for
/// OpenBLAS's generic kernels and 210-270 for its AVX-512 ones).
#pragma once

#include <ATen/Context.h>
#include <torch/torch.h>

#include <baukit/kernels/blas.hpp>
#include <baukit/kernels/skinny.hpp>
#include <optional>

namespace baukit::kernels {

/// `x @ weight.T + bias` by oneDNN for `x` [m, k], `weight` [n, k] and `bias` [n] (undefined: none), all float32
/// on the CPU, when libtorch was built with oneDNN and no autograd graph must be recorded; `std::nullopt`
/// otherwise, so the caller uses `torch::linear`. Same result up to float rounding order.
inline std::optional<torch::Tensor> onednn_linear(const torch::Tensor& x, const torch::Tensor& weight,
                                                  const torch::Tensor& bias) {
  if (!at::hasMKLDNN() || !detail::plain_float_product(bias, x, weight) || x.size(1) != weight.size(1))
    return std::nullopt;
  const auto b = bias.defined() ? c10::optional<torch::Tensor>(bias.contiguous()) : c10::nullopt;
  return at::mkldnn_linear(x.contiguous().to_mkldnn(), weight.contiguous(), b).to_dense();
}

}  // namespace baukit::kernels
