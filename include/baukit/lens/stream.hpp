/// @file stream.hpp
/// @brief The residual stream of a prompt (or of a left-padded batch of prompts in one forward), traced at the blocks
/// (and optionally after each attention) that the model's `LensLayout` names; the seed's `get_hidden_states` and
/// `get_hidden_state_deltas`.
///
/// @code
/// torch::Tensor hs = baukit::get_hidden_states(*model, tok, "Hello, my name is also");  // [layers, tokens, width]
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <baukit/models/causal_lm.hpp>
#include <baukit/tokenizer.hpp>
#include <baukit/trace.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

namespace detail {

/// The modules whose outputs make the residual stream's rows (the embedding, each block, and with
/// `attention_rows` each block's attention); throws when the model has no point after attention alone.
inline std::vector<std::string> stream_modules(models::CausalLM& model, bool attention_rows) {
  const auto layout = model.lens_layout();
  if (attention_rows && layout.attention.size() != layout.blocks.size())
    throw std::invalid_argument(
        fmt::format("lens: the {} model has no residual stream point after attention alone (its attention and MLP "
                    "read the block's input in parallel): leave out attention rows",
                    model.model_type()));
  std::vector<std::string> names{layout.embedding};
  names.insert(names.end(), layout.blocks.begin(), layout.blocks.end());
  if (attention_rows) names.insert(names.end(), layout.attention.begin(), layout.attention.end());
  return names;
}

/// The rows `[rows, batch, tokens, width]` of the forward `trace` (over `stream_modules`) just saw; `labels`
/// receives each row's name.
inline torch::Tensor traced_stream(TraceDict& trace, const models::LensLayout& layout, bool attention_rows,
                                   std::vector<std::string>* labels) {
  std::vector<torch::Tensor> rows{trace[layout.embedding].output().to(torch::kFloat32)};  // F16/BF16 lookups
  if (labels) *labels = {"embed"};
  for (std::size_t l = 0; l < layout.blocks.size(); ++l) {
    if (attention_rows) {
      rows.push_back(rows.back() + trace[layout.attention[l]].output());  // the block's input plus attention
      if (labels) labels->push_back(fmt::format("{} attn", l));
    }
    rows.push_back(trace[layout.blocks[l]].output());
    if (labels) labels->push_back(std::to_string(l));
  }
  return torch::stack(rows);
}

}  // namespace detail

/// The streams of a batch of prompts from one forward: `[rows, batch, tokens, width]` (rows as for
/// `residual_stream`), the prompts left-padded to the longest, so that row `b`'s prompt occupies its last
/// `prompts[b].size()` positions; positions count real tokens only, so each prompt's stream equals its own run's
/// (within float rounding). `output` receives the logits `[batch, tokens, vocab]`.
inline torch::Tensor residual_stream_batch(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                           bool attention_rows = false, std::vector<std::string>* labels = nullptr,
                                           torch::Tensor* output = nullptr) {
  if (prompts.empty()) throw std::invalid_argument("lens: no prompts");
  std::size_t longest = 0;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw std::invalid_argument(fmt::format("lens: prompt {} has no tokens", b));
    longest = std::max(longest, prompts[b].size());
  }
  if (static_cast<int64_t>(longest) > model.max_positions())
    throw std::invalid_argument(
        fmt::format("lens: a prompt has {} tokens; the model takes at most {}", longest, model.max_positions()));
  const auto layout = model.lens_layout();
  const auto names = detail::stream_modules(model, attention_rows);
  const auto batch = static_cast<int64_t>(prompts.size()), tokens = static_cast<int64_t>(longest);
  auto input = torch::zeros({batch, tokens}, torch::kLong);  // padding id 0: any id the model has
  auto mask = torch::zeros({batch, tokens}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const auto& ids = prompts[static_cast<std::size_t>(b)];
    const auto start = tokens - static_cast<int64_t>(ids.size());
    input[b].slice(0, start) = torch::tensor(ids, torch::kLong);
    mask[b].slice(0, start) = 1;
  }
  torch::NoGradGuard no_grad;
  TraceDict trace(model.module(), names);
  const auto device = model.device();
  // A batch of one has no padding: no mask, exactly the single forward.
  auto logits = model.forward(input.to(device), batch == 1 ? torch::Tensor() : mask.to(device), nullptr);
  if (output) *output = std::move(logits);
  return detail::traced_stream(trace, layout, attention_rows, labels);
}

/// The stream before block 0 and after each block: `[layers + 1, tokens, width]` for a batch of one, as the
/// seed's `get_hidden_states` (rows 1..) and `get_hidden_state_deltas` (all rows) trace them. With
/// `attention_rows`, the stream after each block's attention (its input plus the attention output) is
/// interleaved before that block's row; `labels` receives each row's name, and `output` the model's output (its
/// logits, `[1, tokens, vocab]`).
inline torch::Tensor residual_stream(models::CausalLM& model, const std::vector<int64_t>& ids,
                                     bool attention_rows = false, std::vector<std::string>* labels = nullptr,
                                     torch::Tensor* output = nullptr) {
  if (ids.empty()) throw std::invalid_argument("lens: the prompt has no tokens");
  return residual_stream_batch(model, {ids}, attention_rows, labels, output).select(1, 0);
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

}  // namespace baukit
