/// @file skinny.hpp
/// @brief Products of a few rows of `x` (a short prompt, one generated token) with a large weight, reading every
/// weight byte once. General BLAS kernels pack and re-stream the weight for such products and reach a fraction of
/// the memory bandwidth (measured here: OpenBLAS 6 GB/s at 8 rows against 34 GB/s); these products are bound by
/// weight bytes, so these kernels keep the rows' accumulators in registers and stream the weight once. x86-64
/// AVX-512 or AVX2/FMA, chosen at run time, in builds by GCC (the kernels' target regions use GCC's pragmas); other
/// compilers and CPUs fall back to libtorch.
#pragma once

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define BAUKIT_SKINNY_MATMUL_X86 1
#endif

namespace baukit::kernels {

/// The most rows of `x` the skinny kernels take; larger products are compute-bound and go to BLAS.
inline constexpr int64_t kSkinnyMaxRows = 16;

namespace detail {

#ifdef BAUKIT_SKINNY_MATMUL_X86
// The kernels (skinny_kernels.inc) are compiled once per instruction set: each region below gives them a vector
// type and the target the intrinsics need.
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
namespace avx512 {
/// 16 floats in a zmm register; 32 registers hold 8 rows x 2 vectors of accumulators.
struct Vec {
  using type = __m512;
  static constexpr int kWidth = 16, kRows = 8, kDotColumns = 3;
  static type zero() { return _mm512_setzero_ps(); }
  static type load(const float* p) { return _mm512_loadu_ps(p); }
  /// 16 BF16 values as floats: each is the upper half of its float's bits.
  static type load(const c10::BFloat16* p) {
    const auto bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
  }
  /// 16 F16 values as floats.
  static type load(const c10::Half* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, type v) { _mm512_storeu_ps(p, v); }
  static type broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static type fmadd(type a, type b, type c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(type v) { return _mm512_reduce_add_ps(v); }
};
#include <baukit/kernels/skinny_kernels.inc>
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
/// 8 floats in a ymm register; 16 registers hold 4 rows x 2 vectors of accumulators.
struct Vec {
  using type = __m256;
  static constexpr int kWidth = 8, kRows = 4, kDotColumns = 2;
  static type zero() { return _mm256_setzero_ps(); }
  static type load(const float* p) { return _mm256_loadu_ps(p); }
  /// 8 BF16 values as floats: each is the upper half of its float's bits.
  static type load(const c10::BFloat16* p) {
    const auto bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
  }
  /// 8 F16 values as floats.
  static type load(const c10::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static void store(float* p, type v) { _mm256_storeu_ps(p, v); }
  static type broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static type fmadd(type a, type b, type c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(type v) {
    const __m128 quads = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 pairs = _mm_add_ps(quads, _mm_movehl_ps(quads, quads));
    return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
  }
};
#include <baukit/kernels/skinny_kernels.inc>
}  // namespace avx2
#pragma GCC pop_options
#endif

/// The instruction sets the kernels are built for, best first.
enum class SkinnyIsa { none, avx2, avx512 };

/// The best instruction set this CPU runs (checked once).
inline SkinnyIsa skinny_isa() {
#ifdef BAUKIT_SKINNY_MATMUL_X86
  static const SkinnyIsa isa =
      __builtin_cpu_supports("avx512f") ? SkinnyIsa::avx512
      : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")
          ? SkinnyIsa::avx2
          : SkinnyIsa::none;
  return isa;
#else
  return SkinnyIsa::none;
#endif
}

/// Whether `x @ weight (+ bias)` is a float32 product of dense 2-D CPU tensors (`bias` undefined or float32 on the
/// CPU) that no autograd graph must record (autograd must see the product, so that goes to libtorch): what every
/// hand-chosen kernel here and in onednn.hpp needs. With `half_weights`, the weight (and bias) may also be BF16 or
/// F16.
inline bool plain_float_product(const torch::Tensor& bias, const torch::Tensor& x, const torch::Tensor& weight,
                                bool half_weights = false) {
  const auto is_cpu = [](const torch::Tensor& t, bool half) {
    const auto type = t.scalar_type();
    return t.layout() == torch::kStrided && t.device().is_cpu() &&
           (type == torch::kFloat32 || (half && (type == torch::kBFloat16 || type == torch::kHalf)));
  };
  const bool records_graph = torch::GradMode::is_enabled() &&
                             (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  return !records_graph && x.dim() == 2 && weight.dim() == 2 && is_cpu(x, false) && is_cpu(weight, half_weights) &&
         (!bias.defined() || is_cpu(bias, half_weights));
}

/// Whether `x` [m, k] and a weight can go to a skinny kernel: a `plain_float_product` with a few rows, the weight
/// contiguous, on a CPU with a kernel. With `half_weights`, a BF16 or F16 weight (and bias) qualifies too: the
/// `out_in` kernels widen it as they load it.
inline bool skinny_applies(const torch::Tensor& bias, const torch::Tensor& x, const torch::Tensor& weight,
                           bool half_weights = false) {
  return skinny_isa() != SkinnyIsa::none && plain_float_product(bias, x, weight, half_weights) && x.size(0) > 0 &&
         x.size(0) <= kSkinnyMaxRows && weight.is_contiguous();
}

/// Runs `columns(x, w, y, m, k, n, begin, end)` for the output columns split over threads in whole `step`s, so
/// each thread reads its own part of the weight (of element type `Weight`) once, then adds `bias`.
template <class Weight, class Columns>
torch::Tensor skinny_product(const torch::Tensor& bias, const torch::Tensor& x, const torch::Tensor& weight, int64_t n,
                             int64_t step, Columns columns) {
  const auto input = x.contiguous();
  const int64_t m = input.size(0), k = input.size(1);
  auto y = torch::empty({m, n}, input.options());
  const float* xp = input.data_ptr<float>();
  const auto* wp = static_cast<const Weight*>(weight.data_ptr());
  float* yp = y.data_ptr<float>();
  const int64_t steps = (n + step - 1) / step;
  at::parallel_for(0, steps, 8, [&](int64_t begin, int64_t end) {
    columns(xp, wp, yp, m, k, n, begin * step, std::min(n, end * step));
  });
  if (bias.defined()) y.add_(bias);
  return y;
}

}  // namespace detail

/// Whether a skinny kernel runs here: an x86-64 build by GCC on a CPU with AVX-512, or AVX2 and FMA.
inline bool skinny_matmul_available() {
  return detail::skinny_isa() != detail::SkinnyIsa::none;
}

/// `bias + x @ weight` for `x` [m, k] with m <= kSkinnyMaxRows, `weight` [k, n] (Conv1D's layout, n a multiple
/// of 16) and `bias` [n] (undefined: none), all float32 on the CPU, the weight contiguous, and no autograd graph
/// to record; `std::nullopt` when these do not hold or the CPU has no kernel, so the caller uses `torch::addmm`.
/// Same result as `addmm` up to float rounding order.
inline std::optional<torch::Tensor> skinny_addmm(const torch::Tensor& bias, const torch::Tensor& x,
                                                 const torch::Tensor& weight) {
  if (!detail::skinny_applies(bias, x, weight) || x.size(1) != weight.size(0) || weight.size(1) % 16 != 0)
    return std::nullopt;
#ifdef BAUKIT_SKINNY_MATMUL_X86
  if (detail::skinny_isa() == detail::SkinnyIsa::avx512)
    return detail::skinny_product<float>(bias, x, weight, weight.size(1), 16, detail::avx512::in_out_columns);
  return detail::skinny_product<float>(bias, x, weight, weight.size(1), 8, detail::avx2::in_out_columns);
#else
  return std::nullopt;
#endif
}

/// `x @ weight.T + bias` for `x` [m, k] with m <= kSkinnyMaxRows, `weight` [n, k] (Linear's layout, k a multiple
/// of 16) and `bias` [n] (undefined: none), under the same conditions as `skinny_addmm` except that the weight and
/// bias may also be BF16 or F16 (as checkpoints store them): each weight is widened to float32 in registers as it
/// is read, so the product reads the weight's own bytes once and never upcasts it whole (the same values as
/// `torch::linear` on the upcast weight, up to float rounding order). `std::nullopt` when the conditions do not
/// hold, so the caller uses `torch::linear`.
inline std::optional<torch::Tensor> skinny_linear(const torch::Tensor& x, const torch::Tensor& weight,
                                                  const torch::Tensor& bias) {
  if (!detail::skinny_applies(bias, x, weight, /*half_weights=*/true) || x.size(1) != weight.size(1) ||
      weight.size(1) % 16 != 0)
    return std::nullopt;
#ifdef BAUKIT_SKINNY_MATMUL_X86
  // Threads split the output features in steps of 48, a multiple of every kernel's features per pass.
  const auto product = [&]<class Weight>(Weight*) {
    if (detail::skinny_isa() == detail::SkinnyIsa::avx512)
      return detail::skinny_product<Weight>(bias, x, weight, weight.size(0), 48,
                                            detail::avx512::out_in_columns<Weight>);
    return detail::skinny_product<Weight>(bias, x, weight, weight.size(0), 48, detail::avx2::out_in_columns<Weight>);
  };
  if (weight.scalar_type() == torch::kBFloat16) return product(static_cast<c10::BFloat16*>(nullptr));
  if (weight.scalar_type() == torch::kHalf) return product(static_cast<c10::Half*>(nullptr));
  return product(static_cast<float*>(nullptr));
#else
  return std::nullopt;
#endif
}

}  // namespace baukit::kernels
