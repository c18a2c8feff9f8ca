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

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/decoder.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/tokenizer.hpp>
#include <baukit/trace.hpp>
#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace baukit {

/// The stream before block 0 and after each block: `[layers + 1, tokens, width]` for a batch of one, as the
/// seed's `get_hidden_states` (rows 1..) and `get_hidden_state_deltas` (all rows) trace them. With
/// `attention_rows`, the stream after each block's attention (its input plus the attention output) is
/// interleaved before that block's row; `labels` receives each row's name.
inline torch::Tensor residual_stream(models::CausalLM& model, const std::vector<int64_t>& ids,
                                     bool attention_rows = false, std::vector<std::string>* labels = nullptr) {
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
  model.forward(input, {}, nullptr);
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

/// Decodes `states` `[rows, tokens, width]` through `decoder` (which must return probabilities) in chunks of rows,
/// keeping per cell only what is shown. `final_probs` `[tokens, vocab]` is the model's output distribution.
/// Magnitudes are ‖state‖ divided by the maximum over rows and tokens 1.. (over all tokens for a one-token prompt).
inline LensGrid decode_states(torch::nn::Sequential& decoder, const torch::Tensor& states,
                              const torch::Tensor& final_probs, const LensOptions& options,
                              const LensProgress& progress = {}, int64_t done_before = 0, int64_t total = 0) {
  torch::NoGradGuard no_grad;
  const int64_t rows = states.size(0), tokens = states.size(1), vocab = final_probs.size(-1);
  if (options.topk() < 1 || options.topk() > vocab)
    throw std::invalid_argument(fmt::format("lens: topk {} is outside 1..{}", options.topk(), vocab));
  const int64_t chunk = std::max<int64_t>(1, options.chunk_bytes() / std::max<int64_t>(1, tokens * vocab * 4));
  const auto norms = states.norm(2, -1).to(torch::kFloat32).cpu();
  const auto scale = (tokens > 1 ? norms.slice(1, 1) : norms).max().item<float>();
  const auto final_top1 = final_probs.argmax(-1);                           // [tokens]
  const auto final_qlogq = torch::xlogy(final_probs, final_probs).sum(-1);  // [tokens]: sum q log q
  if (options.target() >= vocab)
    throw std::invalid_argument(fmt::format("lens: target token {} is outside the vocabulary", options.target()));
  const auto norm_at = norms.accessor<float, 2>();
  const int64_t k = options.topk();
  // Statistics run over blocks of a few (layer, token) rows, so their temporaries stay small and are reused
  // rather than freshly allocated (and page-faulted) at the size of the whole chunk.
  constexpr int64_t kStatRows = 32;
  LensGrid grid;
  grid.cells.resize(static_cast<std::size_t>(rows));
  for (int64_t begin = 0; begin < rows; begin += chunk) {
    const int64_t end = std::min(rows, begin + chunk);
    const auto probs = decoder->forward(states.slice(0, begin, end))
                           .to(torch::kFloat32)
                           .reshape({-1, vocab});  // [(chunk*tokens), vocab]
    for (int64_t block = 0; block < probs.size(0); block += kStatRows) {
      const int64_t block_end = std::min(probs.size(0), block + kStatRows);
      const auto p = probs.slice(0, block, block_end);
      const auto position =
          torch::arange(block, block_end, torch::kLong).remainder(tokens).to(probs.device());  // each row's token
      const auto log_p = p.clamp_min(std::numeric_limits<float>::min()).log();  // p below 1e-38 counts as 1e-38
      const auto entropy = -(p * log_p).sum(-1);
      const auto kl = final_qlogq.index_select(0, position) - (final_probs.index_select(0, position) * log_p).sum(-1);
      const auto p_final_top1 = p.gather(-1, final_top1.index_select(0, position).unsqueeze(-1));
      const auto rank_final = (p > p_final_top1).sum(-1) + 1;
      torch::Tensor rank_target;
      if (options.target() >= 0) rank_target = ((p > p.select(-1, options.target()).unsqueeze(-1)).sum(-1) + 1).cpu();
      const auto [top_probs, top_ids] = p.topk(k, -1);
      const auto ids_cpu = top_ids.cpu().contiguous(), probs_cpu = top_probs.cpu().contiguous();
      const auto entropy_cpu = entropy.cpu(), kl_cpu = kl.cpu(), rank_cpu = rank_final.cpu();
      for (int64_t i = block; i < block_end; ++i) {
        const int64_t r = begin + i / tokens, t = i % tokens, j = i - block;
        auto& row = grid.cells[static_cast<std::size_t>(r)];
        if (row.empty()) row.resize(static_cast<std::size_t>(tokens));
        auto& cell = row[static_cast<std::size_t>(t)];
        cell.tokens.assign(ids_cpu.data_ptr<int64_t>() + j * k, ids_cpu.data_ptr<int64_t>() + (j + 1) * k);
        cell.probs.assign(probs_cpu.data_ptr<float>() + j * k, probs_cpu.data_ptr<float>() + (j + 1) * k);
        cell.magnitude = norm_at[r][t] / scale;
        cell.entropy = entropy_cpu.data_ptr<float>()[j];
        cell.kl_to_final = std::max(0.0f, kl_cpu.data_ptr<float>()[j]);
        cell.rank_of_final_top1 = rank_cpu.data_ptr<int64_t>()[j];
        cell.rank_of_target = rank_target.defined() ? rank_target.data_ptr<int64_t>()[j] : 0;
      }
    }
    if (progress) progress(done_before + end, total ? total : rows);
  }
  return grid;
}

/// The seed's lens and delta lens for the prompt `ids`, with the statistics of `LensCell`.
inline LensResult logit_lens(models::CausalLM& model, const std::vector<int64_t>& ids, const LensOptions& options = {},
                             const LensProgress& progress = {}) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> labels;
  const auto stream = residual_stream(model, ids, options.attention_rows(), &labels);
  auto decoder = make_decoder(model);
  const auto final_probs = decoder->forward(stream[stream.size(0) - 1]).to(torch::kFloat32);
  LensResult result;
  result.ids = ids;
  result.topk = options.topk();
  result.target = options.target();
  const auto states = stream.slice(0, 1);
  const auto deltas = stream.slice(0, 1) - stream.slice(0, 0, -1);
  const int64_t total = 2 * states.size(0);
  result.lens = decode_states(decoder, states, final_probs, options, progress, 0, total);
  result.delta_lens = decode_states(decoder, deltas, final_probs, options, progress, states.size(0), total);
  result.lens.rows = result.delta_lens.rows = std::vector<std::string>(labels.begin() + 1, labels.end());
  return result;
}

/// Every number of a lens as JSON, for scripts: ids and token strings, per view (`lens`, `delta_lens`) the
/// arrays `tokens`, `token_strings`, `probs` `[row][position][k]` and `magnitudes`, `entropy`, `kl_to_final`,
/// `rank_of_final_top1`, `rank_of_target` `[row][position]`.
inline nlohmann::json to_json(const LensResult& result, const Tokenizer& tokenizer) {
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
      for (auto id : c.tokens) strings.push_back(tokenizer.decode(id));
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
  out["target"] = result.target >= 0 ? nlohmann::json{{"id", result.target}, {"token", tokenizer.decode(result.target)}}
                                     : nlohmann::json(nullptr);
  return out;
}

}  // namespace baukit
