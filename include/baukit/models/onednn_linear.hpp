/// @file onednn_linear.hpp
/// @brief `x @ weight.T + bias` through oneDNN for many rows of float32 on the CPU (the lens decode's vocabulary
/// projection). libtorch's `linear` uses the BLAS it was built with, and that BLAS may not know the CPU: Debian's
/// OpenBLAS 0.3.21 falls back to its generic SSE3 kernels on CPU model 207 (measured here: 32 GFLOP/s on 2 cores,
/// against 160-210 for oneDNN, which picks its kernels from the CPU's features, not a list of models).
#pragma once

#include <ATen/Context.h>
#include <torch/torch.h>

#include <optional>

namespace baukit::models {

/// `x @ weight.T + bias` by oneDNN for `x` [m, k], `weight` [n, k] and `bias` [n] (undefined: none), all float32
/// on the CPU, when libtorch was built with oneDNN and no autograd graph must be recorded; `std::nullopt`
/// otherwise, so the caller uses `torch::linear`. Same result up to float rounding order.
inline std::optional<torch::Tensor> onednn_linear(const torch::Tensor& x, const torch::Tensor& weight,
                                                  const torch::Tensor& bias) {
  const auto is_cpu_float = [](const torch::Tensor& t) {
    return t.layout() == torch::kStrided && t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
  };
  const bool records_graph = torch::GradMode::is_enabled() &&
                             (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (records_graph || !at::hasMKLDNN() || x.dim() != 2 || weight.dim() != 2 || x.size(1) != weight.size(1) ||
      !is_cpu_float(x) || !is_cpu_float(weight) || (bias.defined() && !is_cpu_float(bias)))
    return std::nullopt;
  const auto b = bias.defined() ? c10::optional<torch::Tensor>(bias.contiguous()) : c10::nullopt;
  return at::mkldnn_linear(x.contiguous().to_mkldnn(), weight.contiguous(), b).to_dense();
}

}  // namespace baukit::models
