/// @file skinny_matmul.hpp
/// @brief `x @ weight + bias` for a few rows of `x` (a short prompt, one generated token), reading every weight byte
/// once. General BLAS kernels pack and re-stream the weight for such products and reach a fraction of the memory
/// bandwidth (measured here: OpenBLAS 6 GB/s at 8 rows against 34 GB/s); these products are bound by weight bytes,
/// so this kernel keeps the rows' accumulators in registers and streams the weight once. x86-64 AVX2/FMA only,
/// chosen at run time; everything else falls back to libtorch.
#pragma once

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BAUKIT_SKINNY_MATMUL_X86 1
#endif

namespace baukit::models {

/// The most rows of `x` the skinny kernel takes; larger products are compute-bound and go to BLAS.
inline constexpr int64_t kSkinnyMaxRows = 16;

/// Whether the skinny kernel runs here: an x86-64 build by GCC or Clang on a CPU with AVX2 and FMA (checked once).
inline bool skinny_matmul_available() {
#ifdef BAUKIT_SKINNY_MATMUL_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

namespace detail {

#ifdef BAUKIT_SKINNY_MATMUL_X86
/// Rows `[0, rows)` (at most 4) of `y[:, n0:n0+16] (+)= x[:, k0:k1] @ w[k0:k1, n0:n0+16]`: 4 x 2 vector accumulators
/// in registers, the weight tile read once per row group (the second group finds it in L1).
template <int Rows>
__attribute__((target("avx2,fma"))) inline void skinny_tile(const float* x, int64_t ldx, const float* w, int64_t ldw,
                                                            float* y, int64_t ldy, int64_t k0, int64_t k1,
                                                            bool accumulate) {
  __m256 acc[Rows][2];
#pragma GCC unroll 4
  for (int r = 0; r < Rows; ++r) {
    acc[r][0] = accumulate ? _mm256_loadu_ps(y + r * ldy) : _mm256_setzero_ps();
    acc[r][1] = accumulate ? _mm256_loadu_ps(y + r * ldy + 8) : _mm256_setzero_ps();
  }
  for (int64_t k = k0; k < k1; ++k) {
    const float* row = w + k * ldw;
    _mm_prefetch(reinterpret_cast<const char*>(row + 64), _MM_HINT_T0);  // this weight row, four tiles ahead
    const __m256 w0 = _mm256_loadu_ps(row), w1 = _mm256_loadu_ps(row + 8);
#pragma GCC unroll 4
    for (int r = 0; r < Rows; ++r) {
      const __m256 b = _mm256_broadcast_ss(x + r * ldx + k);
      acc[r][0] = _mm256_fmadd_ps(b, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(b, w1, acc[r][1]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < Rows; ++r) {
    _mm256_storeu_ps(y + r * ldy, acc[r][0]);
    _mm256_storeu_ps(y + r * ldy + 8, acc[r][1]);
  }
}

/// Columns `[n0, n1)` (multiples of 16) of `y = x @ w`, `x` [m, k], `w` [k, n], `y` [m, n], all row-major.
__attribute__((target("avx2,fma"))) inline void skinny_columns(const float* x, const float* w, float* y, int64_t m,
                                                               int64_t k, int64_t n, int64_t n0, int64_t n1) {
  // Few weight rows per pass, so sweeping the tiles reads each of them as one sequential stream the prefetchers
  // follow; the rows' partial sums go back to `y` (in L2) between passes.
  constexpr int64_t kBlock = 16;
  for (int64_t k0 = 0; k0 < k; k0 += kBlock) {
    const int64_t k1 = std::min(k, k0 + kBlock);
    for (int64_t j = n0; j < n1; j += 16) {
      for (int64_t r = 0; r < m; r += 4) {
        const float* xr = x + r * k;
        float* yr = y + r * n + j;
        const bool accumulate = k0 > 0;
        switch (std::min<int64_t>(4, m - r)) {
          case 4:
            skinny_tile<4>(xr, k, w + j, n, yr, n, k0, k1, accumulate);
            break;
          case 3:
            skinny_tile<3>(xr, k, w + j, n, yr, n, k0, k1, accumulate);
            break;
          case 2:
            skinny_tile<2>(xr, k, w + j, n, yr, n, k0, k1, accumulate);
            break;
          default:
            skinny_tile<1>(xr, k, w + j, n, yr, n, k0, k1, accumulate);
            break;
        }
      }
    }
  }
}
#endif

}  // namespace detail

/// `bias + x @ weight` for `x` [m, k] with m <= kSkinnyMaxRows, `weight` [k, n] and `bias` [n] (undefined: none),
/// all float32 on the CPU, the weight contiguous, and no autograd graph to record; `std::nullopt` when these do not
/// hold or the CPU lacks AVX2/FMA, so the caller uses `torch::addmm`. Same result as `addmm` up to float rounding
/// order.
inline std::optional<torch::Tensor> skinny_addmm(const torch::Tensor& bias, const torch::Tensor& x,
                                                 const torch::Tensor& weight) {
#ifdef BAUKIT_SKINNY_MATMUL_X86
  const auto is_cpu_float = [](const torch::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
  };
  // Autograd must see the product, so anything that records a graph goes to libtorch.
  const bool records_graph = torch::GradMode::is_enabled() &&
                             (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (records_graph || !skinny_matmul_available() || x.dim() != 2 || weight.dim() != 2 || x.size(0) == 0 ||
      x.size(0) > kSkinnyMaxRows || !is_cpu_float(x) || !is_cpu_float(weight) ||
      (bias.defined() && !is_cpu_float(bias)) || x.size(1) != weight.size(0) || weight.stride(1) != 1 ||
      weight.stride(0) != weight.size(1) || weight.size(1) % 16 != 0)
    return std::nullopt;
  const auto input = x.contiguous();
  const int64_t m = input.size(0), k = input.size(1), n = weight.size(1);
  auto y = torch::empty({m, n}, input.options());
  const float* xp = input.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // Threads split the columns (in whole 16-column tiles), so each reads its own part of the weight once.
  at::parallel_for(0, n / 16, 8, [&](int64_t begin, int64_t end) {
    detail::skinny_columns(xp, wp, yp, m, k, n, begin * 16, end * 16);
  });
  if (bias.defined()) y.add_(bias);
  return y;
#else
  (void)bias, (void)x, (void)weight;
  return std::nullopt;
#endif
}

}  // namespace baukit::models
