/// @file generate.hpp
/// @brief Greedy generation, as in the seed notebook, with a key/value cache: each new token costs one
/// position's compute, and batches of prompts of different lengths are left-padded.
///
/// @code
/// auto text = baukit::generate(*model, tokenizer, "In his NBA career, KC Jones played", 100);
/// @endcode
#pragma once

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <baukit/models/causal_lm.hpp>
#include <baukit/tokenizer.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace baukit {

/// Generation settings.
struct GenerateOptions {
  /// Reuse past keys and values (linear cost); false recomputes the whole sequence each step, as the seed does.
  TORCH_ARG(bool, use_cache) = true;
  /// Stop a sequence at this token (it is kept); negative: never stop early.
  TORCH_ARG(int64_t, stop_token) = -1;
};

/// Greedily continues each prompt by `n` tokens; returns the new tokens of each prompt. Prompts of different
/// lengths are left-padded and masked, so each gets the tokens it would get alone.
inline std::vector<std::vector<int64_t>> generate_ids(models::CausalLM& model,
                                                      const std::vector<std::vector<int64_t>>& prompts, int64_t n,
                                                      const GenerateOptions& options = {}) {
  if (prompts.empty()) return {};
  std::size_t longest = 0;
  for (const auto& prompt : prompts) {
    if (prompt.empty()) throw std::invalid_argument("generate: a prompt has no tokens");
    longest = std::max(longest, prompt.size());
  }
  if (static_cast<int64_t>(longest) + n > model.max_positions())
    throw std::invalid_argument(fmt::format("generate: {} prompt tokens + {} new exceed the model's {} positions",
                                            longest, n, model.max_positions()));
  const auto batch = static_cast<int64_t>(prompts.size());
  const auto device = model.device();
  auto ids = torch::zeros({batch, static_cast<int64_t>(longest)}, torch::kLong);
  auto mask = torch::zeros({batch, static_cast<int64_t>(longest)}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const auto& prompt = prompts[static_cast<std::size_t>(b)];
    const auto pad = static_cast<int64_t>(longest - prompt.size());
    ids[b].slice(0, pad).copy_(torch::tensor(prompt, torch::kLong));
    mask[b].slice(0, pad).fill_(1);
  }
  ids = ids.to(device);
  mask = mask.to(device);
  const bool padded = std::any_of(prompts.begin(), prompts.end(), [&](const auto& p) { return p.size() != longest; });

  torch::NoGradGuard no_grad;
  models::KVCache cache(static_cast<std::size_t>(model.num_layers()));
  std::vector<std::vector<int64_t>> generated(prompts.size());
  std::vector<bool> stopped(prompts.size(), false);
  torch::Tensor step_input = ids;
  for (int64_t i = 0; i < n; ++i) {
    const torch::Tensor step_mask = padded ? mask : torch::Tensor();
    const auto logits =
        options.use_cache() ? model.forward(step_input, step_mask, &cache) : model.forward(ids, step_mask, nullptr);
    const auto next = logits.select(1, logits.size(1) - 1).argmax(-1);  // [batch]
    const auto next_cpu = next.to(torch::kCPU);
    bool all_stopped = true;
    for (int64_t b = 0; b < batch; ++b) {
      if (stopped[static_cast<std::size_t>(b)]) continue;
      const auto token = next_cpu[b].item<int64_t>();
      generated[static_cast<std::size_t>(b)].push_back(token);
      stopped[static_cast<std::size_t>(b)] = token == options.stop_token();
      all_stopped = all_stopped && stopped[static_cast<std::size_t>(b)];
    }
    if (all_stopped) break;
    step_input = next.unsqueeze(1);
    ids = torch::cat({ids, step_input}, 1);
    mask = torch::cat({mask, torch::ones({batch, 1}, mask.options())}, 1);
  }
  return generated;
}

/// The seed's `generate(model, tok, prefix, n)`: greedily continues `prefix` by `n` tokens and returns them decoded.
inline std::string generate(models::CausalLM& model, const Tokenizer& tokenizer, const std::string& prefix,
                            int64_t n = 10, const GenerateOptions& options = {}) {
  return tokenizer.decode(generate_ids(model, {tokenizer.encode(prefix)}, n, options).front());
}

}  // namespace baukit
