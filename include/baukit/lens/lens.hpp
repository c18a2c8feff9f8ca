/// @file lens/lens.hpp
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
#include <baukit/kernels/lens_statistics.hpp>
#include <baukit/lens/decoder.hpp>
#include <baukit/lens/learned.hpp>
#include <baukit/lens/stream.hpp>
#include <baukit/models/causal_lm.hpp>
#include <cmath>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

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

/// A learned lens's grid: the stream after each block, translated by the lens, then decoded.
struct LearnedLensGrid {
  std::string name;   ///< The lens's `LearnedLens::name()`: its key in the JSON and the page ("tuned_lens").
  std::string label;  ///< Its label on the page ("tuned lens").
  LensGrid grid;      ///< Rows as the lens's.
};

/// The lens and the delta lens for one prompt, and the learned lenses' grids when asked for.
struct LensResult {
  std::vector<int64_t> ids;              ///< The prompt's token ids (with the generated ones after them).
  int64_t topk = 5;                      ///< Tokens kept per cell.
  int64_t target = -1;                   ///< The target token, or -1.
  LensGrid lens;                         ///< Decoded residual stream after each block.
  LensGrid delta_lens;                   ///< Decoded change made by each block (row 0: block 0's output minus the
                                         ///< embedding).
  std::vector<LearnedLensGrid> learned;  ///< One per `LensOptions::learned_lenses`, in order.
  std::size_t generated = 0;             ///< How many of `ids`, at the end, the model generated (`generate_lens`).
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
  /// Learned lenses (tuned, Jacobian) whose grids to add, each decoding block `l`'s output as
  /// `head(translate(h, l))`; the last block's row is the model's output for every lens.
  TORCH_ARG(std::vector<std::shared_ptr<const LearnedLens>>, learned_lenses) = {};
};

/// Called as decoding proceeds: (rows done, rows in all).
using LensProgress = std::function<void(int64_t done, int64_t total)>;

