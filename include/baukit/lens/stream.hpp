/// @file stream.hpp
/// @brief The residual stream of one prompt, traced at the blocks (and optionally after each attention) that the
/// model's `LensLayout` names; the seed's `get_hidden_states` and `get_hidden_state_deltas`.
///
/// @code
/// torch::Tensor hs = baukit::get_hidden_states(*model, tok, "Hello, my name is also");  // [layers, tokens, width]
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/models/causal_lm.hpp>
#include <baukit/tokenizer.hpp>
#include <baukit/trace.hpp>
#include <stdexcept>
#include <string>
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

}  // namespace baukit
