/// @file lens.hpp
/// @brief The logit lens: the residual stream after every block (and, optionally, after every attention),
/// decoded through the model's final norm and unembedding; or the same for each layer's delta. Per cell: the
/// top-k tokens and probabilities, the stream's magnitude, the entropy, the KL divergence from the model's
/// final distribution, and the ranks of the final top-1 token and of a chosen target token.
///
/// @code
/// auto tok = baukit::Tokenizer::from_pretrained(dir);
/// auto model = baukit::models::GPT2LMHeadModel::from_pretrained(dir);
/// torch::Tensor hs = baukit::get_hidden_states(*model, tok, "Hello, my name is also");   // [layers, tokens, n_embd]
/// baukit::LensResult lens = baukit::logit_lens(*model, tok.encode(". The Space Needle is located in"));
/// std::string top1 = tok.decode(lens.lens.cells[20][7].tokens[0]);
/// @endcode
#pragma once

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <baukit/decoder.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/tokenizer.hpp>
#include <baukit/trace.hpp>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace baukit {

/// The stream before block 0 and after each block: `[layers + 1, tokens, width]` for a batch of one, as the
/// seed's `get_hidden_states` (rows 1..) and `get_hidden_state_deltas` (all rows) trace them. With
/// `attention_rows`, the stream after each block's attention (its input plus the attention output) is
/// interleaved before that block's row; `labels` receives each row's name, and `output` the model's output (its
/// logits, `[1, tokens, vocab]`).
inline torch::Tensor residual_stream(models::CausalLM& model, const std::vector<int64_t>& ids,
                                     bool attention_rows = false, std::vector<std::string>* labels = nullptr,
                                     torch::Tensor* output = nullptr) {
  if (ids.empty()) throw std::invalid_argument("lens: the prompt has no tokens");
  if (static_cast<int64_t>(ids.size()) > model.max_positions())
    throw std::invalid_argument(
        fmt::format("lens: the prompt has {} tokens; the model takes at most {}", ids.size(), model.max_positions()));
  const auto layout = model.lens_layout();
  if (attention_rows && layout.attention.size() != layout.blocks.size())
    throw std::invalid_argument(
        fmt::format("lens: the {} family has no residual stream point after attention", model.model_type()));
  std::vector<std::string> names{layout.embedding};
  names.insert(names.end(), layout.blocks.begin(), layout.blocks.end());
  if (attention_rows) names.insert(names.end(), layout.attention.begin(), layout.attention.end());
  torch::NoGradGuard no_grad;
  TraceDict trace(model.module(), names);
  const auto input = torch::tensor(ids, torch::kLong).unsqueeze(0).to(model.device());
  auto logits = model.forward(input, {}, nullptr);
  if (output) *output = std::move(logits);
  std::vector<torch::Tensor> rows{trace[layout.embedding].output()[0]};
  if (labels) *labels = {"embed"};
  for (std::size_t l = 0; l < layout.blocks.size(); ++l) {
    if (attention_rows) {
      rows.push_back(rows.back() + trace[layout.attention[l]].output()[0]);  // the block's input plus attention
      if (labels) labels->push_back(fmt::format("{} attn", l));
    }
    rows.push_back(trace[layout.blocks[l]].output()[0]);
    if (labels) labels->push_back(std::to_string(l));
  }
  return torch::stack(rows);
}

/// The seed's `get_hidden_states`: every block's output, `[layers, tokens, width]`.
inline torch::Tensor get_hidden_states(models::CausalLM& model, const Tokenizer& tokenizer, const std::string& prefix) {
  return residual_stream(model, tokenizer.encode(prefix)).slice(0, 1);
}

/// The seed's `get_hidden_state_deltas`: `h[l] - h[l-1]`, with `h[-1]` the output of the embedding
/// (`transformer.drop`).
inline torch::Tensor get_hidden_state_deltas(models::CausalLM& model, const Tokenizer& tokenizer,
                                             const std::string& prefix) {
  const auto stream = residual_stream(model, tokenizer.encode(prefix));
  return stream.slice(0, 1) - stream.slice(0, 0, -1);
}

/// One cell of the lens: a layer (row) at a token position.
struct LensCell {
  std::vector<int64_t> tokens;     ///< The top-k token ids, most probable first.
  std::vector<float> probs;        ///< Their probabilities.
  float magnitude = 0;             ///< ‖state‖, normalised as in the seed (see `logit_lens`).
  float entropy = 0;               ///< Entropy of the decoded distribution, in nats.
  float kl_to_final = 0;           ///< KL(final ‖ this) in nats: how far from the model's output distribution.
  int64_t rank_of_final_top1 = 0;  ///< 1-based rank here of the model's final top-1 token at this position.
  int64_t rank_of_target = 0;      ///< 1-based rank of the target token; 0 when no target was given.
};