namespace detail {

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

/// Fills `cell` from the kernels' `stats`, with `sum q log q` of the final distribution for the divergence.
inline void fill_cell(kernels::DistributionStatistics&& stats, float final_qlogq, LensCell& cell) {
  cell.tokens = std::move(stats.tokens);
  cell.probs = std::move(stats.probs);
  cell.entropy = stats.entropy;
  cell.kl_to_final = std::max(0.0f, final_qlogq + stats.cross_entropy);
  cell.rank_of_final_top1 = stats.rank_of_final_top1;
  cell.rank_of_target = stats.rank_of_target;
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
        kernels::DistributionStatistics stats;
        if (p)
          kernels::cell_statistics(p + i * vocab, z ? z + i * vocab : nullptr, q, vocab, top1, options.target(), k,
                                   stats);
        else
          kernels::cell_statistics_from_logits(z + i * vocab, q, vocab, top1, options.target(), k, stats);
        detail::fill_cell(std::move(stats), final_qlogq.data_ptr<float>()[t], cell);
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

namespace detail {

/// The lens and delta lens of one prompt from its stream `[rows, tokens, width]` (row 0 the embedding) and the
/// model's logits `[tokens, vocab]`; `labels` names the rows.
inline LensResult lens_of_stream(models::CausalLM& model, const torch::Tensor& stream, const torch::Tensor& logits,
                                 const std::vector<std::string>& labels, const std::vector<int64_t>& ids,
                                 const LensOptions& options, const LensProgress& progress) {
  const auto finite_rows = torch::isfinite(stream).flatten(1).all(1).cpu();
  for (int64_t row = 0; row < finite_rows.size(0); ++row)
    if (!finite_rows[row].item<bool>())
      throw NonFiniteError(fmt::format("lens: the residual stream at row '{}' holds NaN or infinity", labels[row]));
  auto decoder = make_decoder(model);
  // The model's output distribution: softmax(lm_head(ln_f(last block))), the decoder's math on the last row, already
  // computed by the forward.
  const auto final_probs = torch::softmax(logits.to(torch::kFloat32), -1);
  if (!torch::isfinite(final_probs).all().item<bool>())
    throw NonFiniteError("lens: the model's output distribution holds NaN or infinity");
  LensResult result;
  result.ids = ids;
  result.topk = options.topk();
  result.target = options.target();
  const auto states = stream.slice(0, 1);
  const auto deltas = stream.slice(0, 1) - stream.slice(0, 0, -1);
  std::vector<torch::Tensor> views{states, deltas};
  std::vector<std::string> names;
  for (const auto& learned : options.learned_lenses()) {
    if (!learned) throw std::invalid_argument("lens: a learned lens is null");
    if (std::find(names.begin(), names.end(), learned->name()) != names.end())
      throw std::invalid_argument(
          fmt::format("lens: two learned lenses are named '{}'; their views would be one", learned->name()));
    names.push_back(learned->name());
    if (options.attention_rows())
      throw std::invalid_argument(fmt::format(
          "lens: the {} translates block outputs only; leave out attention rows to show it", learned->label()));
    learned->check_fits(model.num_layers(), states.size(-1));
    std::vector<torch::Tensor> rows;
    for (int64_t l = 0; l < states.size(0); ++l)
      rows.push_back(l + 1 < states.size(0) ? learned->translate(states[l], l) : states[l]);
    views.push_back(torch::stack(rows));
  }
  const auto rows = states.size(0) * static_cast<int64_t>(views.size());
  if (progress) progress(0, rows);  // the forward is done; decoding starts
  auto grids = decode_views(decoder, views, final_probs, options, progress);
  const std::vector<std::string> row_labels(labels.begin() + 1, labels.end());
  result.lens = std::move(grids[0]);
  result.delta_lens = std::move(grids[1]);
  result.lens.rows = result.delta_lens.rows = row_labels;
  for (std::size_t i = 0; i < options.learned_lenses().size(); ++i) {
    const auto& learned = options.learned_lenses()[i];
    result.learned.push_back({learned->name(), learned->label(), std::move(grids[2 + i])});
    result.learned.back().grid.rows = row_labels;
  }
  return result;
}

}  // namespace detail

/// The seed's lens and delta lens for the prompt `ids`, with the statistics of `LensCell`. Throws `NonFiniteError`
/// when the residual stream or the model's output holds NaN or infinity.
inline LensResult logit_lens(models::CausalLM& model, const std::vector<int64_t>& ids, const LensOptions& options = {},
                             const LensProgress& progress = {}) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> labels;
  torch::Tensor logits;
  const auto stream = residual_stream(model, ids, options.attention_rows(), &labels, &logits);
  return detail::lens_of_stream(model, stream, logits[0], labels, ids, options, progress);
}

/// The lens of each of `prompts` (of any lengths) from one forward over the batch, left-padded: each result equals
/// `logit_lens` on that prompt alone (the same tokens; probabilities and statistics within float rounding).
/// `progress` is called per prompt's decode with (rows done, rows in all prompts).
inline std::vector<LensResult> logit_lens_batch(models::CausalLM& model,
                                                const std::vector<std::vector<int64_t>>& prompts,
                                                const LensOptions& options = {}, const LensProgress& progress = {}) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> labels;
  torch::Tensor logits;
  const auto streams = residual_stream_batch(model, prompts, options.attention_rows(), &labels, &logits);
  const int64_t tokens = streams.size(2),
                rows_per_prompt = (2 + static_cast<int64_t>(options.learned_lenses().size())) * (streams.size(0) - 1);
  const int64_t total = rows_per_prompt * static_cast<int64_t>(prompts.size());
  std::vector<LensResult> results;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    const auto start = tokens - static_cast<int64_t>(prompts[b].size());  // past the left padding
    const auto done = rows_per_prompt * static_cast<int64_t>(b);
    const LensProgress step =
        progress ? LensProgress([&](int64_t d, int64_t) { progress(done + d, total); }) : LensProgress();
    results.push_back(detail::lens_of_stream(model, streams.select(1, static_cast<int64_t>(b)).slice(1, start),
                                             logits[static_cast<int64_t>(b)].slice(0, start), labels, prompts[b],
                                             options, step));
  }
  return results;
}

}  // namespace baukit
