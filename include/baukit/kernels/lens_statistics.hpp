/// @file lens_statistics.hpp
/// @brief The lens's per-cell statistics over a vocabulary, as kernels: from one decoded distribution (its
/// probabilities, or only its logits) and the final distribution at the same position, the top-k, the entropy,
/// the cross-entropy against the final distribution, and two ranks, in one or two passes over the vocabulary
/// (GCC/Clang vector extensions; 16 lanes where the CPU has AVX-512). Plain values in, plain values out.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace baukit::kernels {

/// What the statistics kernels compute for one decoded distribution p at one position, against the final
/// distribution q there.
struct DistributionStatistics {
  std::vector<int64_t> tokens;     ///< The top-k token ids, most probable first.
  std::vector<float> probs;        ///< Their probabilities.
  float entropy = 0;               ///< -sum p log p, in nats.
  float cross_entropy = 0;         ///< -sum q log p, in nats: KL(q || p) is this plus sum q log q.
  int64_t rank_of_final_top1 = 0;  ///< 1-based rank in p of q's top-1 token.
  int64_t rank_of_target = 0;      ///< 1-based rank in p of the target token; 0 when no target was given.
};

/// The `k` largest values offered so far and their indices, largest first, in a short sorted list: most values fail
/// the first comparison, against the k-th.
struct TopK {
  std::vector<float> values;  ///< largest first; slots no value filled hold the `lowest` given
  std::vector<int64_t> ids;   ///< their indices; -1 for unfilled slots

  /// Empty: `k` slots holding `lowest`.
  TopK(int64_t k, float lowest) : values(static_cast<std::size_t>(k), lowest), ids(static_cast<std::size_t>(k), -1) {}

  /// Takes `value` at `index` if it is larger than the k-th: offered in index order, ties keep the lower index
  /// first; NaN never enters.
  void offer(float value, int64_t index) {
    if (!(value > values.back())) return;
    auto at = values.size() - 1;
    for (; at > 0 && value > values[at - 1]; --at) {
      values[at] = values[at - 1];
      ids[at] = ids[at - 1];
    }
    values[at] = value;
    ids[at] = index;
  }
};

/// The `k` largest of `values[0, n)` and their indices, largest first, ties keeping the lower index first; NaN never
/// enters, and slots no value filled hold `lowest` and index -1.
inline std::pair<std::vector<float>, std::vector<int64_t>> top_k(const float* values, int64_t n, int64_t k,
                                                                 float lowest) {
  TopK best(k, lowest);
  for (int64_t v = 0; v < n; ++v) best.offer(values[v], v);
  return {std::move(best.values), std::move(best.ids)};
}

/// The statistics from the probabilities `p` [vocab] and the final distribution `q` [vocab] at the same
/// position: top-k, entropy, ranks, and `-sum q log p` in `cross_entropy` (KL(q || p) adds `sum q log q`).
/// With `logits` (when `p` is their softmax), log p is `logits - logsumexp`, with the logsumexp recovered from the
/// most probable token: no logarithm per entry. Without them, probabilities below FLT_MIN count as FLT_MIN inside
/// logarithms. Ties in top-k keep the lower token id first.
inline void cell_statistics(const float* __restrict p, const float* __restrict logits, const float* __restrict q,
                            int64_t vocab, int64_t final_top1, int64_t target, int64_t k, DistributionStatistics& out) {
  auto [top_p, top_id] = top_k(p, vocab, k, -1.0f);
  out.tokens = std::move(top_id);
  out.probs = std::move(top_p);
  const float p_final = p[final_top1], p_target = target >= 0 ? p[target] : 0.0f;
  int64_t above_final = 0, above_target = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    above_final += p[v] > p_final ? 1 : 0;
    above_target += p[v] > p_target ? 1 : 0;
  }
  // Entropy -sum p log p and cross-entropy -sum q log p, summed in eight lanes (vectorisable, and more exact).
  constexpr int kLanes = 8;
  float p_log_p[kLanes] = {}, q_log_p[kLanes] = {};
  if (logits && out.tokens[0] >= 0 && out.probs[0] > 0) {  // (NaN probabilities leave no top token)
    const double lse = static_cast<double>(logits[out.tokens[0]]) - std::log(static_cast<double>(out.probs[0]));
    const auto shift = static_cast<float>(lse);
    int64_t v = 0;
    for (; v + kLanes <= vocab; v += kLanes)
      for (int lane = 0; lane < kLanes; ++lane) {
        const float log_p = logits[v + lane] - shift;
        p_log_p[lane] += p[v + lane] * log_p;
        q_log_p[lane] += q[v + lane] * log_p;
      }
    for (; v < vocab; ++v) {
      p_log_p[0] += p[v] * (logits[v] - shift);
      q_log_p[0] += q[v] * (logits[v] - shift);
    }
  } else {
    for (int64_t v = 0; v < vocab; ++v) {
      const float log_p = std::log(std::max(p[v], std::numeric_limits<float>::min()));
      p_log_p[v % kLanes] += p[v] * log_p;
      q_log_p[v % kLanes] += q[v] * log_p;
    }
  }
  double entropy = 0, cross = 0;
  for (int lane = 0; lane < kLanes; ++lane) {
    entropy -= p_log_p[lane];
    cross -= q_log_p[lane];
  }
  out.entropy = static_cast<float>(entropy);
  out.cross_entropy = static_cast<float>(cross);
  out.rank_of_final_top1 = above_final + 1;
  out.rank_of_target = target >= 0 ? above_target + 1 : 0;
}