/// A grid of cells: `cells[row][position]`, with a label per row.
struct LensGrid {
  std::vector<std::string> rows;  ///< Row labels: layer numbers ("0", "1", ...; "3 attn" for sub-block rows).
  std::vector<std::vector<LensCell>> cells;  ///< `[row][position]`.
};

/// The lens and the delta lens for one prompt.
struct LensResult {
  std::vector<int64_t> ids;  ///< The prompt's token ids.
  int64_t topk = 5;          ///< Tokens kept per cell.
  int64_t target = -1;       ///< The target token, or -1.
  LensGrid lens;             ///< Decoded residual stream after each block.
  LensGrid delta_lens;       ///< Decoded change made by each block (row 0: block 0's output minus the embedding).
};

/// What `logit_lens` computes and how.
struct LensOptions {
  /// Tokens kept per cell.
  TORCH_ARG(int64_t, topk) = 5;
  /// A token whose rank to report in every cell (-1: none).
  TORCH_ARG(int64_t, target) = -1;
  /// Also rows for the stream after each block's attention, before its MLP.
  TORCH_ARG(bool, attention_rows) = false;
  /// The most memory one chunk of decoded probabilities may take; layers are decoded in chunks this size.
  TORCH_ARG(int64_t, chunk_bytes) = int64_t{256} << 20;
};

/// Called as decoding proceeds: (rows done, rows in all).
using LensProgress = std::function<void(int64_t done, int64_t total)>;

