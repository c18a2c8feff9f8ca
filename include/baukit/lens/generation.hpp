/// @file lens/generation.hpp
/// @brief The lens over generated text: greedy generation with the key/value cache, the residual stream traced at
/// every step's forward (each new position's hidden states come from the cached forward that produced its successor),
/// and one grid over prompt and continuation. It equals `logit_lens` on the whole text at once.
///
/// @code
/// // The prompt and 10 generated tokens, in one grid; the last 10 of result.ids are the generated ones.
/// baukit::LensResult result = baukit::generate_lens(*model, tok.encode("The Eiffel Tower is in"), 10);
/// std::string continuation = tok.decode(std::vector<int64_t>(result.ids.end() - 10, result.ids.end()));
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <baukit/generate.hpp>
#include <baukit/lens/lens.hpp>
#include <baukit/lens/stream.hpp>
#include <baukit/models/causal_lm.hpp>
#include <baukit/trace.hpp>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// Called after each generated token with (tokens generated, tokens asked for); throwing from it stops the work.
using GenerationProgress = std::function<void(int64_t generated, int64_t total)>;

/// The residual stream of a prompt and its greedy continuation, as traced during generation.
struct GeneratedStream {
  std::vector<int64_t> ids;         ///< Prompt and continuation.
  std::size_t generated = 0;        ///< How many of `ids`, at the end, were generated.
  torch::Tensor stream;             ///< `[rows, tokens, width]`: row 0 the embedding, then as `residual_stream`.
  torch::Tensor logits;             ///< The model's output `[tokens, vocab]`.
  std::vector<std::string> labels;  ///< Each row's name ("embed", "0", "0 attn", ...).
};

/// Greedily continues `prompt` by `n` tokens (fewer when `generation.stop_token()` comes, which is kept), tracing
/// the residual stream as it goes: each forward runs only the new positions against the key/value cache, traced as
/// `residual_stream` traces its one forward, and the last generated token gets one more such forward, so every
/// position has its hidden states. `on_token` is called after each new token.
inline GeneratedStream generate_stream(models::CausalLM& model, const std::vector<int64_t>& prompt, int64_t n,
                                       bool attention_rows = false, const GenerateOptions& generation = {},
                                       const GenerationProgress& on_token = {}) {
  if (prompt.empty()) throw std::invalid_argument("generate_lens: the prompt has no tokens");
  if (n < 0) throw std::invalid_argument(fmt::format("generate_lens: {} tokens to generate; give 0 or more", n));
  if (static_cast<int64_t>(prompt.size()) + n > model.max_positions())
    throw std::invalid_argument(fmt::format("generate_lens: {} prompt tokens + {} new exceed the model's {} positions",
                                            prompt.size(), n, model.max_positions()));
  torch::NoGradGuard no_grad;
  const auto layout = model.lens_layout();
  TraceDict trace(model.module(), detail::stream_modules(model, attention_rows));
  models::KVCache cache(static_cast<std::size_t>(model.num_layers()));
  GeneratedStream out;
  std::vector<torch::Tensor> streams, logits;  // per forward: [rows, new tokens, width], [new tokens, vocab]
  out.ids = prompt;
  auto input = torch::tensor(prompt, torch::kLong).unsqueeze(0).to(model.device());
  for (int64_t generated = 0;; ++generated) {
    logits.push_back(model.forward(input, torch::Tensor(), &cache)[0]);
    streams.push_back(detail::traced_stream(trace, layout, attention_rows, &out.labels).select(1, 0));
    if (generated == n || (generated > 0 && out.ids.back() == generation.stop_token())) break;
    const auto next = logits.back()[-1].argmax().item<int64_t>();
    out.ids.push_back(next);
    if (on_token) on_token(generated + 1, n);
    input = torch::full({1, 1}, next, torch::TensorOptions(torch::kLong).device(model.device()));
  }
  out.generated = out.ids.size() - prompt.size();
  out.stream = torch::cat(streams, 1);
  out.logits = torch::cat(logits);
  return out;
}

/// Greedily continues `prompt` by `n` tokens (see `generate_stream`) and returns the lens over prompt and
/// continuation: `result.ids` holds both, `result.generated` counts the continuation. `on_token` is called after
/// each new token, `progress` as the grid is decoded.
inline LensResult generate_lens(models::CausalLM& model, const std::vector<int64_t>& prompt, int64_t n,
                                const LensOptions& options = {}, const GenerateOptions& generation = {},
                                const GenerationProgress& on_token = {}, const LensProgress& progress = {}) {
  const auto traced = generate_stream(model, prompt, n, options.attention_rows(), generation, on_token);
  auto result =
      detail::lens_of_stream(model, traced.stream, traced.logits, traced.labels, traced.ids, options, progress);
  result.generated = traced.generated;
  return result;
}

}  // namespace baukit
