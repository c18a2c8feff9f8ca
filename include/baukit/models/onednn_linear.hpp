/// @file onednn_linear.hpp
/// @brief `x @ weight.T + bias` through oneDNN for many rows of float32 on the CPU (the lens decode's vocabulary
/// projection) when libtorch's BLAS runs generic kernels. libtorch's `linear` uses the BLAS it was built with, and
/// that BLAS may not know the CPU: Debian's OpenBLAS 0.3.21 falls back to its SSE3 kernels ("Prescott") on CPU
/// model 207 (measured here: 30-60 GFLOP/s on 2 cores, against 150-210 for oneDNN, which picks its kernels from the
/// CPU's features; OpenBLAS told the CPU with OPENBLAS_CORETYPE=SkylakeX: 210-250).
#pragma once

#include <ATen/Context.h>
#include <dlfcn.h>
#include <torch/torch.h>

#include <baukit/models/skinny_matmul.hpp>
#include <optional>
#include <set>
#include <string>

namespace baukit::models {

/// Whether libtorch's BLAS is OpenBLAS running kernels older than the CPU (no AVX2 kernels on a CPU with AVX2,
/// as when it does not know the CPU model), so that oneDNN is the faster way to multiply many rows; false for
/// OpenBLAS with kernels for the CPU, for other BLAS libraries (MKL), and off x86-64. Checked once.
inline bool blas_runs_generic_kernels() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool generic = [] {
    using CoreName = char* (*)();
    const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
    if (!core_name || !__builtin_cpu_supports("avx2")) return false;
    static const std::set<std::string> avx2_cores = {"Haswell",        "Zen",  "SkylakeX", "Cooperlake",
                                                     "SapphireRapids", "Zen2", "Zen3",     "Zen4"};
    return avx2_cores.count(core_name()) == 0;
  }();
  return generic;
#else
  return false;
#endif
}

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

}  // namespace baukit::models