/// Four floats as one value (an SSE register, which every x86-64 CPU has), by GCC's and Clang's vector extensions:
/// the statistics loop is written with them, so it is vectorised whatever the optimiser's cost model decides.
using Floats4 = float __attribute__((vector_size(16)));
/// Four 32-bit ints; see `Floats4`.
using Ints4 = int32_t __attribute__((vector_size(16)));
/// Sixteen floats (an AVX-512 register), for the statistics compiled for AVX-512; see `Floats4`.
using Floats16 = float __attribute__((vector_size(64)));
/// Sixteen 32-bit ints; see `Floats16`.
using Ints16 = int32_t __attribute__((vector_size(64)));

/// The int vector of the same lanes as the float vector `F`.
template <class F>
using IntsOf = std::conditional_t<std::is_same_v<F, Floats16>, Ints16, Ints4>;

/// e^x in place for x <= 0 (logits minus their maximum), for a `float`, `Floats4` or `Floats16` (by reference: a
/// function taking or returning a Floats16 by value would have another calling convention with and without AVX-512):
/// x = n ln 2 + r with |r| <= ln 2 / 2 (ln 2 in two parts, as Cody and Waite), e^r by its Taylor series to degree 7,
/// times 2^n built in the exponent bits; within 2 float ulps of `std::exp`. Below -87 (and for NaN) it gives e^-87:
/// smaller values underflow float's normal range and would not change a sum.
template <class F>
[[gnu::always_inline]] inline void exp_nonpositive_in_place(F& x) {
  x = x > -87.0f ? x : F{} - 87.0f;
  const F n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // x / ln 2 rounded to the nearest integer
  const F r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  const F p =
      1.0f +
      r * (1.0f +
           r * (0.5f + r * (0.166666672f +
                            r * (0.0416666679f + r * (0.00833333377f + r * (0.00138888892f + r * 1.98412701e-4f))))));
  if constexpr (std::is_same_v<F, float>)
    x = p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  else
    x = p * (F)((__builtin_convertvector(n, IntsOf<F>) + 127) << 23);  // a vector cast keeps the bits
}

/// e^x for x <= 0; see `exp_nonpositive_in_place`.
inline float exp_nonpositive(float x) {
  exp_nonpositive_in_place(x);
  return x;
}

/// `top_k(values, n, k, -inf)` for logits: blocks of 64 whose largest value does not beat the k-th so far (nearly
/// all of them) are passed over by one vector comparison.
template <class F>
[[gnu::always_inline]] inline std::pair<std::vector<float>, std::vector<int64_t>> top_k_logits(const float* values,
                                                                                               int64_t n, int64_t k) {
  constexpr int64_t kLanes = sizeof(F) / sizeof(float), kBlock = 64;
  const float lowest = -std::numeric_limits<float>::infinity();
  TopK best(k, lowest);
  int64_t v = 0;
  for (; v + kBlock <= n; v += kBlock) {
    F block_max = F{} + lowest;
    for (int64_t i = 0; i < kBlock; i += kLanes) {
      F x;
      std::memcpy(&x, values + v + i, sizeof x);
      block_max = x > block_max ? x : block_max;  // a NaN lane compares false and is dropped
    }
    float largest = lowest;
    for (int64_t lane = 0; lane < kLanes; ++lane) largest = block_max[lane] > largest ? block_max[lane] : largest;
    if (largest > best.values.back())
      for (int64_t i = v; i < v + kBlock; ++i) best.offer(values[i], i);
  }
  for (; v < n; ++v) best.offer(values[v], v);
  return {std::move(best.values), std::move(best.ids)};
}