namespace detail {

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

/// One cell's statistics from its probabilities `p` [vocab] and the final distribution `q` [vocab] at the same
/// position: top-k, entropy, ranks, and `-sum q log p` in `kl_to_final` (the caller adds `sum q log q`).
/// With `logits` (when `p` is their softmax), log p is `logits - logsumexp`, with the logsumexp recovered from the
/// most probable token: no logarithm per entry. Without them, probabilities below FLT_MIN count as FLT_MIN inside
/// logarithms. Ties in top-k keep the lower token id first.
inline void cell_statistics(const float* __restrict p, const float* __restrict logits, const float* __restrict q,
                            int64_t vocab, int64_t final_top1, int64_t target, int64_t k, LensCell& cell) {
  auto [top_p, top_id] = top_k(p, vocab, k, -1.0f);
  cell.tokens = std::move(top_id);
  cell.probs = std::move(top_p);
  const float p_final = p[final_top1], p_target = target >= 0 ? p[target] : 0.0f;
  int64_t above_final = 0, above_target = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    above_final += p[v] > p_final ? 1 : 0;
    above_target += p[v] > p_target ? 1 : 0;
  }
  // Entropy -sum p log p and cross-entropy -sum q log p, summed in eight lanes (vectorisable, and more exact).
  constexpr int kLanes = 8;
  float p_log_p[kLanes] = {}, q_log_p[kLanes] = {};
  if (logits && cell.tokens[0] >= 0 && cell.probs[0] > 0) {  // (NaN probabilities leave no top token)
    const double lse = static_cast<double>(logits[cell.tokens[0]]) - std::log(static_cast<double>(cell.probs[0]));
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
  cell.entropy = static_cast<float>(entropy);
  cell.kl_to_final = static_cast<float>(cross);
  cell.rank_of_final_top1 = above_final + 1;
  cell.rank_of_target = target >= 0 ? above_target + 1 : 0;
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
                                                         LensCell& cell) {
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
  cell.tokens = std::move(top_id);
  cell.probs.resize(static_cast<std::size_t>(k));
  for (std::size_t i = 0; i < cell.probs.size(); ++i)
    cell.probs[i] = valid ? static_cast<float>(std::exp(static_cast<double>(top_z[i]) - max - log_s))
                          : std::numeric_limits<float>::quiet_NaN();
  // -sum p log p = log s - sum e d / s;  -sum q log p = log s sum q - sum q d.
  cell.entropy = valid ? static_cast<float>(log_s - sed / s) : std::numeric_limits<float>::quiet_NaN();
  cell.kl_to_final = valid ? static_cast<float>(log_s * sq - sqd) : std::numeric_limits<float>::quiet_NaN();
  cell.rank_of_final_top1 = rank_final;
  cell.rank_of_target = target >= 0 ? rank_target : 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
/// `cell_statistics_lanes<Floats16>` compiled for AVX-512; call only where the CPU has it.
__attribute__((target("avx512f"))) inline void cell_statistics_avx512(const float* __restrict z,
                                                                      const float* __restrict q, int64_t vocab,
                                                                      int64_t final_top1, int64_t target, int64_t k,
                                                                      LensCell& cell) {
  cell_statistics_lanes<Floats16>(z, q, vocab, final_top1, target, k, cell);
}
#endif

/// One cell's statistics from its logits `z` [vocab], the decoder's softmax not run: the same numbers as
/// `cell_statistics` on `softmax(z)` (top-k by logit is top-k by probability; log p = z - logsumexp), in two passes
/// and without a probability tensor, 16 entries at a time on a CPU with AVX-512, else 4. A NaN logit makes the
/// probabilities, entropy and divergence NaN.
inline void cell_statistics_from_logits(const float* __restrict z, const float* __restrict q, int64_t vocab,
                                        int64_t final_top1, int64_t target, int64_t k, LensCell& cell) {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  if (avx512) return cell_statistics_avx512(z, q, vocab, final_top1, target, k, cell);
#endif
  cell_statistics_lanes<Floats4>(z, q, vocab, final_top1, target, k, cell);
}

/// Runs `decoder` on `states`, returning its output and, when its last module is a softmax over the last
/// dimension, that softmax's input (the logits). Every module runs as in `decoder->forward`, hooks included, except
/// such a last softmax with no hook attached: it is skipped (the output is undefined), since the statistics come
/// from the logits and a `[rows, vocab]` probability tensor would only cost time and memory.
inline std::pair<torch::Tensor, torch::Tensor> decode_with_logits(torch::nn::Sequential& decoder,
                                                                  const torch::Tensor& states) {
  torch::Tensor x = states, logits;
  const auto last = decoder->size() - 1;
  const auto* softmax = decoder->size() ? decoder->ptr(last)->as<torch::nn::SoftmaxImpl>() : nullptr;
  const auto* hookable = decoder->size() ? dynamic_cast<const Hookable*>(decoder->ptr(last).get()) : nullptr;
  std::size_t index = 0;
  for (auto& module : *decoder) {
    if (index++ == last && softmax && (softmax->options.dim() == -1 || softmax->options.dim() == x.dim() - 1)) {
      logits = x;
      if (!hookable || hookable->num_forward_hooks() == 0) return {torch::Tensor(), logits};
    }
    x = module.forward<torch::Tensor>(x);
  }
  return {x, logits};
}

}  // namespace detail

/// Decodes each of `views` (`[rows, tokens, width]` each, e.g. the lens's states and the delta lens's deltas)
/// through `decoder` (which must return probabilities), keeping per cell only what is shown. All views go through
/// the decoder together, in chunks of rows of at most `options.chunk_bytes()` of decoded values, so the
/// vocabulary projection is one large product per chunk. `final_probs` `[tokens, vocab]` is the model's output
/// distribution. Magnitudes are ‖state‖ divided by the view's maximum over rows and tokens 1.. (over all tokens for
/// a one-token prompt). `progress` is called after each chunk with (rows done, rows in all views).
inline std::vector<LensGrid> decode_views(torch::nn::Sequential& decoder, const std::vector<torch::Tensor>& views,
                                          const torch::Tensor& final_probs, const LensOptions& options,
                                          const LensProgress& progress = {}) {
  torch::NoGradGuard no_grad;
  if (views.empty()) throw std::invalid_argument("lens: no states to decode");
  const auto states = views.size() == 1 ? views[0] : torch::cat(views);
  const int64_t rows = states.size(0), tokens = states.size(1), vocab = final_probs.size(-1);
  if (options.topk() < 1 || options.topk() > vocab)
    throw std::invalid_argument(fmt::format("lens: topk {} is outside 1..{}", options.topk(), vocab));
  if (options.target() >= vocab)
    throw std::invalid_argument(fmt::format("lens: target token {} is outside the vocabulary", options.target()));
  const int64_t chunk = std::max<int64_t>(1, options.chunk_bytes() / std::max<int64_t>(1, tokens * vocab * 4));
  const auto norms = states.norm(2, -1).to(torch::kFloat32).cpu();
  const auto norm_at = norms.accessor<float, 2>();
  // Each stacked row's view, and each view's magnitude scale.
  std::vector<std::size_t> view_of;
  std::vector<int64_t> first_row;
  std::vector<float> scale;
  for (std::size_t i = 0; i < views.size(); ++i) {
    first_row.push_back(static_cast<int64_t>(view_of.size()));
    view_of.insert(view_of.end(), static_cast<std::size_t>(views[i].size(0)), i);
    const auto view_norms = norms.slice(0, first_row.back(), first_row.back() + views[i].size(0));
    scale.push_back((tokens > 1 ? view_norms.slice(1, 1) : view_norms).max().item<float>());
  }
  const int64_t k = options.topk();
  const auto final_cpu = final_probs.to(torch::kFloat32).cpu().contiguous();
  const auto final_top1 = final_cpu.argmax(-1);                                             // [tokens]
  const auto final_qlogq = torch::xlogy(final_cpu, final_cpu).sum(-1).to(torch::kFloat32);  // [tokens]: sum q log q
  std::vector<LensGrid> grids(views.size());
  for (std::size_t i = 0; i < views.size(); ++i) {
    grids[i].cells.assign(static_cast<std::size_t>(views[i].size(0)),
                          std::vector<LensCell>(static_cast<std::size_t>(tokens)));
    for (int64_t row = 0; row < views[i].size(0); ++row) grids[i].rows.push_back(std::to_string(row));
  }
  for (int64_t begin = 0; begin < rows; begin += chunk) {
    const int64_t end = std::min(rows, begin + chunk);
    auto [decoded, decoded_logits] = detail::decode_with_logits(decoder, states.slice(0, begin, end));
    const auto as_rows = [&](const torch::Tensor& t) {  // [(chunk * tokens), vocab], float32 on the CPU
      return t.defined() ? t.to(torch::kFloat32).reshape({-1, vocab}).cpu().contiguous() : t;
    };
    const auto probs = as_rows(decoded), logits = as_rows(decoded_logits);
    const float* p = probs.defined() ? probs.data_ptr<float>() : nullptr;
    const float* z = logits.defined() ? logits.data_ptr<float>() : nullptr;
    // Each (layer, token) row's statistics in one pass over its values, rows spread over the threads.
    at::parallel_for(0, (end - begin) * tokens, 4, [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) {
        const int64_t row = begin + i / tokens, t = i % tokens;
        const auto view = view_of[static_cast<std::size_t>(row)];
        auto& cell = grids[view].cells[static_cast<std::size_t>(row - first_row[view])][static_cast<std::size_t>(t)];
        const float* q = final_cpu.data_ptr<float>() + t * vocab;
        const int64_t top1 = final_top1.data_ptr<int64_t>()[t];
        if (p)
          detail::cell_statistics(p + i * vocab, z ? z + i * vocab : nullptr, q, vocab, top1, options.target(), k,
                                  cell);
        else
          detail::cell_statistics_from_logits(z + i * vocab, q, vocab, top1, options.target(), k, cell);
        cell.kl_to_final = std::max(0.0f, final_qlogq.data_ptr<float>()[t] + cell.kl_to_final);
        cell.magnitude = norm_at[row][t] / scale[view];
      }
    });
    if (progress) progress(end, rows);
  }
  return grids;
}