/// `cell_statistics_from_logits` with vectors of type `F` (`Floats4` or `Floats16`).
template <class F>
[[gnu::always_inline]] inline void cell_statistics_lanes(const float* __restrict z, const float* __restrict q,
                                                         int64_t vocab, int64_t final_top1, int64_t target, int64_t k,
                                                         DistributionStatistics& out) {
  using I = IntsOf<F>;
  constexpr int64_t kLanes = sizeof(F) / sizeof(float);
  auto [top_z, top_id] = top_k_logits<F>(z, vocab, k);
  // With d = z - max and e = e^d: sums of e, e d, q d and q, and the ranks; kLanes entries at a time, summed in
  // float over 32 steps and then in double (50k terms in float alone would lose ~1e-5).
  const float max = top_z[0], z_final = z[final_top1], z_target = target >= 0 ? z[target] : 0.0f;
  double s = 0, sed = 0, sqd = 0, sq = 0;
  int64_t rank_final = 1, rank_target = 1, nan_count = 0;
  F s_lanes{}, sed_lanes{}, sqd_lanes{}, sq_lanes{};
  I above_final_lanes{}, above_target_lanes{}, nan_lanes{};
  const auto flush = [&] {
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      s += s_lanes[lane], sed += sed_lanes[lane], sqd += sqd_lanes[lane], sq += sq_lanes[lane];
      rank_final += above_final_lanes[lane], rank_target += above_target_lanes[lane], nan_count += nan_lanes[lane];
    }
    s_lanes = sed_lanes = sqd_lanes = sq_lanes = F{};
    above_final_lanes = above_target_lanes = nan_lanes = I{};
  };
  int64_t v = 0;
  for (int steps = 0; v + kLanes <= vocab; v += kLanes) {
    F zv, qv;
    std::memcpy(&zv, z + v, sizeof zv);
    std::memcpy(&qv, q + v, sizeof qv);
    const F d = zv - max;
    F e = d;
    exp_nonpositive_in_place(e);
    s_lanes += e;
    sed_lanes += e * d;
    sqd_lanes += qv * d;
    sq_lanes += qv;
    above_final_lanes -= zv > z_final;  // (a true comparison is -1)
    above_target_lanes -= zv > z_target;
    nan_lanes -= zv != zv;
    if (++steps % 32 == 0) flush();
  }
  flush();
  for (; v < vocab; ++v) {
    const float d = z[v] - max, e = exp_nonpositive(d);
    s += e, sed += e * d, sqd += q[v] * d, sq += q[v];
    rank_final += z[v] > z_final, rank_target += z[v] > z_target, nan_count += z[v] != z[v];
  }
  const double log_s = std::log(s);  // logsumexp(z) = max + log s
  const bool valid = nan_count == 0 && std::isfinite(max);
  out.tokens = std::move(top_id);
  out.probs.resize(static_cast<std::size_t>(k));
  for (std::size_t i = 0; i < out.probs.size(); ++i)
    out.probs[i] = valid ? static_cast<float>(std::exp(static_cast<double>(top_z[i]) - max - log_s))
                         : std::numeric_limits<float>::quiet_NaN();
  // -sum p log p = log s - sum e d / s;  -sum q log p = log s sum q - sum q d.
  out.entropy = valid ? static_cast<float>(log_s - sed / s) : std::numeric_limits<float>::quiet_NaN();
  out.cross_entropy = valid ? static_cast<float>(log_s * sq - sqd) : std::numeric_limits<float>::quiet_NaN();
  out.rank_of_final_top1 = rank_final;
  out.rank_of_target = target >= 0 ? rank_target : 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
/// `cell_statistics_lanes<Floats16>` compiled for AVX-512; call only where the CPU has it.
__attribute__((target("avx512f"))) inline void cell_statistics_avx512(const float* __restrict z,
                                                                      const float* __restrict q, int64_t vocab,
                                                                      int64_t final_top1, int64_t target, int64_t k,
                                                                      DistributionStatistics& out) {
  cell_statistics_lanes<Floats16>(z, q, vocab, final_top1, target, k, out);
}
#endif

/// The statistics from the logits `z` [vocab], the decoder's softmax not run: the same numbers as
/// `cell_statistics` on `softmax(z)` (top-k by logit is top-k by probability; log p = z - logsumexp), in two passes
/// and without a probability tensor, 16 entries at a time on a CPU with AVX-512, else 4. A NaN logit makes the
/// probabilities, entropy and divergence NaN.
inline void cell_statistics_from_logits(const float* __restrict z, const float* __restrict q, int64_t vocab,
                                        int64_t final_top1, int64_t target, int64_t k, DistributionStatistics& out) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) return cell_statistics_avx512(z, q, vocab, final_top1, target, k, out);
#endif
  cell_statistics_lanes<Floats4>(z, q, vocab, final_top1, target, k, out);
}

}  // namespace baukit::kernels