/// Decodes one view `states` `[rows, tokens, width]`; see `decode_views`.
inline LensGrid decode_states(torch::nn::Sequential& decoder, const torch::Tensor& states,
                              const torch::Tensor& final_probs, const LensOptions& options,
                              const LensProgress& progress = {}) {
  return std::move(decode_views(decoder, {states}, final_probs, options, progress).front());
}

/// Thrown by `logit_lens` when the model's residual stream or output distribution holds NaN or infinity (bad
/// weights, or an overflow); the message names the first row where it appears.
class NonFiniteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The seed's lens and delta lens for the prompt `ids`, with the statistics of `LensCell`. Throws `NonFiniteError`
/// when the residual stream or the model's output holds NaN or infinity.
inline LensResult logit_lens(models::CausalLM& model, const std::vector<int64_t>& ids, const LensOptions& options = {},
                             const LensProgress& progress = {}) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> labels;
  torch::Tensor logits;
  const auto stream = residual_stream(model, ids, options.attention_rows(), &labels, &logits);
  const auto finite_rows = torch::isfinite(stream).flatten(1).all(1).cpu();
  for (int64_t row = 0; row < finite_rows.size(0); ++row)
    if (!finite_rows[row].item<bool>())
      throw NonFiniteError(fmt::format("lens: the residual stream at row '{}' holds NaN or infinity", labels[row]));
  auto decoder = make_decoder(model);
  // The model's output distribution: softmax(lm_head(ln_f(last block))), the decoder's math on the last row, already
  // computed by the forward.
  const auto final_probs = torch::softmax(logits[0].to(torch::kFloat32), -1);
  if (!torch::isfinite(final_probs).all().item<bool>())
    throw NonFiniteError("lens: the model's output distribution holds NaN or infinity");
  LensResult result;
  result.ids = ids;
  result.topk = options.topk();
  result.target = options.target();
  const auto states = stream.slice(0, 1);
  const auto deltas = stream.slice(0, 1) - stream.slice(0, 0, -1);
  if (progress) progress(0, 2 * states.size(0));  // the forward is done; decoding starts
  auto grids = decode_views(decoder, {states, deltas}, final_probs, options, progress);
  result.lens = std::move(grids[0]);
  result.delta_lens = std::move(grids[1]);
  result.lens.rows = result.delta_lens.rows = std::vector<std::string>(labels.begin() + 1, labels.end());
  return result;
}

/// Throws `std::invalid_argument` unless `result` has a shape the page and the JSON can show: each view's row
/// labels match its rows of cells, every row has a cell per prompt token, every cell its top-k tokens with their
/// probabilities, and at least one view is not empty. (A `LensGrid` assembled by hand can break any of these.)
inline void check_lens_result(const LensResult& result) {
  auto check = [&](const LensGrid& grid, const char* view) {
    auto fail = [&](const std::string& why) {
      throw std::invalid_argument(fmt::format("lens result: the {} view {}", view, why));
    };
    if (grid.rows.size() != grid.cells.size())
      fail(fmt::format("has {} rows of cells but {} row labels", grid.cells.size(), grid.rows.size()));
    for (std::size_t r = 0; r < grid.cells.size(); ++r) {
      if (grid.cells[r].size() != result.ids.size())
        fail(fmt::format("has {} cells in row {}, but the prompt has {} tokens", grid.cells[r].size(), r,
                         result.ids.size()));
      for (std::size_t t = 0; t < grid.cells[r].size(); ++t) {
        const auto& cell = grid.cells[r][t];
        if (cell.tokens.empty() || cell.tokens.size() != cell.probs.size())
          fail(fmt::format("has a cell (row {}, position {}) with {} tokens and {} probabilities", r, t,
                           cell.tokens.size(), cell.probs.size()));
      }
    }
  };
  check(result.lens, "lens");
  check(result.delta_lens, "delta_lens");
  if (result.lens.cells.empty() && result.delta_lens.cells.empty()) throw std::invalid_argument("lens result: empty");
}

/// Every number of a lens as JSON, for scripts: ids and token strings, per view (`lens`, `delta_lens`) the
/// arrays `tokens`, `token_strings`, `probs` `[row][position][k]` and `magnitudes`, `entropy`, `kl_to_final`,
/// `rank_of_final_top1`, `rank_of_target` `[row][position]`.
inline nlohmann::json to_json(const LensResult& result, const Tokenizer& tokenizer) {
  check_lens_result(result);
  auto view = [&](const LensGrid& grid) {
    nlohmann::json out = {{"rows", grid.rows}};
    auto per_cell = [&](const char* key, auto get) {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& row : grid.cells) {
        nlohmann::json values = nlohmann::json::array();
        for (const auto& cell : row) values.push_back(get(cell));
        rows.push_back(std::move(values));
      }
      out[key] = std::move(rows);
    };
    per_cell("tokens", [](const LensCell& c) { return c.tokens; });
    per_cell("token_strings", [&](const LensCell& c) {
      std::vector<std::string> strings;
      for (auto id : c.tokens) strings.push_back(tokenizer.token_text(id));
      return strings;
    });
    per_cell("probs", [](const LensCell& c) { return c.probs; });
    per_cell("magnitudes", [](const LensCell& c) { return c.magnitude; });
    per_cell("entropy", [](const LensCell& c) { return c.entropy; });
    per_cell("kl_to_final", [](const LensCell& c) { return c.kl_to_final; });
    per_cell("rank_of_final_top1", [](const LensCell& c) { return c.rank_of_final_top1; });
    per_cell("rank_of_target", [](const LensCell& c) { return c.rank_of_target; });
    return out;
  };
  std::vector<std::string> prompt_tokens;
  for (auto id : result.ids) prompt_tokens.push_back(tokenizer.decode(id));
  nlohmann::json out = {
      {"ids", result.ids},   {"prompt_tokens", prompt_tokens}, {"prompt", tokenizer.decode(result.ids)},
      {"topk", result.topk}, {"lens", view(result.lens)},      {"delta_lens", view(result.delta_lens)}};
  out["target"] = result.target >= 0
                      ? nlohmann::json{{"id", result.target}, {"token", tokenizer.token_text(result.target)}}
                      : nlohmann::json(nullptr);
  return out;
}

}  // namespace baukit
